"""Page tokens are tamper-evident: only a token issued with the service's key, for the same
filters, gives back a position; anything else is INVALID_ARGUMENT on page_token."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from importd_server.api.paging import PageTokens, fingerprint
from importd_server.errors import InvalidArgument

KEY = b"k" * 32
TOKENS = PageTokens(KEY)
FILTERS = fingerprint("ListEntries", "job-1", [])

positions = st.dictionaries(
    st.text(max_size=3),
    st.integers() | st.text(max_size=30) | st.booleans() | st.none(),
    max_size=3,
)


def refused(token: str, tokens: PageTokens = TOKENS, filters: str = FILTERS) -> str:
    """The field violation decoding `token` gives (it must give one)."""
    with pytest.raises(InvalidArgument) as caught:
        tokens.decode(token, filters)
    (violation,) = caught.value.field_violations
    assert violation.field == "page_token"
    return violation.description


@settings(deadline=None)  # no timing: the machine may be busy
@given(positions)
def test_a_token_gives_back_its_position(position: dict[str, Any]) -> None:
    assert TOKENS.decode(TOKENS.encode(position, FILTERS), FILTERS) == position


@settings(deadline=None)  # no timing: the machine may be busy
@given(st.text(max_size=200))
def test_arbitrary_text_is_never_a_page_token(token: str) -> None:
    assert refused(token) == "is not a valid page token"


mutations = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.characters()),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.characters()),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just("")),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just("")),
)


def mutate(token: str, mutation: tuple[str, int, str]) -> str:
    kind, index, character = mutation
    if not token:
        return character
    at = index % (len(token) + 1)
    if kind == "replace":
        at = index % len(token)
        return token[:at] + character + token[at + 1 :]
    if kind == "insert":
        return token[:at] + character + token[at:]
    if kind == "delete":
        at = index % len(token)
        return token[:at] + token[at + 1 :]
    return token[:at]


@settings(deadline=None)  # no timing: the machine may be busy
@given(positions, st.lists(mutations, min_size=1, max_size=3))
def test_a_changed_token_never_verifies(
    position: dict[str, Any], changes: list[tuple[str, int, str]]
) -> None:
    token = TOKENS.encode(position, FILTERS)
    changed = token
    for change in changes:
        changed = mutate(changed, change)
    assume(changed != token)
    assert refused(changed) == "is not a valid page token"


@settings(deadline=None)  # no timing: the machine may be busy
@given(positions)
def test_a_token_of_another_key_never_verifies(position: dict[str, Any]) -> None:
    foreign = PageTokens(b"x" * 32).encode(position, FILTERS)
    assert refused(foreign) == "is not a valid page token"


def test_a_token_for_other_filters_is_refused_as_such() -> None:
    token = TOKENS.encode({"r": 10}, fingerprint("ListEntries", "job-2", []))
    assert refused(token) == "was issued for a request with other filters"


def test_an_unsigned_token_with_a_computed_fingerprint_is_refused() -> None:
    # What the service issued before tokens were signed: anyone could write one.
    payload = json.dumps({"p": {"r": 2**64}, "f": FILTERS}).encode()
    forged = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    assert refused(forged) == "is not a valid page token"
    assert refused(f"{forged}.") == "is not a valid page token"
