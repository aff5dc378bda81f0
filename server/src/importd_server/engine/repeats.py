"""Which rows of a file may repeat another row's key, noted as the file streams through
staging, so that the de-duplication reads only those rows instead of every entry twice.

A 32-bit hash of each row's key is kept (4 bytes a row, for at most MAX_ROWS rows). Once
the file is read whole, the rows whose hash occurs more than once are the candidates: every
row whose key repeats is among them (equal keys hash alike), and a few others may be
(collisions), which the database's exact comparison of the keys leaves alone.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# Beyond this many rows (64 MB of hashes) the de-duplication reads every entry instead, as
# it does without candidates. A 10M-row file keeps 40 MB; counting them at the end holds
# a sixteenth of that besides.
MAX_ROWS = 1 << 24
_NO_KEY = 0  # a row without a key (missing or invalid) repeats nothing
# Blocks' hashes are joined into segments of about this many rows: the end's counting then
# makes a few calls per segment rather than per block of ~12,000 rows.
SEGMENT_ROWS = 1 << 20
# The hash space is counted in 16 parts, by a hash's top 4 bits.
_PARTS = 16
_PART_SHIFT = 28


class RepeatedKeys:
    """The hashes of a file's keys in row order, block by block."""

    def __init__(self, max_rows: int = MAX_ROWS, segment_rows: int = SEGMENT_ROWS) -> None:
        self._max_rows = max_rows
        self._segment_rows = segment_rows
        self._segments: list[pa.Array] | None = []
        self._blocks: list[pa.Array] = []  # the latest blocks, not yet in a segment
        self._rows = 0

    def add(self, row_numbers: pa.Array, keys: pa.Array) -> None:
        """Notes a block's rows (in any order: a block's rows with a wrong number of fields
        come after its others) and their keys (null: none)."""
        if self._segments is None or not len(row_numbers):
            return
        order = pc.sort_indices(row_numbers)
        ordered = row_numbers.take(order)
        count = len(ordered)
        # Rows are numbered 1, 2, ... across the file; anything else, or too many rows, and
        # every entry is read.
        first, last = ordered[0].as_py(), ordered[count - 1].as_py()
        if first != self._rows + 1 or last != self._rows + count or last > self._max_rows:
            self._segments = None
            self._blocks = []
            return
        self._rows = last
        self._blocks.append(
            pa.array(
                [
                    _NO_KEY if key is None else (hash(key) & 0xFFFFFFFF) | 1
                    for key in keys.take(order).to_pylist()
                ],
                pa.uint32(),
            )
        )
        if sum(len(b) for b in self._blocks) >= self._segment_rows:
            self._segments.append(pa.concat_arrays(self._blocks))
            self._blocks = []

    def candidates(self) -> list[int] | None:
        """The row numbers that may share their key with another row, in order; None if
        every row may (the rows were not all noted)."""
        if self._segments is None:
            return None
        if self._rows < 2:
            return []
        segments = [*self._segments, *self._blocks]
        # The hashes that occur more than once: equal to their neighbour once sorted, a
        # sixteenth of the hash space at a time (sorting them all at once would take three
        # times their memory besides).
        repeated = [pa.array([], pa.uint32())]
        for part in range(_PARTS):
            values = pa.concat_arrays(
                [s.filter(pc.equal(pc.shift_right(s, _PART_SHIFT), part)) for s in segments]
            )
            if len(values) < 2:
                continue
            ordered = values.take(pc.sort_indices(values))
            same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
            repeated.append(ordered.slice(1).filter(same))
        hashes = pa.concat_arrays(repeated)
        value_set = hashes.filter(pc.not_equal(hashes, _NO_KEY))
        rows: list[int] = []
        first = 1
        for segment in segments:
            found = pc.indices_nonzero(pc.is_in(segment, value_set=value_set))
            rows.extend(pc.add(found, first).to_pylist())
            first += len(segment)
        return rows
