"""Parsing files: formats, encodings, and precise errors for files that cannot be read."""

from __future__ import annotations

import gzip
import io
from typing import Any

import pytest

from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.parsing import FileColumns, FileError, ParseOptions, parse_rows
from importd_server.model import FileFormat, ImportMode

CONTACTS = load_import_types(default_types_dir())["contacts"]


def parse(
    data: bytes, mode: ImportMode = ImportMode.UPSERT, **options: object
) -> tuple[list[tuple[int, int, list[str], str | None]], FileColumns]:
    """The rows as (row number, line number, values, error code), and the file's columns."""
    columns = FileColumns()
    parse_options = ParseOptions(**options)  # type: ignore[arg-type]
    rows = parse_rows(io.BytesIO(data), parse_options, CONTACTS, mode, columns)
    return [
        (r.row_number, r.line_number, r.values, r.error.code if r.error else None) for r in rows
    ], columns


def file_error(data: bytes, **options: object) -> FileError:
    with pytest.raises(FileError) as caught:
        parse(data, **options)
    return caught.value


def test_csv_rows_carry_row_and_line_numbers_with_quoted_newlines_and_crlf() -> None:
    data = b'email,first_name\r\na@x.com,"Ann\r\nMarie"\r\n\r\nb@x.com,Bob\r\n'
    rows, columns = parse(data)
    assert rows == [
        (1, 2, ["a@x.com", "Ann\r\nMarie"], None),
        (2, 5, ["b@x.com", "Bob"], None),
    ]
    assert columns.names == ["email", "first_name"]
    assert columns.positions == {"email": [0], "first_name": [1]}


def test_header_aliases_map_to_columns_in_any_case() -> None:
    _, columns = parse(b"E-Mail,Surname,notes\nx@y.z,Doe,hello\n")
    assert columns.positions == {"email": [0], "last_name": [1]}
    assert columns.names == ["E-Mail", "Surname", "notes"]


def test_delimiter_quote_and_utf8_bom() -> None:
    data = "\ufeffemail;first_name\n'a@x.com';'O;Brien'\n".encode()
    rows, _ = parse(data, delimiter=";", quote="'")
    assert rows == [(1, 2, ["a@x.com", "O;Brien"], None)]


def test_latin1_file() -> None:
    rows, _ = parse("email,first_name\nz@x.com,Jürgen\n".encode("latin-1"), encoding="latin-1")
    assert rows[0][2] == ["z@x.com", "Jürgen"]


def test_gzip_is_detected_by_its_magic_bytes() -> None:
    rows, _ = parse(gzip.compress(b"email\na@x.com\nb@x.com\n", mtime=0))
    assert [r[2] for r in rows] == [["a@x.com"], ["b@x.com"]]


def test_file_without_header_takes_the_import_types_column_order() -> None:
    rows, columns = parse(b"a@x.com,Ann\n", header=False)
    assert rows[0][2] == ["a@x.com", "Ann"]
    assert columns.names[:3] == ["email", "first_name", "last_name"]


def test_a_row_with_the_wrong_number_of_fields_is_a_row_error() -> None:
    rows, _ = parse(b"email,first_name\na@x.com\nb@x.com,Bob,extra\n")
    assert rows[0] == (1, 2, ["a@x.com"], "WRONG_FIELD_COUNT")
    assert rows[1] == (2, 3, ["b@x.com", "Bob", "extra"], "WRONG_FIELD_COUNT")


def test_jsonl_rows_and_bad_lines() -> None:
    data = (
        b'{"email": "a@x.com", "score": 5, "tags": ["a"], "vip": true, "note": null}\n\n'
        b'not json\n[1, 2]\n{"e-mail": "b@x.com"}\n'
    )
    rows, columns = parse(data, format=FileFormat.JSONL)
    assert rows == [
        (1, 1, ["a@x.com", "5", '["a"]', "true", ""], None),
        (2, 3, [], "INVALID_JSON"),
        (3, 4, [], "NOT_AN_OBJECT"),
        (4, 5, ["", "", "", "", "", "b@x.com"], None),
    ]
    assert columns.names == ["email", "score", "tags", "vip", "note", "e-mail"]
    assert columns.positions == {"email": [0, 5], "score": [1]}


@pytest.mark.parametrize(
    ("data", "options", "reason", "message"),
    [
        (b"", {}, "EMPTY_FILE", "the file is empty: no header row"),
        (b"", {"format": FileFormat.JSONL}, "EMPTY_FILE", "the file is empty: no JSON lines"),
        (
            b'email,first_name\na@x.com,Ann\nb@x.com,"Bob\nc@x.com,Cy\n',
            {},
            "MALFORMED_CSV",
            "unbalanced quote in the row starting at line 3",
        ),
        (
            b"first_name\nAnn\n",
            {},
            "MISSING_COLUMN",
            "the header is missing required column(s): email",
        ),
        (
            b"email,first_name,E-mail\n",
            {},
            "DUPLICATE_HEADER",
            "column 'email' appears twice in the header (columns 1 and 3)",
        ),
        (
            b"email\na@x.com\n\xff\xfe\n",
            {},
            "INVALID_ENCODING",
            "the file is not valid utf-8: byte 0xff cannot be decoded (invalid start byte)",
        ),
        (
            b"email\na@x.com\nb@x.com\nc@x.com\n",
            {"max_rows": 2},
            "TOO_MANY_ROWS",
            "the file has more than 2 rows",
        ),
        (gzip.compress(b"email\na@x.com\n", mtime=0)[:-6], {}, "INVALID_GZIP", None),
        (b"email\n", {"encoding": "utf-16"}, "UNSUPPORTED_ENCODING", None),
    ],
    ids=[
        "empty-csv",
        "empty-jsonl",
        "unbalanced-quote",
        "missing-column",
        "duplicate-header",
        "invalid-encoding",
        "too-many-rows",
        "broken-gzip",
        "unsupported-encoding",
    ],
)
def test_unreadable_files_get_one_precise_job_level_error(
    data: bytes, options: dict[str, object], reason: str, message: str | None
) -> None:
    error = file_error(data, **options)
    assert error.reason == reason
    if message is not None:
        assert error.message == message


def test_header_only_file_has_no_rows() -> None:
    rows, columns = parse(b"email,first_name\n")
    assert rows == []
    assert columns.names == ["email", "first_name"]


def test_update_and_delete_need_only_the_key_column() -> None:
    rows, _ = parse(b"email\na@x.com\n", mode=ImportMode.DELETE)
    assert rows == [(1, 2, ["a@x.com"], None)]


@pytest.mark.parametrize(
    ("data", "options", "reason", "message"),
    [
        (
            b"email\n" + b"a" * (1 << 20) + b"\n",
            {},
            "LINE_TOO_LONG",
            "line 2 is longer than 1048576 characters",
        ),
        (
            gzip.compress(b"email\n" + b"a@x.com\n" * 10_000, mtime=0),
            {"max_chars": 1000},
            "FILE_TOO_LARGE",
            "the file holds more than 1000 characters",
        ),
    ],
    ids=["line-too-long", "gzip-bomb"],
)
def test_what_no_row_may_hold_is_refused_before_it_costs_memory(
    data: bytes, options: dict[str, object], reason: str, message: str
) -> None:
    error = file_error(data, **options)
    assert (error.reason, error.message) == (reason, message)


class OneByteReads(io.RawIOBase):
    """A stream that hands out one byte per read, like an upload in tiny pieces."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._data:
            return 0
        buffer[0] = self._data[0]
        self._data = self._data[1:]
        return 1


def test_gzip_magic_split_over_reads_is_still_recognized() -> None:
    columns = FileColumns()
    stream = OneByteReads(gzip.compress(b"email\na@x.com\n", mtime=0))
    rows = list(parse_rows(stream, ParseOptions(), CONTACTS, ImportMode.UPSERT, columns))
    assert [r.values for r in rows] == [["a@x.com"]]


def test_json_numbers_keep_every_digit() -> None:
    rows, _ = parse(
        b'{"email": "a@x.com", "amount": 999999.123456789012345}\n', format=FileFormat.JSONL
    )
    assert rows[0][2] == ["a@x.com", "999999.123456789012345"]
