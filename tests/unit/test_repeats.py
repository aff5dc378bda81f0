"""RepeatedKeys: the rows staging hands the de-duplication always include every row whose
key repeats, whatever the order of a block's rows."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from importd_server.engine.repeats import RepeatedKeys

KEYS = st.one_of(st.none(), st.text(alphabet="aAb@.é", max_size=4))


@st.composite
def blocks(draw: st.DrawFn) -> list[list[tuple[int, str | None]]]:
    """A file's (row number, key) pairs, cut into blocks, each block's rows shuffled."""
    keys = draw(st.lists(KEYS, max_size=60))
    rows = list(enumerate(keys, start=1))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=5)))
    parts = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    return [draw(st.permutations(part)) for part in parts]


def noted(parts: list[list[tuple[int, str | None]]], **bounds: int) -> RepeatedKeys:
    repeats = RepeatedKeys(**bounds)
    for part in parts:
        repeats.add(
            pa.array([n for n, _ in part], pa.int64()), pa.array([k for _, k in part], pa.string())
        )
    return repeats


@given(blocks(), st.sampled_from([1 << 20, 1, 7]))
def test_every_row_whose_key_repeats_is_a_candidate_and_no_row_without_a_key(
    parts: list[list[tuple[int, str | None]]], segment_rows: int
) -> None:
    # Blocks are joined into segments of segment_rows or more (1M rows in the server).
    rows = [row for part in parts for row in part]
    counts = Counter(key for _, key in rows if key is not None)
    candidates = noted(parts, segment_rows=segment_rows).candidates()
    assert candidates is not None
    assert candidates == sorted(candidates)
    assert {n for n, key in rows if key is not None and counts[key] > 1} <= set(candidates)
    assert not {n for n, key in rows if key is None} & set(candidates)


def test_keys_of_another_case_are_other_keys() -> None:
    # Keys come validated (an e-mail's domain lower-cased): the text is compared as it is.
    parts = [[(1, "a@x.com"), (2, "a@X.com"), (3, "b@x.com")], [(4, "a@x.com")]]
    assert noted(parts).candidates() == [1, 4]


def test_rows_not_numbered_one_after_another_or_too_many_make_every_row_a_candidate() -> None:
    assert noted([[(1, "a"), (3, "a")]]).candidates() is None
    assert noted([[(2, "a"), (1, "a")], [(4, "a")]]).candidates() is None
    assert noted([[(1, "a"), (2, "b")], [(3, "a")]], max_rows=2).candidates() is None
    assert noted([[(1, "a"), (2, "b")]], max_rows=2).candidates() == []


def test_rows_without_a_key_are_no_candidates_however_many() -> None:
    # Their hash is 0: they take no part in the counting, so a keyless file stays within
    # the bound of one part.
    keyless = [[(n, None) for n in range(1, 1001)]]
    assert noted(keyless, max_part_rows=10).candidates() == []


def test_a_key_in_most_rows_or_too_many_candidates_make_every_row_read() -> None:
    # One key in every row would have one part of the hash space sort them all, and make
    # every row a candidate: beyond the bounds, the de-duplication reads every entry.
    hot = [[(n, "a@x.com") for n in range(1, 101)]]
    assert noted(hot, max_part_rows=50).candidates() is None
    assert noted(hot, max_candidates=50).candidates() is None
    assert noted(hot).candidates() == list(range(1, 101))
