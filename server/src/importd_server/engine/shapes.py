"""The shape of an upload, decided from its first bytes: a text file (CSV or JSON Lines, in
which encoding, with which delimiter), an XLSX or ODS workbook, or clearly something else
(an HTML page, a PDF, a ZIP archive...), which fails the job saying what it looks like.

Text files are handed to `blocks.read_blocks` as UTF-8 (transcoded as they stream when they
are in another encoding); workbooks are spooled to a temporary file, checked against zip
bombs, and read by calamine into the rows the CSV path yields. Runs in the parser thread.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any

import python_calamine

from importd_server.engine.blocks import Block, Chained, batched, read_blocks
from importd_server.engine.parsing import (
    CsvState,
    FileColumns,
    FileError,
    ParsedRow,
    ParseOptions,
    check_header,
    file_errors,
    limited,
    open_binary,
    wrong_field_count,
)
from importd_server.errors import excerpt
from importd_server.model import Dialect, FileFormat, ImportMode, ImportType

SAMPLE_BYTES = 64 * 1024
PIECE_BYTES = 1 << 20
DELIMITERS = (",", ";", "\t", "|")
SNIFF_RECORDS = 100

# The encodings a caller may name, canonical name -> Python codec, and other spellings.
ENCODINGS = {
    "utf-8": "utf-8",
    "utf-16": "utf-16",
    "utf-16-le": "utf-16-le",
    "utf-16-be": "utf-16-be",
    "utf-32": "utf-32",
    "utf-32-le": "utf-32-le",
    "utf-32-be": "utf-32-be",
    "latin-1": "latin-1",
    "iso-8859-15": "iso8859-15",
    "windows-1250": "cp1250",
    "windows-1251": "cp1251",
    "windows-1252": "cp1252",
}
ALIASES = {
    "utf8": "utf-8",
    "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be",
    "utf-32le": "utf-32-le",
    "utf-32be": "utf-32-be",
    "latin1": "latin-1",
    "iso-8859-1": "latin-1",
    "cp1250": "windows-1250",
    "cp1251": "windows-1251",
    "cp1252": "windows-1252",
}
# Encodings that spell ASCII as ASCII: a file read as utf-8 so far can switch to one of them.
FALLBACK_ENCODINGS = ("latin-1", "iso-8859-15", "windows-1250", "windows-1251", "windows-1252")
# Byte order marks, the longer first (UTF-32 LE's starts like UTF-16 LE's).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Files no one means as a table, by their first bytes.
MAGIC = (
    (b"%PDF-", "a PDF document"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "a legacy Office file (an .xls workbook, or a password-protected one)",
    ),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\xfd7zXZ\x00", "an xz-compressed file (importd unpacks gzip only)"),
    (b"\x28\xb5\x2f\xfd", "a Zstandard-compressed file (importd unpacks gzip only)"),
)
HTML_STARTS = ("<!doctype html", "<html", "<head", "<body", "<!--")
# A text file has few control characters; more than this share of the sample is binary.
MAX_CONTROL_SHARE = 0.05
MIN_BINARY_SAMPLE = 32
CONTROL_CHARACTERS = frozenset(chr(c) for c in [*range(32), 127]) - set("\t\n\r\f\v")

# Workbooks are read whole by calamine, so they are bounded unpacked, before reading:
# in all, in parts, and in how far a big part may be compressed (a zip bomb's mark).
MAX_WORKBOOK_BYTES = 256 * 1024**2
MAX_WORKBOOK_PARTS = 10_000
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR_BYTES = 1024**2
ODS_MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"
# Other ZIP-based documents, by a part only they have.
DOCUMENT_PARTS = (
    ("word/document.xml", "a Word document"),
    ("ppt/presentation.xml", "a PowerPoint presentation"),
    ("xl/workbook.bin", "an Excel binary workbook (.xlsb)"),
)
FORMAT_NAMES = {
    FileFormat.CSV: "CSV",
    FileFormat.JSONL: "JSON Lines",
    FileFormat.XLSX: "an XLSX workbook",
    FileFormat.ODS: "an ODS spreadsheet",
}
WORKBOOKS = (FileFormat.XLSX, FileFormat.ODS)


def encoding_name(name: str) -> str | None:
    """The canonical name of an encoding a caller may name (any case), or None."""
    wanted = name.strip().lower()
    wanted = ALIASES.get(wanted, wanted)
    return wanted if wanted in ENCODINGS else None


def fallback_list(names: str | None) -> tuple[str, ...]:
    """The fallback encodings of a comma-separated setting, canonical; ValueError for one
    that is unknown or does not spell ASCII as ASCII (a file cannot switch to it)."""
    found = []
    for name in filter(None, (n.strip() for n in (names or "").split(","))):
        canonical = encoding_name(name)
        if canonical not in FALLBACK_ENCODINGS:
            raise ValueError(
                f"fallback encoding {name!r} is not one of {', '.join(FALLBACK_ENCODINGS)}"
            )
        found.append(canonical)
    return tuple(found)


class FileReader:
    """Reads one upload whatever its shape; `dialect` says how, once known."""

    def __init__(
        self,
        options: ParseOptions,
        import_type: ImportType,
        mode: ImportMode,
        columns: FileColumns,
    ) -> None:
        self._options = options
        self._import_type = import_type
        self._mode = mode
        self._columns = columns
        self._dialect: Dialect | None = None
        self._decoded: _Decoded | None = None

    @property
    def dialect(self) -> Dialect | None:
        """How the file is read, once its first bytes are (the encoding as it stands: a
        file that was ASCII so far may still switch to a fallback encoding)."""
        if self._dialect is not None and self._decoded is not None:
            return replace(self._dialect, encoding=self._decoded.encoding)
        return self._dialect

    def blocks(self, binary: io.RawIOBase) -> Iterator[Block]:
        """The file's rows in blocks, as `blocks.read_blocks` gives them; fills the columns
        as the header is read. Raises FileError for a file that cannot be read as a whole."""
        options = self._options
        with file_errors(options):
            stream = open_binary(binary)
            gzipped = isinstance(stream.raw, gzip.GzipFile)
            head = _read_up_to(stream, SAMPLE_BYTES)
        if head.startswith(ZIP_MAGIC):
            yield from self._workbook(io.BufferedReader(Chained(head, stream)), gzipped)
            return
        looks_like = next((what for magic, what in MAGIC if head.startswith(magic)), None)
        if looks_like is not None:
            raise _wrong_type(looks_like, options)
        encoding, bom = _encoding(head, options)
        if options.detect_encoding and not bom and (order := _utf16_without_bom(head)):
            raise _wrong_type(
                "UTF-16 text without a byte order mark",
                options,
                f"set csv.encoding to utf-16-{order}",
            )
        complete = len(head) < SAMPLE_BYTES
        sample = head[bom:].decode(ENCODINGS[encoding], errors="replace")
        file_format = _text_format(sample, options)
        delimiter = options.delimiter
        if file_format is FileFormat.CSV and options.sniff_delimiter:
            delimiter = sniff_delimiter(sample, options.quote, complete) or delimiter
        # Every text file reaches the parsers as UTF-8, decoding errors located here.
        fallbacks = options.fallback_encodings if options.detect_encoding and not bom else ()
        body = io.BufferedReader(Chained(head[bom:], stream))
        self._decoded = _Decoded(body, encoding, fallbacks, bom)
        self._dialect = Dialect(
            format=file_format,
            encoding=encoding,
            delimiter=delimiter if file_format is FileFormat.CSV else None,
            gzip=gzipped,
            detected=_detected(options, file_format),
        )
        resolved = replace(options, format=file_format, delimiter=delimiter, encoding="utf-8")
        yield from read_blocks(
            self._decoded, resolved, self._import_type, self._mode, self._columns
        )

    def _workbook(self, body: io.BufferedReader[Any], gzipped: bool) -> Iterator[Block]:
        """A workbook's rows: spooled to a temporary file (calamine reads files whole),
        checked against zip bombs, then read by calamine."""
        options = self._options
        limit = min(MAX_WORKBOOK_BYTES, options.max_chars or MAX_WORKBOOK_BYTES)
        with tempfile.NamedTemporaryFile(prefix="importd-", suffix=".zip") as spool:
            with file_errors(options):
                size = 0
                while piece := body.read(PIECE_BYTES):
                    size += len(piece)
                    if size > limit:
                        raise FileError(
                            "FILE_TOO_LARGE", f"the workbook is larger than {limit} bytes"
                        )
                    spool.write(piece)
            spool.flush()
            file_format = _workbook_format(spool, options)
            if not options.detect_format and file_format is not options.format:
                raise _wrong_type(FORMAT_NAMES[file_format], options)
            try:
                with python_calamine.CalamineWorkbook.from_path(spool.name) as book:
                    sheet = _sheet(book, options.sheet)
                    self._dialect = Dialect(
                        format=file_format,
                        sheet=sheet.name,
                        gzip=gzipped,
                        detected=_detected(options, file_format),
                    )
                    rows = self._sheet_rows(sheet.iter_rows())
                    yield from batched(limited(rows, options, self._columns))
            except python_calamine.CalamineError as error:
                raise _unreadable_workbook(error, file_format) from None

    def _sheet_rows(self, cells: Iterator[Sequence[object]]) -> Iterator[ParsedRow]:
        """A sheet's rows as the CSV path gives them: the first row with a value is the
        header (unless the file has none), blank rows are skipped, and each row's line
        number is its number in the sheet."""
        state = CsvState.start(self._options, self._import_type, self._columns)
        # calamine's rows start at the sheet's first row, so the position is the number.
        for number, row in enumerate(cells, 1):
            values = [cell if type(cell) is str else cell_text(cell) for cell in row]
            while values and not values[-1]:
                values.pop()  # a sheet is as wide as its widest row
            if not values:
                continue
            if state.header is None:
                state.header = [v.strip() for v in values]
                check_header(state.header, self._import_type, self._mode, self._columns)
                continue
            state.rows += 1
            width = len(state.header)
            if len(values) > width:
                wrong = wrong_field_count(values, state.header, self._options)
                yield ParsedRow(state.rows, number, values, wrong)
            else:
                yield ParsedRow(state.rows, number, values + [""] * (width - len(values)))
        state.finish()


def cell_text(value: object) -> str:
    """A workbook cell as the text a CSV cell would hold: numbers as written (at most 15
    significant digits, as spreadsheets keep them, never an exponent), true/false, ISO 8601
    dates and times, durations as hours:minutes:seconds."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        number = Decimal(format(value, ".15g"))
        return "0" if number.is_zero() else format(number, "f")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        sign = "-" if value < timedelta(0) else ""
        minutes, seconds = divmod(round(abs(value).total_seconds()), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{sign}{hours}:{minutes:02d}:{seconds:02d}"
    return str(value)


def sniff_delimiter(sample: str, quote: str, complete: bool) -> str | None:
    """The delimiter among , ; tab | that splits the sample's first records most alike: the
    most records with as many fields as the first one, then the most fields; ties go to the
    earlier in that list. None when none makes two fields of the first record."""
    if not complete and "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]  # whole lines only
    best: tuple[float, int] | None = None
    chosen = None
    for delimiter in DELIMITERS:
        if delimiter == quote:
            continue
        widths = _record_widths(sample, delimiter, quote)
        if not widths or widths[0] < 2:
            continue
        score = (sum(w == widths[0] for w in widths) / len(widths), widths[0])
        if best is None or score > best:
            best, chosen = score, delimiter
    return chosen


def _record_widths(sample: str, delimiter: str, quote: str) -> list[int]:
    """How many fields each of the sample's first records has, read with `delimiter`."""
    reader = csv.reader(io.StringIO(sample), delimiter=delimiter, quotechar=quote, strict=True)
    widths = []
    try:
        for fields in itertools.islice(reader, SNIFF_RECORDS):
            if fields and fields != [""]:
                widths.append(len(fields))
    except csv.Error as error:
        # A quoted field the sample cuts short ends it; a quote followed by something else
        # than the delimiter means this delimiter splits records wrongly: one unlike the rest.
        if "unexpected end of data" not in str(error):
            widths.append(0)
    return widths


def _read_up_to(stream: io.BufferedReader[Any], size: int) -> bytes:
    head = bytearray()
    while len(head) < size and (piece := stream.read1(size - len(head))):
        head += piece
    return bytes(head)


def _encoding(head: bytes, options: ParseOptions) -> tuple[str, int]:
    """The encoding to read the file in, and the length of its byte order mark (skipped):
    the caller's, else the one a byte order mark says, else utf-8. A generic utf-16 or
    utf-32 takes its byte order from the mark, else little-endian (as Windows writes)."""
    bom = next(((name, len(mark)) for mark, name in BOMS if head.startswith(mark)), None)
    if options.detect_encoding:
        return bom or ("utf-8", 0)
    wanted = encoding_name(options.encoding) or "utf-8"
    if bom is not None and bom[0] in (wanted, f"{wanted}-le", f"{wanted}-be"):
        return bom
    if wanted in ("utf-16", "utf-32"):
        return f"{wanted}-le", 0
    return wanted, 0


def _text_format(sample: str, options: ParseOptions) -> FileFormat:
    """The format of a text file: the caller's, or JSON Lines when its first line is a JSON
    object and the caller left the format unset. FileError for what is clearly no table."""
    start = sample.lstrip().lower()
    if start.startswith(HTML_STARTS):
        raise _wrong_type("an HTML page", options)
    if start.startswith("<?xml"):
        raise _wrong_type("an XML document", options)
    if start.startswith("[") and start[1:].lstrip()[:1] in ("{", "[", '"', "]"):
        raise _wrong_type("a JSON array", options, "importd reads JSON Lines, one object a line")
    if len(sample) >= MIN_BINARY_SAMPLE:
        controls = sum(sample.count(c) for c in CONTROL_CHARACTERS)
        if controls > MAX_CONTROL_SHARE * len(sample):
            raise _wrong_type("binary data", options)
    json_object = start.startswith("{") and start[1:].lstrip()[:1] in ('"', "}")
    if options.detect_format:
        # The file name's guess holds unless the bytes say otherwise.
        return (
            FileFormat.JSONL
            if json_object or options.format is FileFormat.JSONL
            else (FileFormat.CSV)
        )
    if options.format in WORKBOOKS:
        raise _wrong_type("a text file", options)
    if options.format is FileFormat.CSV and json_object:
        raise _wrong_type("JSON Lines", options)
    return options.format


def _detected(options: ParseOptions, file_format: FileFormat) -> tuple[str, ...]:
    """What importd decided itself because the caller left it unset."""
    text = file_format not in WORKBOOKS
    return tuple(
        name
        for name, decided in (
            ("format", options.detect_format),
            ("encoding", options.detect_encoding and text),
            ("delimiter", options.sniff_delimiter and file_format is FileFormat.CSV),
            ("sheet", options.sheet is None and not text),
        )
        if decided
    )


def _wrong_type(looks_like: str, options: ParseOptions, hint: str = "") -> FileError:
    expected = (
        "CSV, JSON Lines, XLSX or ODS" if options.detect_format else FORMAT_NAMES[options.format]
    )
    hint = f": {hint}" if hint else ""
    return FileError("WRONG_FILE_TYPE", f"the file looks like {looks_like}, not {expected}{hint}")


def _utf16_without_bom(head: bytes) -> str | None:
    """ "le" or "be" when the sample reads as mostly-ASCII UTF-16 without a byte order mark
    (every other byte zero), else None."""
    sample = head[:4096]
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < MIN_BINARY_SAMPLE:
        return None
    if odd.count(0) > 0.8 * len(odd) and even.count(0) < 0.05 * len(even):
        return "le"
    if even.count(0) > 0.8 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "be"
    return None


def _workbook_format(spool: IO[bytes], options: ParseOptions) -> FileFormat:
    """What a ZIP archive is, XLSX or ODS, checked against zip bombs before calamine reads
    it; FileError for another kind of archive, or one too big unpacked."""
    try:
        with zipfile.ZipFile(spool) as archive:
            parts = archive.infolist()
            names = {part.filename for part in parts}
            xlsx = "[Content_Types].xml" in names and "xl/workbook.bin" not in names
            if xlsx and any(name.startswith("xl/") for name in names):
                file_format = FileFormat.XLSX
            elif "mimetype" in names and _starts(archive, "mimetype", ODS_MIMETYPE):
                file_format = FileFormat.ODS
            else:
                what = next((w for part, w in DOCUMENT_PARTS if part in names), None)
                raise _wrong_type(what or _archive(parts), options)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError):
        # (OSError: a corrupt directory can send zipfile seeking before the file's start.)
        raise _wrong_type("a ZIP archive that cannot be read", options) from None
    _check_unpacked_sizes(spool, parts)
    return file_format


def _starts(archive: zipfile.ZipFile, name: str, prefix: bytes) -> bool:
    """Whether a part starts with `prefix` (reading no more of it: it may be a bomb)."""
    with archive.open(name) as part:
        return part.read(len(prefix)) == prefix


def _archive(parts: list[zipfile.ZipInfo]) -> str:
    names = [p.filename for p in parts if not p.is_dir()]
    if not names:
        return "an empty ZIP archive"
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"a ZIP archive (of {excerpt(names[0])}{more})"


def _check_unpacked_sizes(spool: IO[bytes], parts: list[zipfile.ZipInfo]) -> None:
    """Refuses a workbook that unpacks to too much, as its parts declare and as they really
    inflate (a zip bomb may declare small sizes): at most MAX_WORKBOOK_BYTES in all, and
    no big part compressed more than MAX_COMPRESSION_RATIO to 1."""
    too_large = FileError(
        "WORKBOOK_TOO_LARGE", f"the workbook unpacks to more than {MAX_WORKBOOK_BYTES} bytes"
    )
    if len(parts) > MAX_WORKBOOK_PARTS:
        raise FileError(
            "WORKBOOK_TOO_LARGE", f"the workbook has more than {MAX_WORKBOOK_PARTS} parts"
        )
    if sum(part.file_size for part in parts) > MAX_WORKBOOK_BYTES:
        raise too_large
    left = MAX_WORKBOOK_BYTES
    for part in parts:
        size = _inflated_size(spool, part, min(left, part.file_size) + 1)
        if size > left:
            raise too_large
        if size > part.file_size:
            raise FileError(
                "WORKBOOK_TOO_LARGE",
                f"the workbook's part {excerpt(part.filename)} unpacks to more than it declares",
            )
        if size > RATIO_FLOOR_BYTES and size > MAX_COMPRESSION_RATIO * part.compress_size:
            raise FileError(
                "WORKBOOK_TOO_LARGE",
                f"the workbook's part {excerpt(part.filename)} is compressed more than"
                f" {MAX_COMPRESSION_RATIO} to 1, as zip bombs are",
            )
        left -= size


def _inflated_size(spool: IO[bytes], part: zipfile.ZipInfo, cap: int) -> int:
    """How many bytes a part really unpacks to, counted up to `cap`, in small pieces."""
    if part.flag_bits & 0x1:
        raise FileError("INVALID_WORKBOOK", "the workbook is encrypted")
    local = b""
    if part.header_offset >= 0:  # a corrupt directory may say otherwise
        spool.seek(part.header_offset)
        local = spool.read(30)
    if len(local) < 30 or not local.startswith(b"PK\x03\x04"):
        raise FileError("INVALID_WORKBOOK", "the workbook's ZIP structure is broken")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    spool.seek(part.header_offset + 30 + name_length + extra_length)
    if part.compress_type == zipfile.ZIP_STORED:
        return part.compress_size
    if part.compress_type != zipfile.ZIP_DEFLATED:
        raise FileError("INVALID_WORKBOOK", "the workbook uses a compression other than deflate")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    left, size = part.compress_size, 0
    try:
        while left > 0 and size < cap and not inflater.eof:
            data = spool.read(min(left, SAMPLE_BYTES))
            if not data:
                break
            left -= len(data)
            while data and size < cap:
                size += len(inflater.decompress(data, SAMPLE_BYTES))
                data = inflater.unconsumed_tail
    except zlib.error:
        raise FileError("INVALID_WORKBOOK", "the workbook's ZIP data is corrupt") from None
    return size


def _sheet(
    book: python_calamine.CalamineWorkbook, wanted: str | None
) -> python_calamine.CalamineSheet:
    """The sheet asked for by name (exactly, else ignoring case and surrounding spaces), or
    the first visible worksheet."""
    names = book.sheet_names
    if wanted is not None:
        folded = wanted.strip().casefold()
        name = next((n for n in names if n == wanted), None) or next(
            (n for n in names if n.strip().casefold() == folded), None
        )
        if name is None:
            shown = ", ".join(excerpt(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
            raise FileError(
                "SHEET_NOT_FOUND", f"the workbook has no sheet {excerpt(wanted)} (sheets: {shown})"
            )
        return book.get_sheet_by_name(name)
    for metadata in book.sheets_metadata:
        visible = metadata.visible == python_calamine.SheetVisibleEnum.Visible
        if visible and metadata.typ == python_calamine.SheetTypeEnum.WorkSheet:
            return book.get_sheet_by_name(metadata.name)
    raise FileError("SHEET_NOT_FOUND", "the workbook has no visible worksheet")


def _unreadable_workbook(error: Exception, file_format: FileFormat) -> FileError:
    if isinstance(error, python_calamine.PasswordError):
        return FileError("INVALID_WORKBOOK", "the workbook is password-protected")
    problem = excerpt(str(error), 200)
    return FileError(
        "INVALID_WORKBOOK", f"{FORMAT_NAMES[file_format]} that cannot be read: {problem}"
    )


class _Decoded(io.RawIOBase):
    """A text stream's bytes as UTF-8, decoded as they are read.

    Read as utf-8 with `fallbacks`, ASCII passes through untouched; at the first byte that
    is not UTF-8, if everything before it was ASCII, the file is read in the first fallback
    that decodes it (the ASCII already read means the same in it), else it is refused.
    """

    def __init__(
        self, source: io.BufferedReader[Any], encoding: str, fallbacks: Sequence[str], start: int
    ) -> None:
        self.encoding = encoding
        self._source = source
        self._decoder = codecs.getincrementaldecoder(ENCODINGS[encoding])("strict")
        self._fallbacks = fallbacks
        self._offset = start  # of the next byte read, in the file (after gunzipping)
        self._ascii = True
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            piece = self._source.read1(PIECE_BYTES)
            out = self._decode(piece, final=not piece)
            self._offset += len(piece)
            if not piece and not out:
                return 0
            self._out = memoryview(out)
        size = min(len(buffer), len(self._out))
        buffer[:size] = self._out[:size]
        self._out = self._out[size:]
        return size

    def _decode(self, piece: bytes, final: bool) -> bytes:
        utf8 = self.encoding == "utf-8"
        held = utf8 and self._decoder.getstate()[0]  # a character's start, from before
        if utf8 and self._ascii and not held and piece.isascii():
            return piece
        try:
            text = self._decoder.decode(piece, final)
        except UnicodeDecodeError as error:
            # error.object is what the decoder held back from the last piece, then this one.
            if self._ascii and self._fallbacks and error.object[: error.start].isascii():
                return self._fall_back(error, piece, final)
            raise self._invalid(error, piece) from None
        if not utf8:
            return text.encode()
        if not text.isascii():
            self._ascii = False  # no fallback after valid UTF-8 that is not ASCII
        # Whole characters only, as decoded, unless the piece is exactly that.
        return piece if not held and not self._decoder.getstate()[0] else text.encode()

    def _fall_back(self, error: UnicodeDecodeError, piece: bytes, final: bool) -> bytes:
        for name in self._fallbacks:
            decoder = codecs.getincrementaldecoder(ENCODINGS[name])("strict")
            try:
                text = decoder.decode(error.object, final)
            except UnicodeDecodeError:
                continue
            self.encoding, self._decoder, self._fallbacks = name, decoder, ()
            return text.encode()
        tried = ", ".join(["utf-8", *self._fallbacks])
        raise FileError(
            "INVALID_ENCODING",
            f"the file is none of {tried}: byte 0x{error.object[error.start]:02x} at offset"
            f" {self._at(error, piece)} cannot be decoded",
        )

    def _invalid(self, error: UnicodeDecodeError, piece: bytes) -> FileError:
        return FileError(
            "INVALID_ENCODING",
            f"the file is not valid {self.encoding}: byte 0x{error.object[error.start]:02x}"
            f" at offset {self._at(error, piece)} cannot be decoded ({error.reason})",
        )

    def _at(self, error: UnicodeDecodeError, piece: bytes) -> int:
        """The offset in the file of the byte the decoder refused."""
        held = len(error.object) - len(piece)  # the start of a character, from before
        return self._offset - held + error.start
