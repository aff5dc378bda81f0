"""Reading in blocks (Arrow for plain blocks) against the reference parser: the same rows,
row and line numbers, row errors and file errors, wherever the blocks are cut."""

from __future__ import annotations

import gzip
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd_server.engine.blocks import ColumnBlock, read_blocks
from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.parsing import FileColumns, FileError, ParseOptions, parse_rows
from importd_server.model import ImportMode

CONTACTS = load_import_types(default_types_dir())["contacts"]
Row = tuple[int, int, list[str], str | None]


def by_blocks(data: bytes, options: ParseOptions, block_bytes: int) -> tuple[list[Row], list[str]]:
    columns = FileColumns()
    rows: list[Row] = []
    for block in read_blocks(
        io.BytesIO(data), options, CONTACTS, ImportMode.UPSERT, columns, block_bytes
    ):
        if isinstance(block, ColumnBlock):
            values = [c.to_pylist() for c in block.table.columns]
            numbers = zip(
                block.row_numbers.to_pylist(), block.line_numbers.to_pylist(), strict=True
            )
            for (row, line), fields in zip(numbers, zip(*values, strict=True), strict=True):
                rows.append((row, line, list(fields), None))
            rows.extend(
                (r.row_number, r.line_number, r.values, r.error.code) for r in block.odd_rows
            )  # type: ignore[union-attr]
            rows.sort()
        else:
            rows.extend(
                (r.row_number, r.line_number, r.values, r.error.code if r.error else None)
                for r in block
            )
    return rows, columns.names


def by_reference(data: bytes, options: ParseOptions) -> tuple[list[Row], list[str]]:
    columns = FileColumns()
    rows = [
        (r.row_number, r.line_number, r.values, r.error.code if r.error else None)
        for r in parse_rows(io.BytesIO(data), options, CONTACTS, ImportMode.UPSERT, columns)
    ]
    return rows, columns.names


def outcome(read: object) -> object:
    """What reading gives: the rows and columns, or the file error's reason and message."""
    try:
        return read()  # type: ignore[operator]
    except FileError as error:
        return {"reason": error.reason, "message": error.message}


FIELDS = st.one_of(
    st.sampled_from(["a@x.com", "Ann", "", " x ", "J\u00fcrgen", "+1415", "a;b", "x\\y", "\t"]),
    st.text(alphabet="ab;\t \u00e9\\", max_size=4),
)
ODD_LINES = st.one_of(
    st.sampled_from(["", "email,first_name", "\ufeffemail", '"q,uoted",x', "a\x00b", "x\ry"]),
    st.text(alphabet='ab,;"\r\n\x00 \u00e9', max_size=4),
)
HEADERS = st.sampled_from(["email,first_name"] * 3 + ["email", "\ufeffemail,x,y", "first_name", ""])


@st.composite
def files(draw: st.DrawFn) -> bytes:
    """Mostly plain lines with the header's number of fields, so that most files have
    blocks Arrow reads; sometimes odd lines, endings and bytes."""
    header = draw(HEADERS)
    width = header.count(",") + 1
    plain = st.lists(FIELDS, min_size=width, max_size=width).map(",".join)
    ragged = st.lists(FIELDS, min_size=1, max_size=4).map(",".join)
    endings = st.sampled_from(["\n"] * 6 + ["\r\n"] * 3)
    lines = st.one_of(plain, plain, plain, plain, plain, plain, ragged)
    if draw(st.integers(0, 2)) == 0:
        endings = st.sampled_from(["\n", "\r\n", "\r", ""])
        lines = st.one_of(plain, ragged, ODD_LINES)
    body = draw(st.lists(st.tuples(lines, endings), max_size=16))
    text = header + "\n" + "".join(line + end for line, end in body)
    data = text.encode()
    if draw(st.integers(0, 9)) == 0:
        data = data.replace(b"\xc3\xa9", b"\xe9", 1)  # invalid UTF-8, sometimes
    return data


@settings(max_examples=1000, deadline=None)
@given(
    data=files(),
    block_bytes=st.one_of(st.integers(1, 48), st.just(1 << 20)),
    max_rows=st.one_of(st.none(), st.integers(0, 8)),
    max_chars=st.one_of(st.none(), st.integers(0, 200)),
    delimiter=st.sampled_from([",", ";"]),
)
def test_blocks_read_every_file_as_the_reference_parser_does(
    data: bytes, block_bytes: int, max_rows: int | None, max_chars: int | None, delimiter: str
) -> None:
    options = ParseOptions(delimiter=delimiter, max_rows=max_rows, max_chars=max_chars)
    expected = outcome(lambda: by_reference(data, options))
    got = outcome(lambda: by_blocks(data, options, block_bytes))
    reasons = {x["reason"] for x in (got, expected) if isinstance(x, dict)}
    if "INVALID_ENCODING" in reasons:
        # The reference decodes 8 KiB ahead of the line it parses, so in a file with an
        # invalid byte AND another file error either may be reported first.
        assert isinstance(got, dict) and isinstance(expected, dict)
        return
    assert got == expected


def test_plain_blocks_are_read_by_arrow_with_their_row_and_line_numbers() -> None:
    data = b"email,first_name\r\na@x.com,Ann\r\nb@x.com,\r\nc@x.com,Cy"
    columns = FileColumns()
    blocks = list(
        read_blocks(io.BytesIO(data), ParseOptions(), CONTACTS, ImportMode.UPSERT, columns)
    )
    assert [type(b) for b in blocks] == [ColumnBlock]
    block = blocks[0]
    assert isinstance(block, ColumnBlock)
    assert block.row_numbers.to_pylist() == [1, 2, 3]
    assert block.line_numbers.to_pylist() == [2, 3, 4]
    assert block.table.to_pylist() == [
        {"c0": "a@x.com", "c1": "Ann"},
        {"c0": "b@x.com", "c1": ""},
        {"c0": "c@x.com", "c1": "Cy"},
    ]


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(b"email\na@x.com\n" * 3),
        b'email,first_name\na@x.com,"Ann\nMarie"\nb@x.com,Bob\n',
        b"email,first_name\na@x.com\nb@x.com,Bob,extra\n\nc@x.com,Cy\n",
        b"\xef\xbb\xbfemail\na@x.com\n",
    ],
    ids=["gzip", "quoted newline", "ragged and blank", "bom"],
)
def test_files_the_fast_path_cannot_read_whole_are_read_as_the_reference_does(
    data: bytes,
) -> None:
    options = ParseOptions()
    assert by_blocks(data, options, 8) == by_reference(data, options)
    assert by_blocks(data, options, 1 << 20) == by_reference(data, options)
