"""The fast path of validation: vectorised checks (pyarrow.compute) that accept a value only
when RowChecker would accept it *and* leave it unchanged (already canonical). Every value they
do not accept goes to RowChecker, so codes and messages stay RowChecker's own.

The checks are deliberately narrow (ASCII, one spelling per value): a value they accept is
stored as the file had it and cast by PostgreSQL from that text; see tests/unit/test_fast_checks.py
for the property that proves it against RowChecker.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import pyarrow as pa
import pyarrow.compute as pc

from importd_server.engine.validation import INT64_MAX, INT64_MIN
from importd_server.model import ColumnSpec

# Python's whitespace (what str.strip removes), as an RE2 class: RE2's own \s is ASCII only.
_SPACE = "".join(f"\\x{{{c:x}}}" for c in range(0x110000) if chr(c).isspace())
_PADDED = f"^[{_SPACE}]|[{_SPACE}]$"
# ASCII without control characters, space and '@'; a domain also without upper case.
_LOCAL = r"[\x21-\x3f\x41-\x7e]"
_DOMAIN = r"[\x21-\x3f\x5b-\x7e]"
_LABEL = r"[\x21-\x2d\x2f-\x3f\x5b-\x7e]"
_EMAIL = f"^{_LOCAL}+@{_DOMAIN}+\\.{_LABEL}+$"
_PHONE = r"^\+[1-9][0-9]{1,14}$"
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_INT = r"^(0|-?[1-9][0-9]{0,17})$"  # at most 18 digits: always inside 64 bits
# At most 15 digits (float64 holds them), and not below 1e-6 (str(Decimal) would switch to
# an exponent there).
_DECIMAL = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"
_DECIMAL_TINY = r"^-?0\.000000"
_DECIMAL_DIGITS = 15
_YEAR = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_DATE = f"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}$"
# What datetime.isoformat() writes for a UTC time: microseconds only when there are some.
_TIMESTAMP = (
    f"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(\\.[0-9]{{6}})?\\+00:00$"
)
_TIMESTAMP_ZERO_MICROS = r"\.000000\+"
_BOOLS = pa.array(["true", "false"])
# Types whose key text (validation._canonical) is the value as the file has it.
_RAW_KEY_TYPES = frozenset({"string", "email", "phone", "enum", "int", "date", "timestamp", "uuid"})
# Relative margin kept from a decimal bound: a value closer than this goes to RowChecker.
_BOUND_MARGIN = Decimal("1e-9")


def accepts(column: ColumnSpec, values: pa.Array, default_valid: bool | None) -> pa.Array:
    """A boolean per value: True where RowChecker accepts the value unchanged.

    `default_valid` says what an empty value becomes: None when no default applies (NULL,
    or REQUIRED), else whether the column's default is valid (SQL then fills it in).
    """
    empty = pc.equal(values, "")
    empty_ok = not column.required if default_valid is None else default_valid
    return pc.if_else(empty, empty_ok, _valid_and_canonical(column, values))


def key_is_raw(column: ColumnSpec) -> bool:
    """Whether an accepted value of this key column is its key text as it is."""
    return column.type in _RAW_KEY_TYPES


def _valid_and_canonical(column: ColumnSpec, values: pa.Array) -> pa.Array:
    kind = column.type
    if kind == "string":
        ok = pc.invert(pc.match_substring_regex(values, _PADDED))
        if column.max_length is not None:
            ok = pc.and_(ok, pc.less_equal(pc.utf8_length(values), column.max_length))
        if column.pattern is not None:
            # Python's own regex, per value: RE2 and `re` disagree on classes such as \d.
            pattern = column.pattern
            ok = pc.and_(
                ok, pa.array([pattern.fullmatch(v) is not None for v in values.to_pylist()])
            )
        return ok
    if kind == "enum":
        ok = pc.is_in(values, value_set=pa.array(column.values))
        return pc.and_(ok, pc.invert(pc.match_substring_regex(values, _PADDED)))
    if kind == "email":
        ok = pc.match_substring_regex(values, _EMAIL)
        return pc.and_(ok, pc.less_equal(pc.binary_length(values), 254))
    if kind == "phone":
        return pc.match_substring_regex(values, _PHONE)
    if kind == "uuid":
        return pc.match_substring_regex(values, _UUID)
    if kind == "bool":
        return pc.is_in(values, value_set=_BOOLS)
    if kind == "int":
        return _int(column, values)
    if kind == "decimal":
        return _decimal(column, values)
    if kind == "date":
        shaped = pc.match_substring_regex(values, _DATE)
        parsed = _parse(values, shaped, 10, "%Y-%m-%d")
        return _same(shaped, pc.cast(pc.cast(parsed, pa.date32()), pa.string()), values)
    if kind == "timestamp":
        shaped = pc.and_(
            pc.match_substring_regex(values, _TIMESTAMP),
            pc.invert(pc.match_substring_regex(values, _TIMESTAMP_ZERO_MICROS)),
        )
        parsed = _parse(values, shaped, 19, "%Y-%m-%dT%H:%M:%S")
        written = pc.replace_substring(pc.cast(parsed, pa.string()), " ", "T")
        return _same(shaped, written, pc.utf8_slice_codeunits(values, 0, 19))
    raise ValueError(f"no fast check for column type {kind!r}")


def _parse(values: pa.Array, shaped: pa.Array, width: int, layout: str) -> pa.Array:
    """The first `width` characters of the well-shaped values as timestamps (null if not)."""
    head = pc.utf8_slice_codeunits(pc.if_else(shaped, values, "2000-01-01T00:00:00"), 0, width)
    return pc.strptime(head, format=layout, unit="s", error_is_null=True)


def _same(shaped: pa.Array, written: pa.Array, values: pa.Array) -> pa.Array:
    """Whether a parsed date (and time) written back is the text it came from: strptime
    rolls 2021-02-30 over to 2021-03-01."""
    return pc.and_(shaped, pc.fill_null(pc.equal(written, values), False))


def _int(column: ColumnSpec, values: pa.Array) -> pa.Array:
    ok = pc.match_substring_regex(values, _INT)
    if column.min is None and column.max is None:
        return ok
    numbers = pc.cast(pc.if_else(ok, values, "0"), pa.int64())
    low, high = column.min, column.max
    if low is not None:
        if column.exclusive_bounds:
            least = int(low.to_integral_value(ROUND_FLOOR)) + 1
        else:
            least = int(low.to_integral_value(ROUND_CEILING))
        ok = pc.and_(ok, _at_least(numbers, least))
    if high is not None:
        if column.exclusive_bounds:
            most = int(high.to_integral_value(ROUND_CEILING)) - 1
        else:
            most = int(high.to_integral_value(ROUND_FLOOR))
        ok = pc.and_(ok, pc.invert(_at_least(numbers, most + 1)))
    return ok


def _at_least(numbers: pa.Array, least: int) -> pa.Array:
    if least <= INT64_MIN:
        return pc.is_valid(numbers)
    if least > INT64_MAX:
        return pc.is_null(numbers)  # all false: the numbers have no nulls
    return pc.greater_equal(numbers, pa.scalar(least, pa.int64()))


def _decimal(column: ColumnSpec, values: pa.Array) -> pa.Array:
    ok = pc.and_(
        pc.match_substring_regex(values, _DECIMAL),
        pc.invert(pc.match_substring_regex(values, _DECIMAL_TINY)),
    )
    digits = pc.subtract(
        pc.utf8_length(values),
        pc.add(
            pc.cast(pc.starts_with(values, "-"), pa.int32()),
            pc.cast(pc.match_substring(values, "."), pa.int32()),
        ),
    )
    ok = pc.and_(ok, pc.less_equal(digits, _DECIMAL_DIGITS))
    if column.min is None and column.max is None:
        return ok
    numbers = pc.cast(pc.if_else(ok, values, "0"), pa.float64())
    # Floats are inexact: only values clearly inside the bounds pass here; the rest go to
    # RowChecker, which compares Decimals exactly.
    if column.min is not None:
        least = column.min + _BOUND_MARGIN * max(Decimal(1), abs(column.min))
        ok = pc.and_(ok, pc.greater(numbers, float(least)))
    if column.max is not None:
        most = column.max - _BOUND_MARGIN * max(Decimal(1), abs(column.max))
        ok = pc.and_(ok, pc.less(numbers, float(most)))
    return ok
