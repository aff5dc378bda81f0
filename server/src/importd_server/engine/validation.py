"""Row validation: every column of a row checked against its type and rules, every error kept."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from importd_server.model import ColumnSpec, ImportMode, ImportType, RowError

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# PostgreSQL numeric: up to 131072 digits before the point and 16383 after.
NUMERIC_MAX_INTEGER_DIGITS = 131072
NUMERIC_MAX_FRACTION_DIGITS = 16383
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})


class _Invalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CheckedRow:
    """A row after validation: typed values in `RowChecker.columns` order, or its errors."""

    values: tuple[Any, ...] | None
    errors: tuple[RowError, ...]


class RowChecker:
    """Validates the rows of one job: its import type, the file's columns, and its mode."""

    def __init__(
        self,
        import_type: ImportType,
        positions: Mapping[str, Sequence[int]],
        mode: ImportMode,
    ) -> None:
        """`positions` maps each import-type column the file has to where its value is in a
        row (see parsing.FileColumns)."""
        self.import_type = import_type
        if mode is ImportMode.DELETE:
            staged = [import_type.column(k) for k in import_type.key]
        elif mode is ImportMode.UPDATE:
            staged = [
                c for c in import_type.columns if c.name in import_type.key or c.name in positions
            ]
        else:
            staged = list(import_type.columns)
        self.columns: tuple[ColumnSpec, ...] = tuple(staged)
        # Defaults fill rows that are inserted; an UPDATE changes only what the file says.
        use_defaults = mode in (ImportMode.INSERT, ImportMode.UPSERT)
        self._plan: list[_Plan] = [
            (
                column,
                tuple(positions.get(column.name, ())),
                column.default if use_defaults else None,
                _CONVERTERS[column.type],
            )
            for column in self.columns
        ]
        self._key_plan = [p for p in self._plan if p[0].name in import_type.key]
        self._keys = frozenset(p[0] for p in self._key_plan)
        self._width = 1 + max((p for where in positions.values() for p in where), default=-1)

    def check(self, row: Sequence[str]) -> CheckedRow:
        """The row's typed values, or all of its errors (never only the first)."""
        values: list[Any] = []
        errors: list[RowError] = []
        size = len(row)
        for plan in self._plan:
            value, error = _check_text(plan, _first_text(row, size, plan[1]))
            values.append(value)
            if error is not None:
                errors.append(error)
        if not errors and self.import_type.row_validator is not None:
            named = {c.name: v for c, v in zip(self.columns, values, strict=True)}
            errors.extend(self.import_type.row_validator(named))
        if errors:
            return CheckedRow(None, tuple(errors))
        return CheckedRow(tuple(values), ())

    def field_error(self, index: int, field: str) -> RowError | None:
        """The error `check` finds in column `index` (of `columns`) of a row whose field for
        it is `field` (as read; its only one), else None."""
        return _check_text(self._plan[index], field.strip())[1]

    def defaults(self) -> dict[str, str | None]:
        """The columns an empty value takes a default in: each default in canonical text,
        or None if the default itself is invalid (every row leaving the column empty fails)."""
        filled: dict[str, str | None] = {}
        for column, _, default, converter in self._plan:
            if default:
                try:
                    filled[column.name] = canonical_text(converter(column, default))
                except _Invalid:
                    filled[column.name] = None
        return filled

    def clean_row(self, row: Sequence[str], values: Sequence[Any]) -> list[str] | None:
        """The row with each checked column's value in canonical text (`canonical_text`) at
        the column's first position (its other positions emptied), or None when that is the
        row itself. PostgreSQL casts a target row from this text."""
        clean = list(row)
        clean.extend("" for _ in range(self._width - len(clean)))
        for (_, where, _, _), value in zip(self._plan, values, strict=True):
            if where:
                clean[where[0]] = canonical_text(value)
                for position in where[1:]:
                    clean[position] = ""
        return None if clean == row else clean

    def key_of_checked(self, values: Sequence[Any]) -> str:
        """The key of a row `check` accepted, from its typed values (what `key` gives)."""
        parts = [
            _canonical(v) for c, v in zip(self.columns, values, strict=True) if c in self._keys
        ]
        return parts[0] if len(parts) == 1 else json.dumps(parts)

    def key(self, row: Sequence[str]) -> str | None:
        """The row's key in its validated form, or None if a key value is missing or invalid.

        Cheaper than `check`: only the key columns are read.
        """
        parts = []
        size = len(row)
        for column, where, _, converter in self._key_plan:
            text = _first_text(row, size, where)
            if not text:
                return None
            try:
                parts.append(_canonical(converter(column, text)))
            except _Invalid:
                return None
        # One column: its value as is. Several: a JSON list, so no separator can collide.
        return parts[0] if len(parts) == 1 else json.dumps(parts)


_Plan = tuple[ColumnSpec, tuple[int, ...], str | None, Callable[[ColumnSpec, str], Any]]


def _check_text(plan: _Plan, text: str) -> tuple[Any, RowError | None]:
    """A column's value from its text (stripped; empty takes the default), or its error."""
    column, _, default, converter = plan
    if not text and default is not None:
        text = default
    if not text:
        if column.required:
            return None, RowError("REQUIRED", column.name, "", "a value is required")
        return None, None
    try:
        return converter(column, text), None
    except _Invalid as invalid:
        return None, RowError(invalid.code, column.name, text, invalid.message)


def canonical_text(value: Any) -> str:
    """A checked value as the text PostgreSQL casts back to it ('' for NULL)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    return str(value)


def _canonical(value: Any) -> str:
    """One text per value: equal timestamps and numbers spelled differently become equal."""
    if isinstance(value, Decimal):
        return str(value.normalize())
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def _first_text(row: Sequence[str], size: int, positions: tuple[int, ...]) -> str:
    """The first non-empty field among `positions` (one in CSV; aliases in JSON Lines)."""
    for position in positions:
        if position < size and (text := row[position].strip()):
            return text
    return ""


def _string(column: ColumnSpec, text: str) -> str:
    if column.max_length is not None and len(text) > column.max_length:
        raise _Invalid("TOO_LONG", f"longer than {column.max_length} characters")
    if column.pattern is not None and not column.pattern.fullmatch(text):
        raise _Invalid("PATTERN_MISMATCH", f"does not match {column.pattern.pattern}")
    return text


def _int(column: ColumnSpec, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _Invalid("INVALID_INT", "not a whole number") from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise _Invalid("OUT_OF_RANGE", "outside the 64-bit integer range")
    if column.min is not None or column.max is not None:
        _check_bounds(column, value)
    return value


def _decimal(column: ColumnSpec, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _Invalid("INVALID_DECIMAL", "not a decimal number") from None
    if not value.is_finite():
        raise _Invalid("INVALID_DECIMAL", "not a finite number")
    exponent = value.as_tuple().exponent
    if value.adjusted() >= NUMERIC_MAX_INTEGER_DIGITS or (
        isinstance(exponent, int) and -exponent > NUMERIC_MAX_FRACTION_DIGITS
    ):
        raise _Invalid("OUT_OF_RANGE", "too many digits for a PostgreSQL numeric")
    _check_bounds(column, value)
    return value


def _check_bounds(column: ColumnSpec, value: int | Decimal) -> None:
    low, high = column.min, column.max
    if low is not None and (value < low or (column.exclusive_bounds and value == low)):
        relation = "greater than" if column.exclusive_bounds else "at least"
        raise _Invalid("TOO_SMALL", f"must be {relation} {low}")
    if high is not None and (value > high or (column.exclusive_bounds and value == high)):
        relation = "less than" if column.exclusive_bounds else "at most"
        raise _Invalid("TOO_LARGE", f"must be {relation} {high}")


def _bool(column: ColumnSpec, text: str) -> bool:
    word = text.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise _Invalid("INVALID_BOOL", "not a boolean (true/false, yes/no, 1/0)")


def _date(column: ColumnSpec, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _Invalid("INVALID_DATE", "not a date (YYYY-MM-DD)") from None


def _timestamp(column: ColumnSpec, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid("INVALID_TIMESTAMP", "not an ISO 8601 timestamp") from None
    # A timestamp without an offset is read as UTC rather than as the server's local time.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _Invalid("OUT_OF_RANGE", "outside the years 1 to 9999 in UTC") from None


def _email(column: ColumnSpec, text: str) -> str:
    if not EMAIL.match(text) or len(text) > 254:
        raise _Invalid("INVALID_EMAIL", "not a valid e-mail address")
    local, _, domain = text.rpartition("@")
    # Domains are case-insensitive; local parts are case-sensitive by the RFC.
    return f"{local}@{domain.lower()}"


def _phone(column: ColumnSpec, text: str) -> str:
    number = PHONE_PUNCTUATION.sub("", text)
    if number.startswith("00"):
        number = "+" + number[2:]
    if not E164.match(number):
        raise _Invalid("INVALID_PHONE", "not an E.164 phone number (+ and up to 15 digits)")
    return number


def _uuid(column: ColumnSpec, text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise _Invalid("INVALID_UUID", "not a UUID") from None


def _enum(column: ColumnSpec, text: str) -> str:
    if text not in column.values:
        raise _Invalid("INVALID_ENUM", f"not one of {', '.join(column.values)}")
    return text


_CONVERTERS: dict[str, Callable[[ColumnSpec, str], Any]] = {
    "string": _string,
    "int": _int,
    "decimal": _decimal,
    "bool": _bool,
    "date": _date,
    "timestamp": _timestamp,
    "email": _email,
    "phone": _phone,
    "uuid": _uuid,
    "enum": _enum,
}
