"""Parsing throughput by file shape: engine/shapes.py's FileReader over the same contacts in
UTF-8 (encoding detected), Latin-1 (transcoded to the fast path) and UTF-16 (by its BOM),
against the reference parser reading Latin-1 itself, and an XLSX workbook through calamine.

    uv run python -m bench.file_shapes [rows]
"""

from __future__ import annotations

import codecs
import io
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from importd_server.engine.blocks import Block, ColumnBlock, read_blocks
from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.parsing import FileColumns, ParseOptions
from importd_server.engine.shapes import FileReader
from importd_server.model import ImportMode
from tests.spreadsheets import xlsx

CONTACTS = load_import_types(default_types_dir())["contacts"]
PIECE = 256 * 1024  # what an upload's pieces are, about
DETECT = ParseOptions(
    detect_format=True,
    sniff_delimiter=True,
    detect_encoding=True,
    fallback_encodings=("windows-1252",),
)


class Upload(io.RawIOBase):
    """The file in pieces, as the stager's feed hands it to the parser."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), PIECE, len(self._data) - self._at)
        buffer[:size] = self._data[self._at : self._at + size]
        self._at += size
        return size


def rows_of(blocks: Iterator[Block]) -> int:
    return sum(
        b.table.num_rows + len(b.odd_rows) if isinstance(b, ColumnBlock) else len(b) for b in blocks
    )


def shaped(options: ParseOptions) -> Callable[[bytes], int]:
    def read(data: bytes) -> int:
        reader = FileReader(options, CONTACTS, ImportMode.UPSERT, FileColumns())
        return rows_of(reader.blocks(Upload(data)))

    return read


def reference_latin1(data: bytes) -> int:
    options = ParseOptions(encoding="latin-1")
    return rows_of(read_blocks(Upload(data), options, CONTACTS, ImportMode.UPSERT, FileColumns()))


def main(rows: int) -> None:
    header = ["email", "first_name", "last_name", "phone", "score"]
    table = [
        [f"user{i}@example.com", f"Jürgen{i}", f"Müller{i}", f"+4915112{i:06d}", str(i % 100)]
        for i in range(rows)
    ]
    text = "\n".join(",".join(r) for r in [header, *table]) + "\n"
    cases: list[tuple[str, Callable[[bytes], int], bytes]] = [
        ("UTF-8, encoding detected", shaped(DETECT), text.encode()),
        ("Latin-1, fallback, transcoded", shaped(DETECT), text.encode("latin-1")),
        ("Latin-1, reference parser (before)", reference_latin1, text.encode("latin-1")),
        (
            "UTF-16 LE with BOM, transcoded",
            shaped(DETECT),
            codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
        ),
        ("XLSX (calamine)", shaped(DETECT), xlsx({"Contacts": [header, *table]})),
    ]
    print(f"{rows:,} rows")
    for name, read, data in cases:
        timings = []
        for _ in range(3):  # the best of three: the first warms Arrow up
            start = time.perf_counter()
            assert read(data) == rows
            timings.append(time.perf_counter() - start)
        seconds = min(timings)
        print(
            f"{name:38} {len(data) / 1e6:7.1f} MB {seconds:6.2f} s {rows / seconds:>12,.0f} rows/s"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
