"""Parsing at its limits: files as the standard writers make them read back field for field
with their line numbers (hypothesis); line, field, file and row limits at the boundary; every
error whole (reason and message, or the row error's code, field, value and message).

Limits are written out here rather than imported: a test must fail when a constant changes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from importd_server.engine.import_types import (
    default_types_dir,
    load_import_types,
    parse_import_type,
)
from importd_server.engine.parsing import (
    FileColumns,
    FileError,
    ParsedRow,
    ParseOptions,
    parse_rows,
    required_columns,
)
from importd_server.model import FileFormat, ImportMode, ImportType, RowError

TYPES = load_import_types(default_types_dir())
CONTACTS, TRANSACTIONS = TYPES["contacts"], TYPES["transactions"]
MAX_LINE_CHARS = MAX_FIELD_CHARS = 1 << 20
MAX_EXCERPT_CHARS = 1000


def parse(
    data: bytes,
    import_type: ImportType = CONTACTS,
    mode: ImportMode = ImportMode.UPSERT,
    **options: Any,
) -> tuple[list[ParsedRow], FileColumns]:
    """Every row of the file, and its columns."""
    columns = FileColumns()
    rows = parse_rows(io.BytesIO(data), ParseOptions(**options), import_type, mode, columns)
    return list(rows), columns


def file_error(data: bytes, **kwargs: Any) -> tuple[str, str]:
    """The reason and message of the file's FileError."""
    with pytest.raises(FileError) as caught:
        parse(data, **kwargs)
    assert str(caught.value) == caught.value.message
    return caught.value.reason, caught.value.message


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# Any text a cell may hold: every character but NUL (refused with the line) and surrogates.
CELL = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8)


@pytest.mark.parametrize("pack", [bytes, gzipped], ids=["plain", "gzip"])
@given(st.lists(st.tuples(st.booleans(), CELL, CELL), max_size=6))
def test_csv_from_the_csv_module_reads_back_field_for_field_with_its_line_numbers(
    pack: Any, records: list[tuple[bool, str, str]]
) -> None:
    """Quotes, delimiters and line breaks of every kind inside cells; blank lines between."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["email", "first_name"])
    expected = []
    for blank_before, *cells in records:
        if blank_before:
            text.write("\r\n")
        # Lines as the parser counts them: \n, \r and \r\n each end one.
        line = len(io.StringIO(text.getvalue(), newline="").readlines()) + 1
        writer.writerow(cells)
        expected.append((len(expected) + 1, line, cells, None))
    rows, columns = parse(pack(text.getvalue().encode()))
    assert [(r.row_number, r.line_number, r.values, r.error) for r in rows] == expected
    assert columns.names == ["email", "first_name"]


JSON_VALUE = st.none() | st.booleans() | st.integers() | CELL


def as_cell(value: Any) -> str:
    """A JSON value as the text a CSV cell would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@given(st.lists(st.none() | st.dictionaries(CELL, JSON_VALUE, max_size=4), min_size=1))
def test_json_lines_read_back_value_for_value_with_row_and_line_numbers(
    lines: list[dict[str, Any] | None],
) -> None:
    """A None is a blank line: it has a line number, no row number."""
    data = "".join("  \n" if o is None else json.dumps(o) + "\n" for o in lines).encode()
    if all(o is None for o in lines):
        assert file_error(data, format=FileFormat.JSONL) == (
            "EMPTY_FILE",
            "the file is empty: no JSON lines",
        )
        return
    rows, columns = parse(data, format=FileFormat.JSONL)
    names: list[str] = []
    expected = []
    for line, obj in enumerate(lines, 1):
        if obj is None:
            continue
        names.extend(n for n in obj if n not in names)
        values = [as_cell(obj[n]) if n in obj else "" for n in names]
        expected.append((len(expected) + 1, line, values, None))
    assert [(r.row_number, r.line_number, r.values, r.error) for r in rows] == expected
    assert columns.names == names


def test_json_values_become_the_text_of_a_csv_cell() -> None:
    line = (
        b'{"email": "a@x.com", "vip": false, "ok": true, "note": null, "n": -0.10,'
        b' "tags": {"a": [1, "x"], "b": null}, "deep": [[1.5]]}\n'
    )
    (row,), _ = parse(line, format=FileFormat.JSONL)
    assert row.values[:6] == ["a@x.com", "false", "true", "", "-0.10", '{"a":[1,"x"],"b":null}']
    assert len(json.loads(row.values[6])[0]) == 1  # nested numbers do not fail the row


def test_json_lines_that_are_not_objects_are_row_errors_with_the_line_and_the_reason() -> None:
    long_line = "x" * 1500
    data = f'not json\n  [1, 2]  \n{long_line}\n{{"email": "a@x.com"}}\n'.encode()
    rows, _ = parse(data, format=FileFormat.JSONL)
    assert [(r.row_number, r.line_number, r.values, r.error) for r in rows] == [
        (1, 1, [], RowError("INVALID_JSON", "", "not json", "not valid JSON: Expecting value")),
        (2, 2, [], RowError("NOT_AN_OBJECT", "", "[1, 2]", "a line must be a JSON object")),
        (
            3,
            3,
            [],
            RowError(
                "INVALID_JSON", "", "x" * MAX_EXCERPT_CHARS, "not valid JSON: Expecting value"
            ),
        ),
        (4, 4, ["a@x.com"], None),
    ]


def test_json_too_deep_or_with_too_long_an_integer_is_a_row_error_not_a_crash() -> None:
    deep = '{"email": ' + "[" * 100_000 + "]" * 100_000 + "}"
    long = '{"email": ' + "1" * 5000 + "}"
    data = f'{deep}\n{long}\n{{"email": "a@x.com"}}\n'.encode()
    rows, _ = parse(data, format=FileFormat.JSONL)
    assert [(r.line_number, r.error) for r in rows] == [
        (1, RowError("INVALID_JSON", "", deep[:1000], "JSON nested too deeply to read")),
        (
            2,
            RowError("INVALID_JSON", "", long[:1000], "a JSON integer of more than 4300 digits"),
        ),
        (3, None),
    ]


def test_a_file_without_header_counts_lines_from_the_first() -> None:
    rows, _ = parse(b"a@x.com,Ann\n\nb@x.com,Bob\n", header=False)
    assert [(r.row_number, r.line_number, r.values) for r in rows] == [
        (1, 1, ["a@x.com", "Ann"]),
        (2, 3, ["b@x.com", "Bob"]),
    ]


def test_blank_lines_and_lines_of_one_empty_field_are_skipped_but_counted() -> None:
    rows, _ = parse(b'email\n\n""\n\r\na@x.com\n')
    assert [(r.row_number, r.line_number, r.values) for r in rows] == [(1, 5, ["a@x.com"])]


def test_a_row_with_the_wrong_number_of_fields_keeps_an_excerpt_of_it() -> None:
    data = b"email;first_name\n" + b"a" * 600 + b";" + b"b" * 600 + b";c\nd@x.com\n"
    rows, _ = parse(data, delimiter=";")
    assert [r.error for r in rows] == [
        RowError(
            "WRONG_FIELD_COUNT",
            "",
            "a" * 600 + ";" + "b" * 399,
            "the row has 3 fields, the header has 2",
        ),
        RowError("WRONG_FIELD_COUNT", "", "d@x.com", "the row has 1 fields, the header has 2"),
    ]


@pytest.mark.parametrize(
    ("length", "end", "fits"),
    [
        (MAX_LINE_CHARS - 1, "\n", True),
        (MAX_LINE_CHARS - 2, "\r\n", True),
        (MAX_LINE_CHARS, "\n", False),
        (MAX_LINE_CHARS, "", True),
        (MAX_LINE_CHARS + 1, "", False),
    ],
    ids=["max-with-newline", "max-with-crlf", "max-plus-1", "max-last-line", "max-plus-1-last"],
)
def test_a_line_may_hold_up_to_1048576_characters_with_its_line_break(
    length: int, end: str, fits: bool
) -> None:
    data = b"email\n" + b"a" * length + end.encode()
    if fits:
        rows, _ = parse(data)
        assert [len(r.values[0]) for r in rows] == [length]
    else:
        assert file_error(data) == ("LINE_TOO_LONG", "line 2 is longer than 1048576 characters")


@pytest.mark.parametrize("extra", [0, 1], ids=["max", "max-plus-1"])
def test_a_quoted_field_over_several_lines_may_hold_up_to_1048576_characters(extra: int) -> None:
    half = MAX_FIELD_CHARS // 2
    field = "a" * half + "\n" + "a" * (MAX_FIELD_CHARS - half - 1 + extra)
    data = f'email\n"{field}"\n'.encode()
    if extra:
        assert file_error(data) == (
            "MALFORMED_CSV",
            "unbalanced quote in the row starting at line 2",
        )
    else:
        rows, _ = parse(data)
        assert [r.values for r in rows] == [[field]]


@given(st.integers(0, 4), st.integers(0, 60))
@example(rows=2, max_chars=len("email\nä@x.com\nä@x.com\n"))
@example(rows=2, max_chars=len("email\nä@x.com\nä@x.com\n") - 1)
def test_a_file_may_hold_max_chars_characters_counted_after_decoding(
    rows: int, max_chars: int
) -> None:
    text = "email\n" + "ä@x.com\n" * rows
    if len(text) <= max_chars:
        assert len(parse(text.encode(), max_chars=max_chars)[0]) == rows
    else:
        assert file_error(gzipped(text.encode()), max_chars=max_chars) == (
            "FILE_TOO_LARGE",
            f"the file holds more than {max_chars} characters",
        )


@pytest.mark.parametrize("file_format", [FileFormat.CSV, FileFormat.JSONL], ids=["csv", "jsonl"])
@given(rows=st.integers(0, 6), max_rows=st.integers(0, 6))
@example(rows=3, max_rows=3)
@example(rows=4, max_rows=3)
def test_a_file_may_hold_max_rows_rows(file_format: FileFormat, rows: int, max_rows: int) -> None:
    header = "email\n" if file_format is FileFormat.CSV else '{"email": "a@x.com"}\n'
    body = ("a@x.com\n" if file_format is FileFormat.CSV else '{"email": "b@x.com"}\n') * rows
    data = (header + body).encode()
    data_rows = rows if file_format is FileFormat.CSV else rows + 1
    if data_rows <= max_rows:
        parsed, _ = parse(data, format=file_format, max_rows=max_rows)
        assert len(parsed) == data_rows
    else:
        assert file_error(data, format=file_format, max_rows=max_rows) == (
            "TOO_MANY_ROWS",
            f"the file has more than {max_rows} rows",
        )


@pytest.mark.parametrize(
    ("delimiter", "quote"),
    [(";;", '"'), (",", "''"), ("", '"'), (",", ""), ("ab", "cd")],
    ids=["long-delimiter", "long-quote", "no-delimiter", "no-quote", "both-long"],
)
def test_delimiter_and_quote_are_one_character_each(delimiter: str, quote: str) -> None:
    assert file_error(b"email\n", delimiter=delimiter, quote=quote) == (
        "BAD_CSV_OPTIONS",
        "delimiter and quote must be one character each",
    )


def test_malformed_csv_names_the_problem_and_the_line_of_the_row() -> None:
    assert file_error(b'email,first_name\na@x.com,Ann\n"b@x.com"x,Bob\n') == (
        "MALFORMED_CSV",
        "malformed CSV in the row starting at line 3: ',' expected after '\"'",
    )


def test_a_repeated_unknown_column_is_named_in_lower_case() -> None:
    assert file_error(b"Notes,email,NOTES\n") == (
        "DUPLICATE_HEADER",
        "column 'notes' appears twice in the header (columns 1 and 3)",
    )


@pytest.mark.parametrize(
    ("mode", "header", "missing"),
    [
        (ImportMode.UPSERT, "transaction_id,amount", "account, currency, booked_at"),
        (ImportMode.INSERT, "id,account,currency,amount", "booked_at"),
        (ImportMode.UPSERT, "account,amount,currency,booked_at", "transaction_id"),
        (ImportMode.UPDATE, "amount", "transaction_id"),
        (ImportMode.DELETE, "account", "transaction_id"),
    ],
    ids=["upsert-many", "insert-one", "upsert-key", "update-key", "delete-key"],
)
def test_a_header_without_a_required_column_lists_every_missing_one(
    mode: ImportMode, header: str, missing: str
) -> None:
    data = f"{header}\n".encode()
    assert file_error(data, import_type=TRANSACTIONS, mode=mode) == (
        "MISSING_COLUMN",
        f"the header is missing required column(s): {missing}",
    )


@pytest.mark.parametrize("mode", [ImportMode.UPDATE, ImportMode.DELETE])
def test_update_and_delete_files_need_only_the_key(mode: ImportMode) -> None:
    rows, _ = parse(b"id\nx\n", import_type=TRANSACTIONS, mode=mode)
    assert [r.values for r in rows] == [["x"]]


def test_required_columns_are_the_key_and_the_required_ones_without_a_default() -> None:
    import_type = parse_import_type(
        {
            "name": "t",
            "table": "t",
            "key": ["k"],
            "columns": [
                {"name": "k", "type": "int"},
                {"name": "needed", "type": "int", "required": True},
                {"name": "filled", "type": "int", "required": True, "default": 1},
                {"name": "optional", "type": "int"},
            ],
        }
    )
    for mode in (ImportMode.INSERT, ImportMode.UPSERT):
        assert required_columns(import_type, mode) == ["k", "needed"]
    for mode in (ImportMode.UPDATE, ImportMode.DELETE):
        assert required_columns(import_type, mode) == ["k"]


def test_file_columns_of_stored_names_find_aliases_and_keep_unknown_names() -> None:
    columns = FileColumns.of(["E-Mail", "notes", "email_address", "Surname"], CONTACTS)
    assert columns.names == ["E-Mail", "notes", "email_address", "Surname"]
    assert columns.positions == {"email": [0, 2], "last_name": [3]}


@pytest.mark.parametrize("pack", [bytes, gzipped], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    ("encoding", "codec"),
    [
        ("utf-8", "utf-8-sig"),
        ("UTF-8", "utf-8-sig"),
        ("utf8", "utf-8-sig"),
        ("latin-1", "latin-1"),
        ("latin1", "latin-1"),
        ("Latin-1", "latin-1"),
    ],
)
def test_utf8_with_or_without_bom_and_latin1_under_each_name(
    pack: Any, encoding: str, codec: str
) -> None:
    data = pack('email,first_name\r\nz@x.com,"Jürgen\r\nMarie"\r\n'.encode(codec))
    rows, columns = parse(data, encoding=encoding)
    assert [r.values for r in rows] == [["z@x.com", "Jürgen\r\nMarie"]]
    assert columns.names == ["email", "first_name"]


@pytest.mark.parametrize("encoding", ["utf-16", "ascii", "cp1252", ""])
def test_other_encodings_are_refused_by_name(encoding: str) -> None:
    assert file_error(b"email\n", encoding=encoding) == (
        "UNSUPPORTED_ENCODING",
        f"encoding {encoding!r} is not utf-8 or latin-1",
    )


@pytest.mark.parametrize("pack", [bytes, gzipped], ids=["plain", "gzip"])
def test_bytes_that_are_not_utf8_are_named(pack: Any) -> None:
    assert file_error(pack(b"email\na@x.com\nb\xe9@x.com\n")) == (
        "INVALID_ENCODING",
        "the file is not valid utf-8: byte 0xe9 cannot be decoded (invalid continuation byte)",
    )


def test_a_broken_gzip_stream_says_so() -> None:
    reason, message = file_error(gzipped(b"email\na@x.com\n")[:-6])
    assert (reason, message.startswith("the gzip stream is broken: ")) == ("INVALID_GZIP", True)


def test_only_both_magic_bytes_make_a_file_gzip() -> None:
    rows, columns = parse(b"\x1fnote,email\nx,a@x.com\n")
    assert columns.positions == {"email": [1]}
    assert [r.values for r in rows] == [["x", "a@x.com"]]


def damaged(data: bytes) -> st.SearchStrategy[bytes]:
    """The bytes cut short, or with one byte changed."""
    return st.integers(0, len(data) - 1).flatmap(
        lambda at: (
            st.just(data[:at])
            | st.integers(0, 255).map(lambda byte: data[:at] + bytes([byte]) + data[at + 1 :])
        )
    )


ANY_UPLOAD = (
    st.binary(max_size=300)
    | st.binary(max_size=300).map(lambda data: b"\x1f\x8b" + data)
    | st.binary(max_size=300).map(gzipped).flatmap(damaged)
)


@given(
    ANY_UPLOAD,
    st.sampled_from([FileFormat.CSV, FileFormat.JSONL]),
    st.sampled_from(["utf-8", "latin-1"]),
    st.booleans(),
)
def test_any_bytes_give_rows_or_one_file_error_never_a_crash(
    data: bytes, file_format: FileFormat, encoding: str, header: bool
) -> None:
    try:
        parse(data, format=file_format, encoding=encoding, header=header)
    except FileError as error:
        assert error.reason in {
            "EMPTY_FILE",
            "MALFORMED_CSV",
            "MISSING_COLUMN",
            "DUPLICATE_HEADER",
            "INVALID_ENCODING",
            "INVALID_GZIP",
            "INVALID_CHARACTER",
        }
