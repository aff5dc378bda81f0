"""File parsing: bytes in, rows out, one pass, never the whole file in memory.

Runs in a worker thread (see `staging`): the csv module pulls lines from a blocking reader,
which is what lets a quoted field span lines while the file is still arriving.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, NamedTuple

from importd_server.errors import InvalidArgument, excerpt
from importd_server.model import FileFormat, ImportMode, ImportType, RowError

GZIP_MAGIC = b"\x1f\x8b"
ENCODINGS = {"utf-8": "utf-8-sig", "utf8": "utf-8-sig", "latin-1": "latin-1", "latin1": "latin-1"}
MAX_FIELD_CHARS = 1 << 20
MAX_LINE_CHARS = 1 << 20
MAX_EXCERPT_CHARS = 1000
# What PostgreSQL text cannot hold: NUL (a CSV byte, or JSON's "\u0000") and lone
# surrogates (JSON's "\ud800"). A row with one fails alone; the character becomes U+FFFD.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


class FileError(InvalidArgument):
    """The file as a whole cannot be imported; `reason` is stable, the message precise."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)


@dataclass(frozen=True)
class ParseOptions:
    """How to read a file."""

    format: FileFormat = FileFormat.CSV
    delimiter: str = ","
    quote: str = '"'
    header: bool = True
    encoding: str = "utf-8"
    max_rows: int | None = None
    # Characters after decoding (and gunzipping): what a small gzip bomb cannot exceed.
    max_chars: int | None = None
    # Workbooks: the sheet to read (None: the first visible one).
    sheet: str | None = None
    # What the caller left unset, for engine/shapes.py to decide from the file's first bytes
    # (the fields above then hold the defaults): the format, the delimiter, and the encoding
    # (a byte order mark, else utf-8, else the first of fallback_encodings that fits).
    detect_format: bool = False
    sniff_delimiter: bool = False
    detect_encoding: bool = False
    fallback_encodings: tuple[str, ...] = ()


class ParsedRow(NamedTuple):
    """One data row: 1-based row number, the line it starts on, its fields as text in the
    order of the file's columns (see FileColumns), or its error. (A NamedTuple: a million
    of these are made per million rows, and tuples are the cheapest.)"""

    row_number: int
    line_number: int
    values: list[str]
    error: RowError | None = None


@dataclass
class FileColumns:
    """The file's column names in order, and at which positions each import-type column is.

    A CSV header gives each column one position; JSON Lines may spell one column several
    ways (aliases) in different lines, hence a list.
    """

    names: list[str] = field(default_factory=list)
    positions: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, names: list[str], import_type: ImportType) -> FileColumns:
        """The columns of a file whose names are known (e.g. stored with its job)."""
        columns = cls()
        for name in names:
            columns.add(name, import_type)
        return columns

    def add(self, name: str, import_type: ImportType) -> None:
        """Records the next column name the file uses."""
        self.names.append(name)
        column = import_type.resolve_header(name)
        if column is not None:
            self.positions.setdefault(column.name, []).append(len(self.names) - 1)


def required_columns(import_type: ImportType, mode: ImportMode) -> list[str]:
    """The columns a file's header must have for this mode."""
    if mode in (ImportMode.UPDATE, ImportMode.DELETE):
        return list(import_type.key)
    return [
        c.name
        for c in import_type.columns
        if c.name in import_type.key or (c.required and c.default is None)
    ]


def open_text(binary: io.RawIOBase, encoding: str) -> io.TextIOWrapper:
    """A text stream over the file, gunzipping it when it starts with the gzip magic."""
    codec = ENCODINGS.get(encoding.lower())
    if codec is None:
        raise FileError("UNSUPPORTED_ENCODING", f"encoding {encoding!r} is not utf-8 or latin-1")
    return io.TextIOWrapper(open_binary(binary), encoding=codec, errors="strict", newline="")


def open_binary(binary: io.RawIOBase) -> io.BufferedReader[Any]:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    buffered = io.BufferedReader(_Prefixed(binary, len(GZIP_MAGIC)))
    if buffered.peek(len(GZIP_MAGIC))[: len(GZIP_MAGIC)] == GZIP_MAGIC:
        return io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"))
    return buffered


def parse_rows(
    binary: io.RawIOBase,
    options: ParseOptions,
    import_type: ImportType,
    mode: ImportMode,
    columns: FileColumns,
) -> Iterator[ParsedRow]:
    """The file's data rows in order; fills `columns` as the header (or JSON keys) is read.

    Raises FileError for a file that cannot be read as a whole.
    """
    with file_errors(options):
        text = open_text(binary, options.encoding)
        if options.format is FileFormat.CSV:
            state = CsvState.start(options, import_type, columns)
            yield from csv_rows(text, options, import_type, mode, columns, state)
            state.finish()
        else:
            lines = _lines(text, options.max_chars, CsvState())
            rows = _jsonl_rows(lines, options, import_type, mode, columns)
            yield from limited(rows, options, columns)


def csv_rows(
    text: io.TextIOBase,
    options: ParseOptions,
    import_type: ImportType,
    mode: ImportMode,
    columns: FileColumns,
    state: CsvState,
) -> Iterator[ParsedRow]:
    """The CSV rows of `text`, a part of a file that starts where `state` stands (a record
    boundary), moving `state` on. The caller calls `state.finish()` at the file's end."""
    lines = _lines(text, options.max_chars, state)
    rows = _csv_rows(lines, options, import_type, mode, columns, state)
    yield from limited(rows, options, columns)


@contextlib.contextmanager
def file_errors(options: ParseOptions) -> Iterator[None]:
    """Turns failures to decode or gunzip the file into its FileError."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise FileError(
            "INVALID_ENCODING",
            f"the file is not valid {options.encoding}: byte 0x{error.object[error.start]:02x}"
            f" cannot be decoded ({error.reason})",
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise FileError("INVALID_GZIP", f"the gzip stream is broken: {error}") from None


def limited(
    rows: Iterator[ParsedRow], options: ParseOptions, columns: FileColumns
) -> Iterator[ParsedRow]:
    """The rows up to max_rows, each one storable (see _storable)."""
    for row in rows:
        if options.max_rows is not None and row.row_number > options.max_rows:
            raise FileError("TOO_MANY_ROWS", f"the file has more than {options.max_rows} rows")
        if _unstorable("".join(row.values)) or (
            row.error is not None and _unstorable(row.error.value)
        ):
            row = _storable(row, columns.names)
        yield row


@dataclass
class CsvState:
    """Where the reading of a file stands: its header once read, the rows, lines and
    characters read so far. Lets a file be read in parts, each from a record boundary."""

    header: list[str] | None = None
    rows: int = 0
    lines: int = 0
    chars: int = 0

    @classmethod
    def start(
        cls, options: ParseOptions, import_type: ImportType, columns: FileColumns
    ) -> CsvState:
        """The state at the start of a CSV file (a file without a header row takes the
        import type's column order)."""
        if len(options.delimiter) != 1 or len(options.quote) != 1:
            raise FileError("BAD_CSV_OPTIONS", "delimiter and quote must be one character each")
        state = cls()
        if not options.header:
            state.header = [c.name for c in import_type.columns]
            for name in state.header:
                columns.add(name, import_type)
        return state

    def finish(self) -> None:
        """Checks the file, once read to its end, had a header."""
        if self.header is None:
            raise FileError("EMPTY_FILE", "the file is empty: no header row")


class _Prefixed(io.RawIOBase):
    """A raw stream whose first read returns at least `size` bytes (unless the stream is
    shorter), so that a magic number split over two upload pieces is still seen whole."""

    def __init__(self, raw: io.RawIOBase, size: int) -> None:
        self._raw = raw
        self._head = b""
        while len(self._head) < size and (more := raw.read(size - len(self._head))):
            self._head += more

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        return self._raw.readinto(buffer) or 0


def _lines(text: io.TextIOBase, max_chars: int | None, state: CsvState) -> Iterator[str]:
    """The file's lines, refusing what no row may hold: overlong lines, and more text than
    `max_chars` in all (a decompression bomb). Counts them in `state`."""
    while line := text.readline(MAX_LINE_CHARS + 1):
        state.lines += 1
        number = state.lines
        if len(line) > MAX_LINE_CHARS:
            raise FileError(
                "LINE_TOO_LONG", f"line {number} is longer than {MAX_LINE_CHARS} characters"
            )
        state.chars += len(line)
        if max_chars is not None and state.chars > max_chars:
            raise FileError("FILE_TOO_LARGE", f"the file holds more than {max_chars} characters")
        yield line


def _csv_rows(
    text: Iterator[str],
    options: ParseOptions,
    import_type: ImportType,
    mode: ImportMode,
    columns: FileColumns,
    state: CsvState,
) -> Iterator[ParsedRow]:
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(text, delimiter=options.delimiter, quotechar=options.quote, strict=True)
    while True:
        start_line = state.lines + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise FileError("MALFORMED_CSV", _csv_problem(error, start_line)) from None
        if not fields or fields == [""]:
            continue  # blank line
        if state.header is None:
            state.header = [f.strip() for f in fields]
            check_header(state.header, import_type, mode, columns)
            continue
        state.rows += 1
        if len(fields) != len(state.header):
            wrong = wrong_field_count(fields, state.header, options)
            yield ParsedRow(state.rows, start_line, fields, wrong)
        else:
            yield ParsedRow(state.rows, start_line, fields)


def wrong_field_count(fields: list[str], header: list[str], options: ParseOptions) -> RowError:
    """The error of a CSV row with more or fewer fields than the header."""
    return RowError(
        "WRONG_FIELD_COUNT",
        "",
        options.delimiter.join(fields)[:MAX_EXCERPT_CHARS],
        f"the row has {len(fields)} fields, the header has {len(header)}",
    )


def _csv_problem(error: csv.Error, start_line: int) -> str:
    problem = str(error)
    if "unexpected end of data" in problem or "field larger than field limit" in problem:
        return f"unbalanced quote in the row starting at line {start_line}"
    return f"malformed CSV in the row starting at line {start_line}: {problem}"


def check_header(
    header: list[str], import_type: ImportType, mode: ImportMode, columns: FileColumns
) -> None:
    """Records a header row's columns; FileError for a name PostgreSQL cannot hold, a column
    named twice, or a required column missing."""
    seen: dict[str, int] = {}
    for position, name in enumerate(header, 1):
        if problem := _unstorable(name):
            raise FileError(
                "INVALID_CHARACTER", f"column {position} of the header contains {problem}"
            )
        column = import_type.resolve_header(name)
        canonical = column.name if column else name.lower()
        if canonical in seen:
            raise FileError(
                "DUPLICATE_HEADER",
                f"column {excerpt(canonical)} appears twice in the header"
                f" (columns {seen[canonical]} and {position})",
            )
        seen[canonical] = position
        columns.add(name, import_type)
    missing = [c for c in required_columns(import_type, mode) if c not in columns.positions]
    if missing:
        raise FileError(
            "MISSING_COLUMN", f"the header is missing required column(s): {', '.join(missing)}"
        )


def _jsonl_rows(
    text: Iterator[str],
    options: ParseOptions,
    import_type: ImportType,
    mode: ImportMode,
    columns: FileColumns,
) -> Iterator[ParsedRow]:
    position: dict[str, int] = {}
    row_number = 0
    for line_number, line in enumerate(text, 1):
        if not line.strip():
            continue
        row_number += 1
        try:
            value = json.loads(line, parse_float=Decimal)  # numbers keep every digit
        except (ValueError, RecursionError) as error:
            problem = RowError("INVALID_JSON", "", _excerpt(line), _json_problem(error))
            yield ParsedRow(row_number, line_number, [], problem)
            continue
        if not isinstance(value, dict):
            problem = RowError("NOT_AN_OBJECT", "", _excerpt(line), "a line must be a JSON object")
            yield ParsedRow(row_number, line_number, [], problem)
            continue
        bad_key: RowError | None = None
        for name in value:
            if name not in position:
                if unstorable := _unstorable(name):
                    # The key cannot become a column: the row fails whole, shown as read.
                    message = f"a key contains {unstorable}, which PostgreSQL text cannot hold"
                    bad_key = RowError("INVALID_CHARACTER", "", _excerpt(line), message)
                    break
                position[name] = len(position)
                columns.add(name, import_type)
        if bad_key is not None:
            yield ParsedRow(row_number, line_number, [], bad_key)
            continue
        fields = [""] * len(position)
        for name, item in value.items():
            fields[position[name]] = json_text(item)
        yield ParsedRow(row_number, line_number, fields)
    if row_number == 0:
        raise FileError("EMPTY_FILE", "the file is empty: no JSON lines")


def _json_problem(error: ValueError | RecursionError) -> str:
    """Why json.loads refused a line. Besides bad syntax (JSONDecodeError), an integer longer
    than int() reads and nesting deeper than the stack are one bad line, not a crash."""
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON: {error.msg}"
    if isinstance(error, RecursionError):
        return "JSON nested too deeply to read"
    return f"a JSON integer of more than {sys.get_int_max_str_digits()} digits"


def json_text(value: Any) -> str:
    """A JSON value as the text a CSV cell would hold: null is empty, true is "true"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _excerpt(line: str) -> str:
    return line.strip()[:MAX_EXCERPT_CHARS]


def _unstorable(text: str) -> str | None:
    """What in the text PostgreSQL cannot hold, in words, or None."""
    if "\x00" in text:
        return "a NUL character"
    # CSV files (strictly decoded) never hold surrogates: the regex is for JSON escapes.
    if not text.isascii() and UNSTORABLE.search(text):
        return "a lone surrogate"
    return None


def _storable(row: ParsedRow, names: list[str]) -> ParsedRow:
    """The row with what PostgreSQL text cannot hold replaced by U+FFFD: failed, naming its
    first such field, unless it has failed already (its error's value is cleaned too)."""
    values = [UNSTORABLE.sub(REPLACEMENT, v) for v in row.values]
    if row.error is not None:
        error = replace(row.error, value=UNSTORABLE.sub(REPLACEMENT, row.error.value))
        return row._replace(values=values, error=error)
    position, problem = next((i, p) for i, v in enumerate(row.values) if (p := _unstorable(v)))
    error = RowError(
        "INVALID_CHARACTER",
        names[position],
        values[position],
        f"contains {problem} (shown as U+FFFD), which PostgreSQL text cannot hold",
    )
    return row._replace(values=values, error=error)
