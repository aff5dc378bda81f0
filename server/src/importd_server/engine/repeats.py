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

# Beyond this many rows the hashes would weigh on the upload's memory (8 MB here, and
# ~30 MB more for a moment while they are sorted at the end: +14 MB of peak RSS measured at
# 1M rows): the de-duplication then reads every entry, as it does without candidates.
MAX_ROWS = 1 << 21
_NO_KEY = 0  # a row without a key (missing or invalid) repeats nothing


class RepeatedKeys:
    """The hashes of a file's keys in row order, block by block."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self._max_rows = max_rows
        self._hashes: list[pa.Array] | None = []
        self._rows = 0

    def add(self, row_numbers: pa.Array, keys: pa.Array) -> None:
        """Notes a block's rows (in any order: a block's rows with a wrong number of fields
        come after its others) and their keys (null: none)."""
        if self._hashes is None or not len(row_numbers):
            return
        order = pc.sort_indices(row_numbers)
        ordered = row_numbers.take(order)
        count = len(ordered)
        # Rows are numbered 1, 2, ... across the file; anything else, or too many rows, and
        # every entry is read.
        first, last = ordered[0].as_py(), ordered[count - 1].as_py()
        if first != self._rows + 1 or last != self._rows + count or last > self._max_rows:
            self._hashes = None
            return
        self._rows = last
        self._hashes.append(
            pa.array(
                [
                    _NO_KEY if key is None else (hash(key) & 0xFFFFFFFF) | 1
                    for key in keys.take(order).to_pylist()
                ],
                pa.uint32(),
            )
        )

    def candidates(self) -> list[int] | None:
        """The row numbers that may share their key with another row, in order; None if
        every row may (the rows were not all noted)."""
        if self._hashes is None:
            return None
        if self._rows < 2:
            return []
        hashes = pa.concat_arrays(self._hashes)
        order = pc.sort_indices(hashes)
        ordered = hashes.take(order)
        # A hash equal to its neighbour in sorted order occurs more than once.
        same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
        unequal = pa.array([False])
        repeated = pc.and_(
            pc.or_(pa.concat_arrays([same, unequal]), pa.concat_arrays([unequal, same])),
            pc.not_equal(ordered, _NO_KEY),
        )
        return sorted(pc.add(order.filter(repeated), 1).to_pylist())
