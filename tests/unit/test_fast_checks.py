"""The fast path of validation against RowChecker, the reference: for every column type and
rule, a value the vectorised checks accept is one RowChecker accepts, unchanged."""

from __future__ import annotations

import re
from datetime import UTC
from decimal import Decimal
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from importd_server.engine.fast_checks import accepts, key_is_raw
from importd_server.engine.validation import RowChecker, canonical_text
from importd_server.model import ColumnSpec, ImportMode, ImportType

SPACES = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u3000\ufeff"


def variants(canonical: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Canonical texts, and texts one small step away from them (padded, re-cased,
    signed, with a character replaced), and anything at all."""

    def near(text: str, data: st.DataObject) -> str:
        kind = data.draw(st.integers(0, 6))
        if kind == 0 or not text:
            return text
        if kind == 1:
            return data.draw(st.sampled_from(SPACES)) + text
        if kind == 2:
            return text + data.draw(st.sampled_from(SPACES))
        if kind == 3:
            return text.upper() if data.draw(st.booleans()) else text.title()
        if kind == 4:
            return data.draw(st.sampled_from(["+", "-", "0", "00", "٣", "_"])) + text
        at = data.draw(st.integers(0, len(text) - 1))
        other = data.draw(st.sampled_from("0123456789-+.:T Z@eE_xX\u00e9\u0663"))
        return text[:at] + other + text[at + 1 :]

    return st.one_of(
        canonical,
        st.tuples(canonical, st.data()).map(lambda pair: near(*pair)),
        st.text(max_size=12),
    )


def years() -> st.SearchStrategy[int]:
    return st.integers(1, 9999)


TEXTS: dict[str, st.SearchStrategy[str]] = {
    "string": variants(st.text(max_size=12)),
    "int": variants(
        st.one_of(
            st.integers(-(2**63), 2**63 - 1).map(str),
            st.integers(-200, 200).map(str),
            st.integers(-(10**20), 10**20).map(str),
        )
    ),
    "decimal": variants(
        st.one_of(
            st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
            st.decimals(allow_nan=False, allow_infinity=False).map(str),
            st.from_regex(r"-?(0|[1-9][0-9]{0,16})(\.[0-9]{1,9})?", fullmatch=True),
        )
    ),
    "bool": variants(st.sampled_from(["true", "false", "t", "f", "yes", "no", "1", "0", "on"])),
    "date": variants(
        st.one_of(
            st.dates().map(lambda d: d.isoformat()),
            st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
        )
    ),
    "timestamp": variants(
        st.one_of(
            st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
            st.datetimes().map(lambda d: d.isoformat()),
            st.from_regex(
                r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?\+00:00",
                fullmatch=True,
            ),
        )
    ),
    "email": variants(
        st.from_regex(r"[a-zA-Z0-9.+_@-]{1,8}@[a-zA-Z0-9.-]{1,8}\.[a-zA-Z.]{1,4}", fullmatch=True)
    ),
    "phone": variants(st.from_regex(r"\+?[0-9 ()-]{1,18}", fullmatch=True)),
    "uuid": variants(st.uuids().map(str)),
    "enum": variants(st.sampled_from(["red", "green", " blue", "Red"])),
}


@st.composite
def columns(draw: st.DrawFn, kind: str) -> ColumnSpec:
    """A column of this type with rules drawn at random."""
    rules: dict[str, Any] = {
        "required": draw(st.booleans()),
        "default": draw(st.one_of(st.none(), st.just(""), TEXTS[kind])),
    }
    if kind == "string":
        rules["max_length"] = draw(st.one_of(st.none(), st.integers(0, 12)))
        patterns = st.sampled_from([r"[A-Z]{2}[0-9]+", r"\d+", r"\w*", r".*\S"])
        rules["pattern"] = draw(st.one_of(st.none(), patterns.map(re.compile)))
    if kind in ("int", "decimal"):
        bound = st.one_of(
            st.none(),
            st.decimals(-(10**20), 10**20, allow_nan=False, places=draw(st.integers(0, 4))),
            st.sampled_from([Decimal(0), Decimal(100), Decimal("-0.5"), Decimal("2.5")]),
        )
        rules["min"], rules["max"] = draw(bound), draw(bound)
        rules["exclusive_bounds"] = draw(st.booleans())
    if kind == "enum":
        rules["values"] = ("red", "green", " blue")
    return ColumnSpec(name="c", type=kind, **rules)


def checker(column: ColumnSpec, mode: ImportMode) -> RowChecker:
    """A RowChecker of rows [value of `column`, a key]."""
    key = ColumnSpec(name="k", type="string", required=True)
    import_type = ImportType(
        name="t",
        description="",
        table="t",
        key=("k",),
        modes=tuple(ImportMode),
        columns=(column, key),
    )
    return RowChecker(import_type, {"c": [0], "k": [1]}, mode)


def key_checker(key: ColumnSpec) -> RowChecker:
    """A RowChecker of rows [key] whose key is this column."""
    import_type = ImportType(
        name="t",
        description="",
        table="t",
        key=(key.name,),
        modes=tuple(ImportMode),
        columns=(key,),
    )
    return RowChecker(import_type, {key.name: [0]}, ImportMode.UPSERT)


def fast(column: ColumnSpec, values: list[str], mode: ImportMode) -> list[bool]:
    defaults = checker(column, mode).defaults()
    default_valid = defaults["c"] is not None if "c" in defaults else None
    result: list[bool] = accepts(column, pa.array(values, pa.string()), default_valid).to_pylist()
    return result


def assert_fast_path_is_a_subset_of_row_checker(
    column: ColumnSpec, values: list[str], mode: ImportMode
) -> None:
    reference = checker(column, mode)
    staged = [c.name for c in reference.columns]
    if "c" not in staged:
        return  # a DELETE checks (and the fast path sees) only the key
    for value, accepted in zip(values, fast(column, values, mode), strict=True):
        if not accepted:
            continue
        checked = reference.check([value, "k"])
        assert not checked.errors, (value, checked.errors)
        assert checked.values is not None
        typed = checked.values[staged.index("c")]
        if value:
            # Stored as the file has it, cast by PostgreSQL from that text.
            assert canonical_text(typed) == value, (value, typed)
        else:
            # Empty: NULL, or the default, which SQL fills in.
            default = reference.defaults().get("c")
            assert canonical_text(typed) == (default or ""), (value, typed)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(TEXTS)), mode=st.sampled_from(list(ImportMode)))
def test_the_fast_path_accepts_only_values_row_checker_accepts_unchanged(
    data: st.DataObject, kind: str, mode: ImportMode
) -> None:
    column = data.draw(columns(kind))
    values = data.draw(st.lists(TEXTS[kind], min_size=1, max_size=40))
    assert_fast_path_is_a_subset_of_row_checker(column, values, mode)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(TEXTS)))
def test_a_key_the_fast_path_accepts_is_its_key_text_as_written(
    data: st.DataObject, kind: str
) -> None:
    column = ColumnSpec(name="k", type=kind, required=True, values=("red", "green", " blue"))
    values = data.draw(st.lists(TEXTS[kind], min_size=1, max_size=40))
    reference = key_checker(column)
    for value, accepted in zip(values, fast(column, values, ImportMode.UPSERT), strict=True):
        if accepted and key_is_raw(column):
            assert reference.key([value]) == value
        checked = reference.check([value])
        if checked.values is not None:
            # Staging takes a valid row's key from its checked values.
            assert reference.key_of_checked(checked.values) == reference.key([value])


def test_the_fast_path_accepts_the_common_canonical_values() -> None:
    # A fast path that accepted nothing would pass the properties above: pin what it takes.
    cases = {
        "string": "Ann Marie",
        "int": "-42",
        "decimal": "1234.50",
        "bool": "false",
        "date": "2024-02-29",
        "timestamp": "2024-02-29T23:59:59.000001+00:00",
        "email": "ann.marie+x@example.co.uk",
        "phone": "+14155550100",
        "uuid": "0b5f5e7a-8b6c-4d2e-9f10-1a2b3c4d5e6f",
        "enum": "green",
    }
    for kind, value in cases.items():
        column = ColumnSpec(name="c", type=kind, values=("red", "green"))
        assert fast(column, [value, ""], ImportMode.UPSERT) == [True, True], kind


def test_the_fast_path_leaves_spellings_row_checker_rewrites_to_row_checker() -> None:
    cases = {
        "string": [" padded", "tab\t"],
        "int": ["+5", "05", "1_000", "\u0663", "-0"],
        "decimal": ["1e3", ".5", "0.0000001", "1234567890.1234567"],
        "bool": ["TRUE", "yes", "1"],
        "date": ["20240229", "2024-02-30", "2024-W09-4", "0000-01-01"],
        "timestamp": ["2024-02-29T10:00:00Z", "2024-02-29 10:00:00+00:00", "2024-02-29T10:00:00"],
        "email": ["ann@Example.com", "ann@x", "ann@@x.com", "j\u00fcrgen@x.com"],
        "phone": ["+1 415 555 0100", "004155550100", "+0415"],
        "uuid": ["0B5F5E7A-8B6C-4D2E-9F10-1A2B3C4D5E6F", "0b5f5e7a8b6c4d2e9f101a2b3c4d5e6f"],
        "enum": ["Green", " green"],
    }
    for kind, values in cases.items():
        column = ColumnSpec(name="c", type=kind, values=("red", "green"))
        assert not any(fast(column, values, ImportMode.UPSERT)), kind
