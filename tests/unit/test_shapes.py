"""engine/shapes.py: what a file is, from its first bytes; its encoding and delimiter when the
caller leaves them unset; workbooks read into the rows the CSV path yields; zip bombs and
files that are clearly something else refused with what they look like."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import struct
import zipfile
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd_server.engine.blocks import ColumnBlock
from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.parsing import FileColumns, FileError, ParseOptions
from importd_server.engine.shapes import FileReader, cell_text, fallback_list, sniff_delimiter
from importd_server.model import Dialect, FileFormat, ImportMode
from tests.spreadsheets import ods, xlsx

CONTACTS = load_import_types(default_types_dir())["contacts"]
# What a caller who sets nothing gets (the server's default fallback list).
DETECT = {
    "detect_format": True,
    "sniff_delimiter": True,
    "detect_encoding": True,
    "fallback_encodings": ("windows-1252",),
}
Row = tuple[int, int, list[str], str | None]


class Trickle(io.RawIOBase):
    """The file in pieces of `size` bytes after its first `start` bytes, as an upload may
    arrive."""

    def __init__(self, data: bytes, size: int, start: int = 0) -> None:
        self._data, self._size, self._start, self._at = data, size, start, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer) if self._at < self._start else min(self._size, len(buffer))
        piece = self._data[self._at : self._at + size]
        buffer[: len(piece)] = piece
        self._at += len(piece)
        return len(piece)


def read(
    data: bytes, piece: int = 1 << 30, **options: Any
) -> tuple[list[Row], list[str], Dialect | None]:
    """The rows (row number, line number, values, error code), the file's columns, and the
    dialect the reader decided, the file after its first 64 KiB (the sample, read whole)
    arriving in pieces of `piece` bytes; FileError propagates."""
    columns = FileColumns()
    reader = FileReader(ParseOptions(**{**DETECT, **options}), CONTACTS, ImportMode.UPSERT, columns)
    rows: list[Row] = []
    for block in reader.blocks(Trickle(data, piece, 64 * 1024)):
        if isinstance(block, ColumnBlock):
            values = zip(*(c.to_pylist() for c in block.table.columns), strict=True)
            numbers = zip(
                block.row_numbers.to_pylist(), block.line_numbers.to_pylist(), strict=True
            )
            rows.extend((r, n, list(v), None) for (r, n), v in zip(numbers, values, strict=True))
        else:
            rows.extend(
                (r.row_number, r.line_number, r.values, r.error.code if r.error else None)
                for r in block
            )
    return rows, columns.names, reader.dialect


def refusal(data: bytes, **options: Any) -> tuple[str, str]:
    with pytest.raises(FileError) as caught:
        read(data, **options)
    return caught.value.reason, caught.value.message


def as_csv(table: list[list[str]], delimiter: str, quoting: int = csv.QUOTE_MINIMAL) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator="\n").writerows(table)
    return buffer.getvalue()


# --- delimiters -------------------------------------------------------------------------

PLAIN = st.text(st.characters(exclude_characters=',;\t|"\r\n', exclude_categories=["Cs"]))
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]))


def tables(fields: st.SearchStrategy[str]) -> st.SearchStrategy[list[list[str]]]:
    """Tables of 2 to 6 columns, 1 to 20 rows, the first field of each row not empty."""
    return st.integers(2, 6).flatmap(
        lambda width: st.lists(
            st.lists(fields, min_size=width, max_size=width).filter(lambda r: r[0] != ""),
            min_size=1,
            max_size=20,
        )
    )


@given(tables(PLAIN), st.sampled_from([",", ";", "\t", "|"]))
def test_the_delimiter_of_any_table_is_sniffed(table: list[list[str]], delimiter: str) -> None:
    assert sniff_delimiter(as_csv(table, delimiter), '"', complete=True) == delimiter


@given(tables(ANY_TEXT), st.sampled_from([",", ";", "\t", "|"]))
def test_quoted_fields_holding_other_delimiters_do_not_mislead_the_sniffer(
    table: list[list[str]], delimiter: str
) -> None:
    text = as_csv(table, delimiter, csv.QUOTE_ALL)
    assert sniff_delimiter(text, '"', complete=True) == delimiter


@pytest.mark.parametrize(
    ("sample", "complete", "expected"),
    [
        ("email\na@x.com\n", True, None),  # one column: no delimiter to find
        ("email;name\na@x.com;Smith, John\nb@x.com;Doe, Jane\n", True, ";"),
        ("email,notes\na@x.com,1;2;3\nb@x.com,4;5\n", True, ","),
        ('email;name\n"a@x.com";"Smith, John"\n', True, ";"),
        # The last line is cut by the sample's end: only whole lines count.
        ("email|name\na@x.com|A\nb@x.com,b,c,d,e,f", False, "|"),
        ("email;name\n", True, ";"),
        ("a,b;c\n", True, ","),  # a tie goes to the earlier in , ; tab |
    ],
    ids=[
        "one-column",
        "commas-in-values",
        "semicolons-in-values",
        "quoted",
        "cut",
        "header-only",
        "tie",
    ],
)
def test_sniffing_rules(sample: str, complete: bool, expected: str | None) -> None:
    assert sniff_delimiter(sample, '"', complete) == expected


def test_the_sniffed_delimiter_reads_the_file_and_the_dialect_says_so() -> None:
    rows, columns, dialect = read(b"email|first_name\na@x.com|A\n")
    assert (rows, columns) == ([(1, 2, ["a@x.com", "A"], None)], ["email", "first_name"])
    assert dialect == Dialect(
        FileFormat.CSV, "utf-8", "|", detected=("format", "encoding", "delimiter")
    )


def test_a_delimiter_the_caller_set_is_not_sniffed() -> None:
    rows, _, dialect = read(b"email\na@x.com;A\n", sniff_delimiter=False)
    assert rows == [(1, 2, ["a@x.com;A"], None)]
    assert dialect is not None and dialect.delimiter == ","
    assert dialect.detected == ("format", "encoding")


# --- encodings --------------------------------------------------------------------------

BOM_ENCODINGS = [
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
]
FIELD = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=20)


@given(
    st.lists(st.lists(FIELD, min_size=2, max_size=2), max_size=30),
    st.sampled_from(BOM_ENCODINGS),
)
def test_a_byte_order_mark_decides_the_encoding_and_the_rows_are_the_utf8_ones(
    table: list[list[str]], bom_encoding: tuple[bytes, str]
) -> None:
    bom, encoding = bom_encoding
    text = as_csv([["email", "first_name"], *table], ",")
    rows, columns, dialect = read(bom + text.encode(encoding))
    assert (rows, columns) == read(text.encode(), detect_encoding=False)[:2]
    assert dialect is not None and dialect.encoding == encoding


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("utf-16", codecs.BOM_UTF16_BE + "email\na@x.com\n".encode("utf-16-be")),
        ("utf-16", "email\na@x.com\n".encode("utf-16-le")),  # no mark: little-endian
        ("utf-16-be", "email\na@x.com\n".encode("utf-16-be")),
        ("utf-8", codecs.BOM_UTF8 + b"email\na@x.com\n"),
        ("windows-1252", "email\na@x.com\n".encode("cp1252")),
    ],
    ids=["utf-16-marked-be", "utf-16-unmarked", "utf-16-be", "utf-8-marked", "windows-1252"],
)
def test_an_encoding_the_caller_names_is_used(encoding: str, data: bytes) -> None:
    rows, _, dialect = read(data, encoding=encoding, detect_encoding=False)
    assert rows == [(1, 2, ["a@x.com"], None)]
    assert dialect is not None and "encoding" not in dialect.detected


def test_a_file_ascii_up_to_its_first_non_utf8_byte_is_read_in_the_fallback_encoding() -> None:
    # The first non-ASCII byte is far past the sample and the first pieces read.
    ascii_rows = b"a@x.com,A\n" * 300_000
    data = b"email,first_name\n" + ascii_rows + "b@x.com,J\xfcrgen \x80\n".encode("latin-1")
    rows, _, dialect = read(data, fallback_encodings=("windows-1252",))
    assert rows[-1] == (300_001, 300_002, ["b@x.com", "Jürgen €"], None)
    assert dialect is not None and dialect.encoding == "windows-1252"


# ASCII and the Latin-1 letters (0xC0-0xFF): without bytes 0x80-0xBF no Latin-1 text here
# is also valid UTF-8, while é, ü, ß... are bytes that start a UTF-8 sequence.
LATIN1_FIELD = st.text(
    st.characters(min_codepoint=32, max_codepoint=255).filter(
        lambda c: (c < "\x7f" and c not in ',"') or c >= "\xc0"
    ),
    max_size=12,
)


@settings(max_examples=30)  # each example reads 64 KiB twice
@given(
    st.lists(st.lists(LATIN1_FIELD, min_size=2, max_size=2), min_size=1, max_size=20),
    st.integers(1, 9),
)
def test_a_latin1_file_reads_alike_wherever_its_pieces_are_cut(
    table: list[list[str]], piece: int
) -> None:
    # Past the 64 KiB sample (read whole), the file reaches the decoder in these pieces.
    text = as_csv([["email", "first_name"], *[["a@x.com", "padding"]] * 4100, *table], ",")
    rows, columns, dialect = read(text.encode("latin-1"), piece, fallback_encodings=("latin-1",))
    assert (rows, columns) == read(text.encode(), detect_encoding=False)[:2]
    assert dialect is not None
    assert dialect.encoding == ("utf-8" if text.isascii() else "latin-1")


@settings(max_examples=30)  # each example reads 64 KiB twice
@given(st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=40), st.integers(1, 9))
def test_a_utf16_file_reads_alike_wherever_its_pieces_are_cut(value: str, piece: int) -> None:
    text = as_csv(
        [["email", "first_name"], *[["a@x.com", "padding"]] * 2100, ["a@x.com", value]], ","
    )
    data = codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    assert read(data, piece)[:2] == read(text.encode(), detect_encoding=False)[:2]


def test_the_first_fallback_that_reads_the_file_is_taken() -> None:
    # 0x81 is no character in windows-1252: latin-1 reads it.
    data = b"email,first_name\nb@x.com,J\xfcrgen\x81\n"
    rows, _, dialect = read(data, fallback_encodings=("windows-1252", "latin-1"))
    assert rows == [(1, 2, ["b@x.com", "Jürgen\x81"], None)]
    assert dialect is not None and dialect.encoding == "latin-1"


@pytest.mark.parametrize(
    ("data", "fallbacks", "message"),
    [
        (
            "email\né@x.com\n".encode() + b"\xe9@x.com\n",
            ("windows-1252",),
            "the file is not valid utf-8: byte 0xe9 at offset 15 cannot be decoded"
            " (invalid continuation byte)",
        ),
        (
            b"email\n\xe9@x.com\n",
            (),
            "the file is not valid utf-8: byte 0xe9 at offset 6 cannot be decoded"
            " (invalid continuation byte)",
        ),
        (
            b"email\n\x81@x.com\n",
            ("windows-1252",),
            "the file is none of utf-8, windows-1252: byte 0x81 at offset 6 cannot be decoded",
        ),
    ],
    ids=["utf-8-then-not", "no-fallback", "no-fallback-fits"],
)
def test_a_file_no_encoding_reads_is_refused_at_the_byte(
    data: bytes, fallbacks: tuple[str, ...], message: str
) -> None:
    assert refusal(data, fallback_encodings=fallbacks) == ("INVALID_ENCODING", message)


def test_an_invalid_byte_is_located_across_pieces_of_a_transcoded_file() -> None:
    data = codecs.BOM_UTF16_LE + ("email\n" + "a@x.com\n" * 200_000).encode("utf-16-le")
    broken = data + b"\x00\xdc"  # a lone low surrogate
    assert refusal(broken) == (
        "INVALID_ENCODING",
        f"the file is not valid utf-16-le: byte 0x00 at offset {len(data)} cannot be decoded"
        " (illegal encoding)",
    )


def test_fallback_settings_name_ascii_compatible_encodings() -> None:
    assert fallback_list("Windows-1252, latin1") == ("windows-1252", "latin-1")
    assert fallback_list(None) == ()
    with pytest.raises(ValueError, match="'utf-16' is not one of"):
        fallback_list("utf-16")
    with pytest.raises(ValueError, match="'klingon' is not one of"):
        fallback_list("klingon")


# --- what a file looks like -------------------------------------------------------------


def zipped(parts: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


ANYTHING = "CSV, JSON Lines, XLSX or ODS"


@pytest.mark.parametrize(
    ("data", "options", "looks_like"),
    [
        (
            b"\n  <!DOCTYPE html>\n<html><body>403 Forbidden</body></html>",
            {},
            f"an HTML page, not {ANYTHING}",
        ),
        (b"<html><body>Not found</body></html>", {"detect_format": False}, "an HTML page, not CSV"),
        (
            b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>',
            {},
            f"an XML document, not {ANYTHING}",
        ),
        (
            b'[{"email": "a@x.com"}]',
            {},
            f"a JSON array, not {ANYTHING}: importd reads JSON Lines, one object a line",
        ),
        (
            b'[\n  {"email": "a@x.com"}\n]',
            {"format": FileFormat.JSONL, "detect_format": False},
            "a JSON array, not JSON Lines: importd reads JSON Lines, one object a line",
        ),
        (b'{"email": "a@x.com"}\n', {"detect_format": False}, "JSON Lines, not CSV"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", {}, f"a PDF document, not {ANYTHING}"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", {}, f"a PNG image, not {ANYTHING}"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100),
            {},
            f"a legacy Office file (an .xls workbook, or a password-protected one), not {ANYTHING}",
        ),
        (bytes(range(256)) * 4, {}, f"binary data, not {ANYTHING}"),
        (
            "email,first_name\na@x.com,A\nb@x.com,B\n".encode("utf-16-le"),
            {},
            f"UTF-16 text without a byte order mark, not {ANYTHING}: set csv.encoding to utf-16-le",
        ),
        (
            zipped({"contacts.csv": b"email\n", "more.csv": b"email\n"}),
            {},
            f"a ZIP archive (of 'contacts.csv' and 1 more), not {ANYTHING}",
        ),
        (zipped({}), {}, f"an empty ZIP archive, not {ANYTHING}"),
        (
            zipped({"[Content_Types].xml": b"", "word/document.xml": b""}),
            {},
            f"a Word document, not {ANYTHING}",
        ),
        (b"PK\x03\x04 not really a zip", {}, f"a ZIP archive that cannot be read, not {ANYTHING}"),
        (xlsx({"S": [["email"]]}), {"detect_format": False}, "an XLSX workbook, not CSV"),
        (
            ods({"S": [["email"]]}),
            {"format": FileFormat.XLSX, "detect_format": False},
            "an ODS spreadsheet, not an XLSX workbook",
        ),
        (
            b"email\na@x.com\n",
            {"format": FileFormat.XLSX, "detect_format": False},
            "a text file, not an XLSX workbook",
        ),
    ],
    ids=[
        "html",
        "html-as-csv",
        "xml",
        "json-array",
        "json-array-as-jsonl",
        "jsonl-as-csv",
        "pdf",
        "png",
        "ole2",
        "binary",
        "utf-16-without-bom",
        "zip",
        "empty-zip",
        "docx",
        "broken-zip",
        "xlsx-as-csv",
        "ods-as-xlsx",
        "csv-as-xlsx",
    ],
)
def test_a_file_that_is_clearly_something_else_is_refused_saying_what_it_looks_like(
    data: bytes, options: dict[str, Any], looks_like: str
) -> None:
    assert refusal(data, **options) == ("WRONG_FILE_TYPE", f"the file looks like {looks_like}")


def test_json_lines_are_recognised_when_the_format_is_unset() -> None:
    rows, _, dialect = read(b'\n {"email": "a@x.com"}\n{"email": "b@x.com"}\n')
    assert rows == [(1, 2, ["a@x.com"], None), (2, 3, ["b@x.com"], None)]
    assert dialect == Dialect(FileFormat.JSONL, "utf-8", detected=("format", "encoding"))


def test_a_header_in_brackets_is_no_json_array() -> None:
    assert refusal(b"[email],[first_name]\na@x.com,A\n") == (
        "MISSING_COLUMN",
        "the header is missing required column(s): email",
    )


def test_a_gzipped_file_is_shaped_after_unpacking() -> None:
    import gzip

    rows, _, dialect = read(gzip.compress(b"email;first_name\na@x.com;A\n", mtime=0))
    assert rows == [(1, 2, ["a@x.com", "A"], None)]
    assert dialect is not None and (dialect.gzip, dialect.delimiter) == (True, ";")


@given(
    st.binary(max_size=2000),
    st.sampled_from([b"", b"PK\x03\x04", b"\xff\xfe", b"\x1f\x8b", b"{", b"["]),
)
def test_any_bytes_give_rows_or_one_file_error(data: bytes, prefix: bytes) -> None:
    with contextlib.suppress(FileError):
        read(prefix + data)


# --- workbooks --------------------------------------------------------------------------

PEOPLE = [
    None,
    ["  Email ", "first_name", "score", "birth_date", "status"],
    ["a@x.com", "Ann", 7, date(1990, 5, 17), "lead"],
    None,
    None,
    ["b@x.com", "Bob", 12.5, datetime(2024, 3, 5, 14, 30, 15), True],
    ["c@x.com", None, None, None, None, "a note beyond the header"],
]
PEOPLE_ROWS = [
    (1, 3, ["a@x.com", "Ann", "7", "1990-05-17", "lead"], None),
    (2, 6, ["b@x.com", "Bob", "12.5", "2024-03-05T14:30:15", "true"], None),
    (3, 7, ["c@x.com", "", "", "", "", "a note beyond the header"], "WRONG_FIELD_COUNT"),
]


@pytest.mark.parametrize(
    ("write", "file_format"), [(xlsx, FileFormat.XLSX), (ods, FileFormat.ODS)], ids=["xlsx", "ods"]
)
def test_a_workbook_reads_as_the_rows_a_csv_file_would_give(
    write: Any, file_format: FileFormat
) -> None:
    rows, columns, dialect = read(write({"People": PEOPLE}))
    assert rows == PEOPLE_ROWS
    assert columns == ["Email", "first_name", "score", "birth_date", "status"]
    assert dialect == Dialect(file_format, sheet="People", detected=("format", "sheet"))


def test_the_first_visible_worksheet_is_read_unless_one_is_named() -> None:
    book = xlsx(
        {
            "Notes": [["hidden"]],
            "People": [["email"], ["a@x.com"]],
            "Other": [["email"], ["b@x.com"]],
        },
        hidden=["Notes"],
    )
    assert read(book)[0] == [(1, 2, ["a@x.com"], None)]
    rows, _, dialect = read(book, sheet=" other ")
    assert rows == [(1, 2, ["b@x.com"], None)]
    assert dialect is not None and (dialect.sheet, dialect.detected) == ("Other", ("format",))
    assert refusal(book, sheet="Missing") == (
        "SHEET_NOT_FOUND",
        "the workbook has no sheet 'Missing' (sheets: 'Notes', 'People', 'Other')",
    )


def test_workbook_refusals_are_the_csv_ones() -> None:
    assert refusal(xlsx({"S": [None, None]})) == ("EMPTY_FILE", "the file is empty: no header row")
    assert refusal(ods({"S": [["name"], ["Ann"]]})) == (
        "MISSING_COLUMN",
        "the header is missing required column(s): email",
    )
    assert refusal(xlsx({"S": [["email"], ["a@x.com"], ["b@x.com"]]}), max_rows=1) == (
        "TOO_MANY_ROWS",
        "the file has more than 1 rows",
    )


def test_a_workbook_without_a_header_row_takes_the_columns_in_order() -> None:
    rows, columns, _ = read(xlsx({"S": [["a@x.com", "Ann"]]}), header=False)
    assert rows == [(1, 1, ["a@x.com", "Ann", "", "", "", "", ""], None)]
    assert columns[:2] == ["email", "first_name"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("text", "text"),
        (True, "true"),
        (False, "false"),
        (7, "7"),
        (7.0, "7"),
        (-0.0, "0"),
        (0.1 + 0.2, "0.3"),  # a spreadsheet keeps 15 significant digits
        (1e20, "100000000000000000000"),
        (1.5e-7, "0.00000015"),
        (12345678901234.5, "12345678901234.5"),
        (4915112345678.0, "4915112345678"),
        (date(2024, 2, 29), "2024-02-29"),
        (datetime(2024, 2, 29, 23, 59, 1), "2024-02-29T23:59:01"),
        (time(9, 5), "09:05:00"),
        (timedelta(hours=26, minutes=3, seconds=4), "26:03:04"),
        (-timedelta(minutes=90), "-1:30:00"),
    ],
    ids=[
        "str",
        "true",
        "false",
        "int",
        "integral-float",
        "negative-zero",
        "float-noise",
        "big",
        "small",
        "fifteen-digits",
        "phone",
        "date",
        "datetime",
        "time",
        "duration",
        "negative-duration",
    ],
)
def test_cells_become_the_text_a_csv_cell_would_hold(value: object, text: str) -> None:
    assert cell_text(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_number_keeps_its_fifteen_significant_digits_without_an_exponent(value: float) -> None:
    text = cell_text(value)
    assert "e" not in text.lower()
    assert Decimal(text) == Decimal(format(value, ".15g"))


# --- zip bombs --------------------------------------------------------------------------


def declaring(book: bytes, part: str, size: int) -> bytes:
    """The workbook with `part` declaring `size` bytes unpacked (local and central headers)."""
    data = bytearray(book)
    with zipfile.ZipFile(io.BytesIO(book)) as archive:
        info = archive.getinfo(part)
    struct.pack_into("<I", data, info.header_offset + 22, size)
    central = data.rfind(b"PK\x01\x02" + data[info.header_offset + 4 : info.header_offset + 6])
    while data[central + 46 : central + 46 + len(part)] != part.encode():
        central = data.rfind(b"PK\x01\x02", 0, central)
    struct.pack_into("<I", data, central + 24, size)
    return bytes(data)


def with_part(book: bytes, name: str, data: bytes) -> bytes:
    buffer = io.BytesIO(book)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


BOOK = xlsx({"S": [["email"], ["a@x.com"]]})


def test_a_part_compressed_like_a_zip_bomb_is_refused_before_calamine_reads_it() -> None:
    bomb = with_part(BOOK, "xl/media/padding.bin", bytes(2 * 1024**2))  # 2 MiB of zeros
    assert refusal(bomb) == (
        "WORKBOOK_TOO_LARGE",
        "the workbook's part 'xl/media/padding.bin' is compressed more than 100 to 1, as zip"
        " bombs are",
    )


def test_small_parts_may_compress_well() -> None:
    assert read(with_part(BOOK, "xl/media/padding.bin", bytes(1024**2)))[0] == [
        (1, 2, ["a@x.com"], None)
    ]


def test_a_workbook_declaring_more_than_256_mib_unpacked_is_refused() -> None:
    assert refusal(declaring(BOOK, "xl/styles.xml", 256 * 1024**2)) == (
        "WORKBOOK_TOO_LARGE",
        "the workbook unpacks to more than 268435456 bytes",
    )


def test_a_part_that_unpacks_to_more_than_it_declares_is_refused() -> None:
    assert refusal(declaring(BOOK, "xl/styles.xml", 10)) == (
        "WORKBOOK_TOO_LARGE",
        "the workbook's part 'xl/styles.xml' unpacks to more than it declares",
    )


def test_corrupt_workbook_data_is_a_file_error() -> None:
    data = bytearray(BOOK)
    with zipfile.ZipFile(io.BytesIO(BOOK)) as archive:
        info = archive.getinfo("xl/worksheets/sheet1.xml")
    start = info.header_offset + 30 + len(info.filename)
    data[start : start + info.compress_size] = b"\xff" * info.compress_size  # no deflate block
    assert refusal(bytes(data)) == ("INVALID_WORKBOOK", "the workbook's ZIP data is corrupt")
