"""Reading an upload in blocks of whole lines. A plain block of a UTF-8 CSV file (no quote
character, no NUL, no lone carriage return) is parsed by Arrow into columns, its blank lines
and rows with a wrong number of fields found by Arrow too; any other block goes to the
reference parser
(`parsing.csv_rows`), and so does the rest of the file once a quote character appears (a
quoted field may hold a line break, so lines stop being rows). Row and line numbers, errors
and limits are therefore the reference's own. Other formats and encodings are read by the
reference parser whole.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from importd_server.engine.parsing import (
    ENCODINGS,
    CsvState,
    FileColumns,
    ParsedRow,
    ParseOptions,
    csv_rows,
    file_errors,
    open_binary,
    parse_rows,
    wrong_field_count,
)
from importd_server.model import FileFormat, ImportMode, ImportType

# A block is at most this long, so no line of a plain block can exceed MAX_LINE_CHARS.
BLOCK_BYTES = 1 << 20
REFERENCE_BATCH_ROWS = 5000
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ColumnBlock:
    """Rows of plain lines parsed by Arrow, one string column per file column, with each
    row's row and line number; and the block's rows with a wrong number of fields, as the
    reference parser gives them."""

    row_numbers: pa.Array  # int64
    line_numbers: pa.Array  # int64
    table: pa.Table
    odd_rows: list[ParsedRow]


Block = ColumnBlock | list[ParsedRow]


def read_blocks(
    binary: io.RawIOBase,
    options: ParseOptions,
    import_type: ImportType,
    mode: ImportMode,
    columns: FileColumns,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[Block]:
    """The file's rows in order, in blocks; fills `columns` as the header is read.

    Raises FileError for a file that cannot be read as a whole, as `parse_rows` does.
    """
    if not _plain_dialect(options):
        yield from batched(parse_rows(binary, options, import_type, mode, columns))
        return
    with file_errors(options):
        reader = _BlockReader(options, import_type, mode, columns, block_bytes)
        yield from reader.blocks(open_binary(binary))


def _plain_dialect(options: ParseOptions) -> bool:
    """Whether Arrow can read the file's plain blocks exactly as the reference would."""
    return (
        options.format is FileFormat.CSV
        and ENCODINGS.get(options.encoding.lower()) == "utf-8-sig"
        and len(options.delimiter) == 1
        and len(options.quote) == 1
        and options.delimiter != options.quote
        and all(" " <= c <= "~" for c in options.delimiter + options.quote)
    )


class _BlockReader:
    def __init__(
        self,
        options: ParseOptions,
        import_type: ImportType,
        mode: ImportMode,
        columns: FileColumns,
        block_bytes: int,
    ) -> None:
        self._options = options
        self._import_type = import_type
        self._mode = mode
        self._columns = columns
        self._block_bytes = block_bytes
        self._state = CsvState.start(options, import_type, columns)
        self._quote = options.quote.encode()

    def blocks(self, stream: io.BufferedReader[Any]) -> Iterator[Block]:
        size = self._block_bytes
        pending = bytearray(stream.read(len(BOM)))
        if pending == BOM:
            pending.clear()  # what the reference's utf-8-sig codec drops
        at_end = False
        while True:
            while not at_end and len(pending) < size:
                piece = stream.read(size - len(pending))
                at_end = not piece
                pending += piece
            if not pending:
                break
            cut = (
                len(pending)
                if at_end and len(pending) <= size
                else pending.rfind(b"\n", 0, size) + 1
            )
            if cut == 0 or self._quote in pending[:cut]:
                # A line longer than a block, or quoting: lines may no longer be records,
                # so the reference parser reads the rest of the file.
                yield from self._reference(io.BufferedReader(Chained(bytes(pending), stream)))
                break
            block = bytes(pending[:cut])
            del pending[:cut]
            while self._state.header is None and block:
                line_end = block.find(b"\n") + 1 or len(block)
                yield from self._reference(io.BytesIO(block[:line_end]))
                block = block[line_end:]
            if block:
                yield from self._block(block)
        self._state.finish()

    def _block(self, block: bytes) -> Iterator[Block]:
        state, options = self._state, self._options
        lines = block.count(b"\n") + (not block.endswith(b"\n"))
        chars = _characters(block)
        if (
            chars is None
            or not _plain(block)
            or (options.max_rows is not None and state.rows + lines > options.max_rows)
            or (options.max_chars is not None and state.chars + chars > options.max_chars)
        ):
            # The reference parser finds the exact file error, or limit.
            yield from self._reference(io.BytesIO(block))
            return
        parsed = None
        if (
            b"\n\n" not in block
            and b"\n\r\n" not in block
            and not block.startswith((b"\n", b"\r\n"))
        ):
            parsed = self._lines_as_rows(block, lines)
        if parsed is None:
            parsed = self._irregular(block)
        state.rows += parsed.table.num_rows + len(parsed.odd_rows)
        state.lines += lines
        state.chars += chars
        yield parsed

    def _lines_as_rows(self, block: bytes, lines: int) -> ColumnBlock | None:
        """A plain block without blank lines, each line a row: parsed by Arrow, which sets
        aside the rows with a wrong number of fields (and numbers them); None if it did
        not account for every line."""
        state = self._state
        assert state.header is not None
        ragged: list[tuple[int | None, str]] = []
        table = self._arrow(block, ragged)
        if (
            table is None
            or table.num_rows + len(ragged) != lines
            or any(number is None for number, _ in ragged)
        ):
            return None
        row_numbers = _counting(state.rows + 1, lines)
        line_numbers = _counting(state.lines + 1, lines)
        if not ragged:
            return ColumnBlock(row_numbers, line_numbers, table, [])
        at = [number - 1 for number, _ in ragged if number is not None]
        kept = pc.invert(pc.is_in(pa.arange(0, lines), value_set=pa.array(at, pa.int64())))
        odd_rows = [
            ParsedRow(
                state.rows + 1 + i,
                state.lines + 1 + i,
                fields,
                wrong_field_count(fields, state.header, self._options),
            )
            for i, fields in zip(
                at, (text.split(self._options.delimiter) for _, text in ragged), strict=True
            )
        ]
        return ColumnBlock(row_numbers.filter(kept), line_numbers.filter(kept), table, odd_rows)

    def _irregular(self, block: bytes) -> ColumnBlock:
        """A plain block with blank lines (skipped), and maybe rows with a wrong number of
        fields: split into lines and fields with Arrow's string kernels, since no field
        holds a quote or line break."""
        state, delimiter = self._state, self._options.delimiter
        assert state.header is not None
        width = len(state.header)
        text = pa.array([block], pa.binary()).cast(pa.string())
        lines = pc.list_flatten(pc.split_pattern(text, "\n"))
        if block.endswith(b"\n"):
            lines = lines.slice(0, len(lines) - 1)
        lines = pc.utf8_rtrim(lines, characters="\r")
        written = pc.not_equal(lines, "")
        regular = pc.and_(written, pc.equal(pc.count_substring(lines, delimiter), width - 1))
        odd = pc.and_(written, pc.invert(regular))
        # Blank lines hold no row: a line's row number counts the written lines up to it.
        row_numbers = pc.add(pc.cumulative_sum(pc.cast(written, pa.int64())), state.rows)
        line_numbers = _counting(state.lines + 1, len(lines))
        fields = pc.split_pattern(lines.filter(regular), delimiter)
        table = pa.table(
            [pc.list_element(fields, i) for i in range(width)],
            names=[f"c{i}" for i in range(width)],
        )
        odd_rows = [
            ParsedRow(row, line, values, wrong_field_count(values, state.header, self._options))
            for row, line, values in zip(
                row_numbers.filter(odd).to_pylist(),
                line_numbers.filter(odd).to_pylist(),
                (line.split(delimiter) for line in lines.filter(odd).to_pylist()),
                strict=True,
            )
        ]
        return ColumnBlock(
            row_numbers.filter(regular), line_numbers.filter(regular), table, odd_rows
        )

    def _arrow(self, block: bytes, ragged: list[tuple[int | None, str]]) -> pa.Table | None:
        """The block's rows as string columns; rows with another number of fields than the
        header are left out and listed in `ragged` (their row number in the block, from 1,
        and their text). None if Arrow cannot read the block."""
        assert self._state.header is not None
        names = [f"c{i}" for i in range(len(self._state.header))]

        def set_aside(row: Any) -> str:
            ragged.append((row.number, row.text))
            return "skip"

        try:
            return pa_csv.read_csv(
                pa.py_buffer(block),
                read_options=pa_csv.ReadOptions(column_names=names, use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    delimiter=self._options.delimiter,
                    quote_char=False,
                    double_quote=False,
                    escape_char=False,
                    newlines_in_values=False,
                    ignore_empty_lines=False,
                    invalid_row_handler=set_aside,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid:  # e.g. invalid UTF-8
            return None

    def _reference(self, binary: Any) -> Iterator[list[ParsedRow]]:
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="strict", newline="")
        rows = csv_rows(
            text, self._options, self._import_type, self._mode, self._columns, self._state
        )
        yield from batched(rows)


def _plain(block: bytes) -> bool:
    """No NUL, every carriage return ends a line with a line feed, and no byte order mark
    in front (Arrow would drop it; inside a file it is a character)."""
    return (
        not block.startswith(BOM)
        and b"\x00" not in block
        and (b"\r" not in block or block.count(b"\r") == block.count(b"\r\n"))
    )


def _counting(first: int, count: int) -> pa.Array:
    """first, first + 1, ... (count numbers, int64)."""
    return pc.add(pa.arange(0, count), first).cast(pa.int64())


def _characters(block: bytes) -> int | None:
    """How many characters the block holds, or None if it is not valid UTF-8."""
    if block.isascii():
        return len(block)
    try:
        return len(block.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def batched(rows: Iterator[ParsedRow]) -> Iterator[list[ParsedRow]]:
    """The rows in lists of REFERENCE_BATCH_ROWS (the last one shorter)."""
    while batch := list(itertools.islice(rows, REFERENCE_BATCH_ROWS)):
        yield batch


class Chained(io.RawIOBase):
    """Bytes already read, then the rest of a stream."""

    def __init__(self, head: bytes, rest: io.BufferedReader[Any]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._rest.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)
