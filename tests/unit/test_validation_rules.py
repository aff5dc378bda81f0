"""Each column type's rules at their boundaries: classes of values (hypothesis) and real-world
bad values, asserting the whole error (code, field, value, message), not only its code.

Limits are written out here rather than imported: a test must fail when a constant changes.
"""

from __future__ import annotations

import json
import string
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from importd_server.engine.import_types import (
    default_types_dir,
    load_import_types,
    parse_import_type,
)
from importd_server.engine.validation import RowChecker
from importd_server.model import ImportMode, RowError

CONTACTS = load_import_types(default_types_dir())["contacts"]
INT64_MIN, INT64_MAX = -9223372036854775808, 9223372036854775807


def column(**rules: Any) -> RowChecker:
    """A checker of one key column `v` with these rules, reading one-field rows."""
    import_type = parse_import_type(
        {"name": "t", "table": "t", "key": ["v"], "columns": [{"name": "v", **rules}]}
    )
    return RowChecker(import_type, {"v": [0]}, ImportMode.UPSERT)


def outcome(checker: RowChecker, text: str) -> Any:
    """The typed value of a one-field row, or its one error."""
    row = checker.check([text])
    if row.values is not None:
        return row.values[0]
    (error,) = row.errors
    return error


def refused(code: str, text: str, message: str) -> RowError:
    """The error of column `v` holding `text`."""
    return RowError(code, "v", text, message)


def not_parsed_by(parse: Any) -> st.SearchStrategy[str]:
    """Non-blank text that `parse` refuses (after the strip every value gets)."""

    def parses(text: str) -> bool:
        try:
            parse(text.strip())
        except (ValueError, ArithmeticError):  # decimal.InvalidOperation: ArithmeticError
            return False
        return True

    return st.text(max_size=12).filter(lambda t: t.strip() != "" and not parses(t))


# --- int ---------------------------------------------------------------------------------

INT = column(type="int")


@given(st.integers(INT64_MIN, INT64_MAX))
@example(INT64_MIN)
@example(INT64_MAX)
def test_any_64_bit_integer_is_accepted_as_itself(number: int) -> None:
    assert outcome(INT, f" {number} ") == number


@given(st.integers(max_value=INT64_MIN - 1) | st.integers(min_value=INT64_MAX + 1))
@example(INT64_MIN - 1)
@example(INT64_MAX + 1)
def test_integers_beyond_64_bits_are_out_of_range(number: int) -> None:
    text = str(number)
    assert outcome(INT, text) == refused("OUT_OF_RANGE", text, "outside the 64-bit integer range")


@given(not_parsed_by(int))
@example("12.5")
@example("1e3")
@example("0x1F")
@example("1,000")
@example("12 apples")
@example("½")
@example("--1")
def test_anything_but_a_whole_number_is_invalid_int(text: str) -> None:
    assert outcome(INT, text) == refused("INVALID_INT", text.strip(), "not a whole number")


@pytest.mark.parametrize("kind", ["int", "decimal"])
@pytest.mark.parametrize("exclusive", [False, True], ids=["inclusive", "exclusive"])
@given(number=st.integers(-30, 30))
@example(number=-11)
@example(number=-10)
@example(number=-9)
@example(number=9)
@example(number=10)
@example(number=11)
def test_bounds_accept_exactly_the_numbers_between_them(
    kind: str, exclusive: bool, number: int
) -> None:
    checker = column(type=kind, min="-10", max="10", exclusive_bounds=exclusive)
    text = str(number)
    inside = -10 < number < 10 if exclusive else -10 <= number <= 10
    if inside:
        assert outcome(checker, text) == number
    elif number <= -10:
        relation = "greater than" if exclusive else "at least"
        assert outcome(checker, text) == refused("TOO_SMALL", text, f"must be {relation} -10")
    else:
        relation = "less than" if exclusive else "at most"
        assert outcome(checker, text) == refused("TOO_LARGE", text, f"must be {relation} 10")


def test_a_minimum_alone_or_a_maximum_alone_is_enforced() -> None:
    at_least = column(type="int", min=0)
    assert outcome(at_least, "-1") == refused("TOO_SMALL", "-1", "must be at least 0")
    assert outcome(at_least, str(INT64_MAX)) == INT64_MAX
    at_most = column(type="int", max=0)
    assert outcome(at_most, "1") == refused("TOO_LARGE", "1", "must be at most 0")
    assert outcome(at_most, str(INT64_MIN)) == INT64_MIN


# --- decimal -----------------------------------------------------------------------------

AMOUNT = column(type="decimal", min="-1000000", max="1000000")


@given(st.decimals(min_value=-2_000_000, max_value=2_000_000, places=2))
@example(Decimal("-1000000"))
@example(Decimal("1000000"))
@example(Decimal("-1000000.01"))
@example(Decimal("1000000.01"))
def test_decimals_within_the_bounds_keep_every_digit_and_others_are_refused(
    number: Decimal,
) -> None:
    text = str(number)
    if number < -1_000_000:
        assert outcome(AMOUNT, text) == refused("TOO_SMALL", text, "must be at least -1000000")
    elif number > 1_000_000:
        assert outcome(AMOUNT, text) == refused("TOO_LARGE", text, "must be at most 1000000")
    else:
        value = outcome(AMOUNT, text)
        assert (value, str(value)) == (number, text)


DECIMAL = column(type="decimal")


@given(not_parsed_by(Decimal))
@example("1,5")
@example("1.2.3")
@example("€5")
@example("0x10")
@example("1e")
@example("12 EUR")
def test_anything_but_a_number_is_invalid_decimal(text: str) -> None:
    assert outcome(DECIMAL, text) == refused(
        "INVALID_DECIMAL", text.strip(), "not a decimal number"
    )


@pytest.mark.parametrize("text", ["NaN", "nan", "sNaN", "-NaN", "Infinity", "-Infinity", "inf"])
def test_nan_and_infinity_are_invalid_decimal(text: str) -> None:
    assert outcome(DECIMAL, text) == refused("INVALID_DECIMAL", text, "not a finite number")


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("9" * 131072, True),
        ("9" * 131073, False),
        ("1E+131071", True),
        ("1E+131072", False),
        ("0." + "9" * 16383, True),
        ("0." + "9" * 16384, False),
        ("1E-16383", True),
        ("1E-16384", False),
    ],
    ids=[
        "131072-integer-digits",
        "131073-integer-digits",
        "exponent-131071",
        "exponent-131072",
        "16383-fraction-digits",
        "16384-fraction-digits",
        "exponent-minus-16383",
        "exponent-minus-16384",
    ],
)
def test_decimals_fit_postgresql_numeric_exactly_up_to_its_limits(text: str, fits: bool) -> None:
    """PostgreSQL numeric: 131072 digits before the point, 16383 after (checked with psql)."""
    if fits:
        assert outcome(DECIMAL, text) == Decimal(text)
    else:
        assert outcome(DECIMAL, text) == refused(
            "OUT_OF_RANGE", text, "too many digits for a PostgreSQL numeric"
        )


# --- bool --------------------------------------------------------------------------------


def any_case(words: list[str]) -> st.SearchStrategy[str]:
    """The words, each letter in either case."""
    return st.sampled_from(words).flatmap(
        lambda word: st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in word)).map(
            "".join
        )
    )


BOOL = column(type="bool")


@given(any_case(["true", "t", "yes", "y", "1"]))
def test_true_words_in_any_case_are_true(text: str) -> None:
    assert outcome(BOOL, text) is True


@given(any_case(["false", "f", "no", "n", "0"]))
def test_false_words_in_any_case_are_false(text: str) -> None:
    assert outcome(BOOL, text) is False


@pytest.mark.parametrize(
    "text", ["2", "-1", "0.0", "on", "off", "none", "null", "ja", "truee", "yess", "nope", "+"]
)
def test_other_words_are_not_booleans(text: str) -> None:
    assert outcome(BOOL, text) == refused(
        "INVALID_BOOL", text, "not a boolean (true/false, yes/no, 1/0)"
    )


# --- email -------------------------------------------------------------------------------

EMAIL = column(type="email")
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-."
LABEL = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=20)


@given(
    local=st.text(ATEXT, min_size=1, max_size=64),
    labels=st.lists(LABEL, min_size=1, max_size=4),
    top=st.text(string.ascii_letters, min_size=2, max_size=10),
)
def test_a_well_formed_address_is_accepted_with_only_its_domain_lower_cased(
    local: str, labels: list[str], top: str
) -> None:
    domain = ".".join([*labels, top])
    assert outcome(EMAIL, f"{local}@{domain}") == f"{local}@{domain.lower()}"


@pytest.mark.parametrize(
    "text",
    [
        "plainaddress",
        "a@b",  # no dot in the domain
        "a@localhost",
        "a@b.c.",  # a dot at the end
        "a@x.com.",
        "a@x.",
        "a@.com",
        "@x.com",
        "a@",
        "a b@x.com",  # spaces
        "a@x .com",
        "a@x.com extra",
        "a\tb@x.com",
        "a@x.c\u00a0om",
        "a@b@x.com",  # a second @
        "a@@x.com",
        "a@x,com",
    ],
)
def test_real_world_bad_addresses_are_invalid_email(text: str) -> None:
    assert outcome(EMAIL, text) == refused("INVALID_EMAIL", text, "not a valid e-mail address")


@given(st.integers(7, 300))
@example(254)
@example(255)
def test_addresses_up_to_254_characters_are_accepted(length: int) -> None:
    text = "a" * (length - 6) + "@x.com"
    if length <= 254:
        assert outcome(EMAIL, text) == text
    else:
        assert outcome(EMAIL, text) == refused("INVALID_EMAIL", text, "not a valid e-mail address")


# --- phone -------------------------------------------------------------------------------

PHONE = column(type="phone")
# E.164: a country code starting 1-9, then up to 15 digits in all.
E164_DIGITS = st.builds(
    "".join,
    st.tuples(st.sampled_from("123456789"), st.text(string.digits, min_size=1, max_size=14)),
)


@st.composite
def as_written(draw: st.DrawFn, digits: str) -> str:
    """The digits as people write them: grouped with spaces, dashes, dots and parentheses."""
    groups = []
    for digit in digits:
        groups.append(draw(st.sampled_from(["", "", " ", "-", ".", " (", ") "])) + digit)
    return "".join(groups)


@given(E164_DIGITS.flatmap(lambda d: st.tuples(st.just(d), as_written(d))))
def test_e164_numbers_are_accepted_without_their_punctuation(
    digits_written: tuple[str, str],
) -> None:
    digits, written = digits_written
    assert outcome(PHONE, "+" + written) == "+" + digits


@given(E164_DIGITS)
def test_the_00_international_prefix_means_plus(digits: str) -> None:
    assert outcome(PHONE, "00" + digits) == "+" + digits


@given(
    st.text(string.digits, min_size=16, max_size=30)
    .filter(lambda d: d[0] != "0")
    .map(lambda d: "+" + d)
    | st.text(string.digits, min_size=1, max_size=14).map(lambda d: "+0" + d)
    | st.sampled_from("123456789").map(lambda d: "+" + d)
)
@example("+1234567890123456")  # 16 digits
@example("+0151123456")
@example("+1")
def test_numbers_of_16_digits_one_digit_or_a_leading_zero_are_refused(text: str) -> None:
    assert outcome(PHONE, text) == refused(
        "INVALID_PHONE", text, "not an E.164 phone number (+ and up to 15 digits)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "12345",
        "0151 1234567",  # national, no country code
        "+",
        "00",
        "++49151123456",
        "+49/151/123456",
        "+49 151 CALL-ME",
        "+49151123456 ext. 12",
        "+49151123456x",
        "+49\u0661\u0665\u0661123456",  # Arabic-Indic digits after the country code
    ],
)
def test_real_world_bad_numbers_are_invalid_phone(text: str) -> None:
    assert outcome(PHONE, text) == refused(
        "INVALID_PHONE", text, "not an E.164 phone number (+ and up to 15 digits)"
    )


# --- string, enum, uuid, date, timestamp -------------------------------------------------

NAME = column(type="string", max_length=10)


@given(st.text(string.ascii_letters + " ", min_size=1, max_size=20).map(lambda t: f"<{t}>"))
@example("<" + "a" * 8 + ">")
@example("<" + "a" * 9 + ">")
def test_strings_up_to_max_length_are_accepted(text: str) -> None:
    if len(text) <= 10:
        assert outcome(NAME, text) == text
    else:
        assert outcome(NAME, text) == refused("TOO_LONG", text, "longer than 10 characters")


@pytest.mark.parametrize("text", ["de12", "DE1", "DE123", "xDE12", "DE12x", "D E12"])
def test_a_pattern_must_match_the_whole_value(text: str) -> None:
    checker = column(type="string", pattern="[A-Z]{2}[0-9]{2}")
    assert outcome(checker, "DE12") == "DE12"
    assert outcome(checker, text) == refused(
        "PATTERN_MISMATCH", text, "does not match [A-Z]{2}[0-9]{2}"
    )


@pytest.mark.parametrize("text", ["Lead", "LEAD", "lea", "leads", "active,lead"])
def test_enum_values_are_exact_and_case_sensitive(text: str) -> None:
    checker = column(type="enum", values=["active", "inactive", "lead"])
    assert outcome(checker, "lead") == "lead"
    assert outcome(checker, text) == refused(
        "INVALID_ENUM", text, "not one of active, inactive, lead"
    )


UUID = column(type="uuid")


@given(st.uuids(), st.sampled_from(["{}", "{{{}}}", "urn:uuid:{}"]), st.booleans())
def test_uuids_are_accepted_in_their_usual_spellings(
    value: uuid.UUID, spelling: str, upper: bool
) -> None:
    assert outcome(UUID, spelling.format(str(value).upper() if upper else value)) == value
    assert outcome(UUID, value.hex) == value


@pytest.mark.parametrize(
    "text", ["nope", "1234", "123e4567-e89b-12d3-a456-42661417400g", "123e4567-e89b-12d3-a456"]
)
def test_bad_uuids_are_invalid_uuid(text: str) -> None:
    assert outcome(UUID, text) == refused("INVALID_UUID", text, "not a UUID")


DATE = column(type="date")


@given(st.dates())
def test_iso_dates_are_accepted(day: date) -> None:
    assert outcome(DATE, day.isoformat()) == day


@pytest.mark.parametrize("text", ["2024-02-30", "2023-02-29", "31.12.2024", "2024/01/01", "today"])
def test_bad_dates_are_invalid_date(text: str) -> None:
    assert outcome(DATE, text) == refused("INVALID_DATE", text, "not a date (YYYY-MM-DD)")


TIMESTAMP = column(type="timestamp")
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=OFFSETS))
def test_timestamps_with_an_offset_are_the_same_moment_in_utc(moment: datetime) -> None:
    value = outcome(TIMESTAMP, moment.isoformat())
    assert value == moment
    assert value.tzinfo is UTC


@given(st.datetimes())
def test_timestamps_without_an_offset_are_read_as_utc(moment: datetime) -> None:
    assert outcome(TIMESTAMP, moment.isoformat()) == moment.replace(tzinfo=UTC)


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_timestamps_outside_the_years_1_to_9999_in_utc_are_out_of_range(text: str) -> None:
    assert outcome(TIMESTAMP, text) == refused(
        "OUT_OF_RANGE", text, "outside the years 1 to 9999 in UTC"
    )


@pytest.mark.parametrize(
    "text", ["yesterday", "2024-13-01T00:00:00", "2024-01-01T25:00", "1700000000"]
)
def test_bad_timestamps_are_invalid_timestamp(text: str) -> None:
    assert outcome(TIMESTAMP, text) == refused(
        "INVALID_TIMESTAMP", text, "not an ISO 8601 timestamp"
    )


@pytest.fixture
def local_time_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is five hours behind UTC, as on a server elsewhere."""
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_not_utc")
def test_the_servers_time_zone_never_changes_a_timestamp_or_its_key() -> None:
    checker = RowChecker(
        parse_import_type(
            {
                "name": "m",
                "table": "m",
                "key": ["at"],
                "columns": [{"name": "at", "type": "timestamp"}],
            }
        ),
        {"at": [0]},
        ImportMode.UPSERT,
    )
    (value,) = checker.check(["2024-06-01T12:00:00+02:00"]).values or ()
    assert value.isoformat() == "2024-06-01T10:00:00+00:00"
    assert checker.key(["2024-06-01T12:00:00+02:00"]) == "2024-06-01T10:00:00+00:00"
    assert checker.key(["2024-06-01T10:00:00"]) == "2024-06-01T10:00:00+00:00"


# --- rows, keys and modes ----------------------------------------------------------------


def test_a_missing_required_value_is_reported_with_field_and_message() -> None:
    checker = RowChecker(CONTACTS, {"email": [0], "first_name": [1]}, ImportMode.UPSERT)
    assert checker.check(["  ", "Ann"]).errors == (
        RowError("REQUIRED", "email", "", "a value is required"),
    )


def test_delete_checks_only_the_key_whatever_else_the_row_holds() -> None:
    positions = {c.name: [i] for i, c in enumerate(CONTACTS.columns)}
    delete = RowChecker(CONTACTS, positions, ImportMode.DELETE)
    assert [c.name for c in delete.columns] == ["email"]
    row = ["A@X.com", "x" * 500, "", "not a phone", "never", "gone", "-5"]
    assert delete.check(row).values == ("A@x.com",)
    assert delete.key(row) == "A@x.com"
    assert delete.check(["", *row[1:]]).errors == (
        RowError("REQUIRED", "email", "", "a value is required"),
    )


COMPOSITE = parse_import_type(
    {
        "name": "t",
        "table": "t",
        "key": ["a", "b", "c"],
        "columns": [
            {"name": "a", "type": "string"},
            {"name": "b", "type": "decimal"},
            {"name": "c", "type": "email"},
        ],
    }
)


@given(
    st.tuples(st.text(string.ascii_letters, min_size=1), st.integers(), st.sampled_from("xyz")),
    st.tuples(st.text(string.ascii_letters, min_size=1), st.integers(), st.sampled_from("xyz")),
)
def test_a_composite_key_uses_every_column(
    first: tuple[str, int, str], second: tuple[str, int, str]
) -> None:
    key = RowChecker(COMPOSITE, {"a": [0], "b": [1], "c": [2]}, ImportMode.UPSERT).key

    def row(parts: tuple[str, int, str]) -> list[str]:
        return [parts[0], str(parts[1]), f"{parts[2]}@X.com"]

    canonical = [first[0], str(Decimal(first[1]).normalize()), f"{first[2]}@x.com"]
    assert key(row(first)) == json.dumps(canonical)
    assert (key(row(first)) == key(row(second))) == (first == second)


@pytest.mark.parametrize(("one", "other"), [("1.50", "1.5"), ("100", "1E+2"), ("0.0", "0")])
def test_numbers_spelled_differently_are_one_key(one: str, other: str) -> None:
    import_type = parse_import_type(
        {"name": "n", "table": "n", "key": ["n"], "columns": [{"name": "n", "type": "decimal"}]}
    )
    key = RowChecker(import_type, {"n": [0]}, ImportMode.UPSERT).key
    assert key([one]) == key([other]) == str(Decimal(one).normalize())


def test_positions_beyond_a_short_row_read_as_empty() -> None:
    """A JSON Lines row is shorter than the columns later lines add; an alias may lie past it."""
    checker = RowChecker(CONTACTS, {"email": [0, 1]}, ImportMode.UPSERT)
    assert checker.key([""]) is None
    assert checker.check([""]).errors == (RowError("REQUIRED", "email", "", "a value is required"),)
    assert checker.key(["", "b@x.com"]) == "b@x.com"
