"""Characters PostgreSQL text cannot hold (NUL, lone surrogates) fail their row alone, and
never reach a value, an error or a column name."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.parsing import (
    FileColumns,
    FileError,
    ParsedRow,
    ParseOptions,
    parse_rows,
)
from importd_server.model import FileFormat, ImportMode, RowError

CONTACTS = load_import_types(default_types_dir())["contacts"]
COLUMNS = ["email", "first_name", "last_name"]
UNSTORABLE = ("\x00", "\ud800", "\udfff")

# Cell text: anything a strict UTF-8 file can carry, but not the characters under test.
cells = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)
# A file's rows, each with the cell (if any) where an unstorable character is put.
rows_with_marks = st.lists(
    st.tuples(
        st.lists(cells, min_size=len(COLUMNS), max_size=len(COLUMNS)),
        st.none() | st.tuples(st.integers(0, len(COLUMNS) - 1), st.integers(0, 8)),
    ),
    min_size=1,
    max_size=6,
)


def parse(data: bytes, file_format: FileFormat) -> tuple[list[ParsedRow], FileColumns]:
    columns = FileColumns()
    options = ParseOptions(format=file_format)
    return list(parse_rows(io.BytesIO(data), options, CONTACTS, ImportMode.UPSERT, columns)), (
        columns
    )


def marked(values: list[str], mark: tuple[int, int] | None, character: str) -> list[str]:
    """The values with `character` put into the marked cell, at the marked offset."""
    if mark is None:
        return values
    column, offset = mark
    value = values[column]
    return [*values[:column], value[:offset] + character + value[offset:], *values[column + 1 :]]


def expected(values: list[str], mark: tuple[int, int] | None, character: str) -> ParsedRow:
    """What parsing must give for a row: itself, or failed with the character as U+FFFD."""
    if mark is None:
        return ParsedRow(0, 0, values)
    stored = marked(values, mark, "\ufffd")
    what = "a NUL character" if character == "\x00" else "a lone surrogate"
    error = RowError(
        "INVALID_CHARACTER",
        COLUMNS[mark[0]],
        stored[mark[0]],
        f"contains {what} (shown as U+FFFD), which PostgreSQL text cannot hold",
    )
    return ParsedRow(0, 0, stored, error)


def without_numbers(rows: list[ParsedRow]) -> list[ParsedRow]:
    return [row._replace(row_number=0, line_number=0) for row in rows]


@settings(max_examples=50)
@given(rows=rows_with_marks)
def test_a_nul_byte_in_a_csv_cell_fails_that_row_alone(
    rows: list[tuple[list[str], tuple[int, int] | None]],
) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for values, mark in rows:
        writer.writerow(marked(values, mark, "\x00"))
    parsed, columns = parse(text.getvalue().encode(), FileFormat.CSV)
    assert columns.names == COLUMNS
    assert without_numbers(parsed) == [expected(values, mark, "\x00") for values, mark in rows]


@settings(max_examples=50)
@given(rows=rows_with_marks, character=st.sampled_from(UNSTORABLE))
def test_a_nul_or_lone_surrogate_in_a_json_value_fails_that_row_alone(
    rows: list[tuple[list[str], tuple[int, int] | None]], character: str
) -> None:
    lines = [
        json.dumps(dict(zip(COLUMNS, marked(values, mark, character), strict=True)))
        for values, mark in rows
    ]
    parsed, columns = parse("\n".join(lines).encode(), FileFormat.JSONL)
    assert columns.names == COLUMNS
    assert without_numbers(parsed) == [expected(values, mark, character) for values, mark in rows]


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800"])
def test_a_json_key_with_a_nul_fails_its_row_as_read_and_never_becomes_a_column(
    escape: str,
) -> None:
    bad_line = f'{{"email": "b@x.com", "no{escape}te": "x"}}'
    data = f'{{"email": "a@x.com"}}\n{bad_line}\n{{"email": "c@x.com", "note": "y"}}\n'
    parsed, columns = parse(data.encode(), FileFormat.JSONL)
    what = "a NUL character" if escape == "\\u0000" else "a lone surrogate"
    assert parsed == [
        ParsedRow(1, 1, ["a@x.com"]),
        ParsedRow(
            2,
            2,
            [],
            RowError(
                "INVALID_CHARACTER",
                "",
                bad_line,
                f"a key contains {what}, which PostgreSQL text cannot hold",
            ),
        ),
        ParsedRow(3, 3, ["c@x.com", "y"]),
    ]
    assert columns.names == ["email", "note"]


def test_a_raw_nul_in_a_json_line_is_invalid_json_shown_with_u_fffd() -> None:
    parsed, _ = parse(b'{"email": "a\x00@x.com"}\n{"email": "b@x.com"}\n', FileFormat.JSONL)
    assert parsed[0].error is not None
    assert (parsed[0].error.code, parsed[0].error.value) == (
        "INVALID_JSON",
        '{"email": "a\ufffd@x.com"}',
    )
    assert parsed[1] == ParsedRow(2, 2, ["b@x.com"])


def test_a_row_with_the_wrong_field_count_and_a_nul_keeps_its_error_cleaned() -> None:
    parsed, _ = parse(b"email,first_name\na\x00@x.com\nb@x.com,Bob\n", FileFormat.CSV)
    assert parsed == [
        ParsedRow(
            1,
            2,
            ["a\ufffd@x.com"],
            RowError(
                "WRONG_FIELD_COUNT", "", "a\ufffd@x.com", "the row has 1 fields, the header has 2"
            ),
        ),
        ParsedRow(2, 3, ["b@x.com", "Bob"]),
    ]


def test_a_nul_in_the_csv_header_fails_the_file_naming_the_column() -> None:
    with pytest.raises(FileError) as caught:
        parse(b"email,first\x00name\na@x.com,Ann\n", FileFormat.CSV)
    assert (caught.value.reason, caught.value.message) == (
        "INVALID_CHARACTER",
        "column 2 of the header contains a NUL character",
    )


def test_a_duplicate_header_name_is_quoted_cut_short() -> None:
    name = "x" * 100_000
    with pytest.raises(FileError) as caught:
        parse(f"email,{name},{name}\n".encode(), FileFormat.CSV)
    assert caught.value.message == (
        f"column {'x' * 40!r}... (100000 characters) appears twice in the header (columns 2 and 3)"
    )
