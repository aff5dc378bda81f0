"""File parsing: bytes in, rows out, one pass, never the whole file in memory.

Runs in a worker thread (see `staging`): the csv module pulls lines from a blocking reader,
which is what lets a quoted field span lines while the file is still arriving.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from importd_server.engine.import_types import ImportType
from importd_server.model import FileFormat, ImportMode, RowError

GZIP_MAGIC = b"\x1f\x8b"
ENCODINGS = {"utf-8": "utf-8-sig", "utf8": "utf-8-sig", "latin-1": "latin-1", "latin1": "latin-1"}
MAX_FIELD_CHARS = 1 << 20


class FileError(Exception):
    """The file as a whole cannot be imported; `reason` is stable, the message precise."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ParseOptions:
    """How to read a file."""

    format: FileFormat = FileFormat.CSV
    delimiter: str = ","
    quote: str = '"'
    header: bool = True
    encoding: str = "utf-8"
    max_rows: int | None = None


@dataclass(frozen=True)
class ParsedRow:
    """One data row: 1-based row number, the line it starts on, its raw fields, or its error."""

    row_number: int
    line_number: int
    raw: dict[str, Any]
    error: RowError | None = None


@dataclass
class FileColumns:
    """The file's column names in order, and which import-type column each one means."""

    names: list[str] = field(default_factory=list)
    mapping: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, import_type: ImportType) -> None:
        """Records a column name the file uses."""
        self.names.append(name)
        column = import_type.resolve_header(name)
        if column is not None:
            self.mapping.setdefault(column.name, []).append(name)


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
    buffered = io.BufferedReader(binary)
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        unzipped = io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"))
        return io.TextIOWrapper(unzipped, encoding=codec, errors="strict", newline="")
    return io.TextIOWrapper(buffered, encoding=codec, errors="strict", newline="")


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
    text = open_text(binary, options.encoding)
    rows = _csv_rows if options.format is FileFormat.CSV else _jsonl_rows
    try:
        for row in rows(text, options, import_type, mode, columns):
            if options.max_rows is not None and row.row_number > options.max_rows:
                raise FileError("TOO_MANY_ROWS", f"the file has more than {options.max_rows} rows")
            yield row
    except UnicodeDecodeError as error:
        raise FileError(
            "INVALID_ENCODING",
            f"the file is not valid {options.encoding}: byte 0x{error.object[error.start]:02x}"
            f" cannot be decoded ({error.reason})",
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise FileError("INVALID_GZIP", f"the gzip stream is broken: {error}") from None


def _csv_rows(
    text: io.TextIOWrapper,
    options: ParseOptions,
    import_type: ImportType,
    mode: ImportMode,
    columns: FileColumns,
) -> Iterator[ParsedRow]:
    if len(options.delimiter) != 1 or len(options.quote) != 1:
        raise FileError("BAD_CSV_OPTIONS", "delimiter and quote must be one character each")
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(text, delimiter=options.delimiter, quotechar=options.quote, strict=True)
    header: list[str] | None = None
    if not options.header:
        header = [c.name for c in import_type.columns]
        for name in header:
            columns.add(name, import_type)
    row_number = 0
    line_end = 0
    while True:
        start_line = line_end + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise FileError("MALFORMED_CSV", _csv_problem(error, start_line)) from None
        line_end = reader.line_num
        if not fields or fields == [""]:
            continue  # blank line
        if header is None:
            header = [f.strip() for f in fields]
            _check_header(header, import_type, mode, columns)
            continue
        row_number += 1
        raw = dict(zip(header, fields, strict=False))
        if len(fields) != len(header):
            raw.update({f"#{i + 1}": f for i, f in enumerate(fields) if i >= len(header)})
            wrong_count = RowError(
                "WRONG_FIELD_COUNT",
                "",
                str(len(fields)),
                f"the row has {len(fields)} fields, the header has {len(header)}",
            )
            yield ParsedRow(row_number, start_line, raw, wrong_count)
        else:
            yield ParsedRow(row_number, start_line, raw)
    if header is None:
        raise FileError("EMPTY_FILE", "the file is empty: no header row")


def _csv_problem(error: csv.Error, start_line: int) -> str:
    problem = str(error)
    if "unexpected end of data" in problem or "field larger than field limit" in problem:
        return f"unbalanced quote in the row starting at line {start_line}"
    return f"malformed CSV in the row starting at line {start_line}: {problem}"


def _check_header(
    header: list[str], import_type: ImportType, mode: ImportMode, columns: FileColumns
) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(header, 1):
        column = import_type.resolve_header(name)
        canonical = column.name if column else name.lower()
        if canonical in seen:
            raise FileError(
                "DUPLICATE_HEADER",
                f"column {canonical!r} appears twice in the header"
                f" (columns {seen[canonical]} and {position})",
            )
        seen[canonical] = position
        columns.add(name, import_type)
    missing = [c for c in required_columns(import_type, mode) if c not in columns.mapping]
    if missing:
        raise FileError(
            "MISSING_COLUMN", f"the header is missing required column(s): {', '.join(missing)}"
        )


def _jsonl_rows(
    text: io.TextIOWrapper,
    options: ParseOptions,
    import_type: ImportType,
    mode: ImportMode,
    columns: FileColumns,
) -> Iterator[ParsedRow]:
    known: set[str] = set()
    row_number = 0
    for line_number, line in enumerate(text, 1):
        if not line.strip():
            continue
        row_number += 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield ParsedRow(
                row_number,
                line_number,
                {"_line": line.rstrip("\r\n")},
                RowError("INVALID_JSON", "", line.strip()[:200], f"not valid JSON: {error.msg}"),
            )
            continue
        if not isinstance(value, dict):
            yield ParsedRow(
                row_number,
                line_number,
                {"_line": line.rstrip("\r\n")},
                RowError("NOT_AN_OBJECT", "", line.strip()[:200], "a line must be a JSON object"),
            )
            continue
        for name in value:
            if name not in known:
                known.add(name)
                columns.add(name, import_type)
        yield ParsedRow(row_number, line_number, value)
    if row_number == 0 and not known:
        raise FileError("EMPTY_FILE", "the file is empty: no JSON lines")
