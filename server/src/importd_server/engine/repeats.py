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
# it does without candidates. A 10M-row file keeps 40 MB.
MAX_ROWS = 1 << 24
# At the end, the keyed rows of one sixteenth of the hash space are sorted at a time: at
# most this many (~16 bytes a row while sorted: 32 MB). More means a skewed file (one key in
# most rows), whose every entry is read instead; so is one with more candidates than
# MAX_CANDIDATES (each a Python int, and then a bigint sent to the database).
MAX_PART_ROWS = 1 << 21
MAX_CANDIDATES = 1 << 20
_NO_KEY = 0  # a row without a key (missing or invalid) repeats nothing
# Blocks' hashes are joined into segments of about this many rows: the end's counting then
# makes a few calls per segment rather than per block of ~12,000 rows.
SEGMENT_ROWS = 1 << 20
# The hash space is counted in 16 parts, by a hash's top 4 bits.
_PARTS = 16
_PART_SHIFT = 28


class RepeatedKeys:
    """The hashes of a file's keys in row order, block by block."""

    def __init__(
        self,
        max_rows: int = MAX_ROWS,
        segment_rows: int = SEGMENT_ROWS,
        max_part_rows: int = MAX_PART_ROWS,
        max_candidates: int = MAX_CANDIDATES,
    ) -> None:
        self._max_rows = max_rows
        self._segment_rows = segment_rows
        self._max_part_rows = max_part_rows
        self._max_candidates = max_candidates
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
        every row is to be read instead: the rows were not all noted, or the hashes are
        too skewed (one part of the hash space, or the candidates, beyond their bound)."""
        if self._segments is None:
            return None
        if self._rows < 2:
            return []
        segments = [*self._segments, *self._blocks]
        # The hashes that occur more than once: equal to their neighbour once sorted, a
        # sixteenth of the hash space at a time (sorting them all at once would take three
        # times their memory besides). Rows without a key take no part.
        repeated = [pa.array([], pa.uint32())]
        for part in range(_PARTS):
            masks = [_in_part(s, part) for s in segments]
            if _count(masks) > self._max_part_rows:
                return None  # one key (or hash) in most rows: not sorted here
            values = pa.concat_arrays([s.filter(m) for s, m in zip(segments, masks, strict=True)])
            if len(values) < 2:
                continue
            ordered = values.take(pc.sort_indices(values))
            same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
            repeated.append(ordered.slice(1).filter(same))
        value_set = pa.concat_arrays(repeated)
        hits = [pc.is_in(s, value_set=value_set) for s in segments]
        if _count(hits) > self._max_candidates:
            return None  # too many to send as a list
        rows: list[int] = []
        first = 1
        for segment, hit in zip(segments, hits, strict=True):
            rows.extend(pc.add(pc.indices_nonzero(hit), first).to_pylist())
            first += len(segment)
        return rows


def _in_part(hashes: pa.Array, part: int) -> pa.Array:
    """Which of the hashes lie in the part (their top 4 bits); a row without a key (0, in
    part 0) in none."""
    mask = pc.equal(pc.shift_right(hashes, _PART_SHIFT), part)
    return pc.and_(mask, pc.not_equal(hashes, _NO_KEY)) if part == 0 else mask


def _count(masks: list[pa.Array]) -> int:
    """How many true values the boolean arrays hold."""
    return sum(int(pc.sum(m).as_py() or 0) for m in masks)
