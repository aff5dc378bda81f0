"""Row validation: every rule of every column type, every error of a row kept."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from importd_server.engine.import_types import (
    ImportTypeError,
    default_types_dir,
    load_import_types,
    parse_import_type,
)
from importd_server.engine.validation import CheckedRow, RowChecker
from importd_server.model import ImportMode, ImportType, RowError

TYPES = load_import_types(default_types_dir())


class NamedChecker:
    """A RowChecker over a file whose columns are exactly the import type's, fed by name."""

    def __init__(self, import_type: ImportType, mode: ImportMode = ImportMode.UPSERT) -> None:
        self.names = [c.name for c in import_type.columns]
        positions = {name: [i] for i, name in enumerate(self.names)}
        self.checker = RowChecker(import_type, positions, mode)

    def check(self, row: dict[str, str]) -> CheckedRow:
        return self.checker.check(self.fields(row))

    def key(self, row: dict[str, str]) -> str | None:
        return self.checker.key(self.fields(row))

    def fields(self, row: dict[str, str]) -> list[str]:
        return [row.get(name, "") for name in self.names]


def checker(type_name: str, mode: ImportMode = ImportMode.UPSERT) -> NamedChecker:
    return NamedChecker(TYPES[type_name], mode)


def test_a_valid_contact_is_typed_and_normalized() -> None:
    row = checker("contacts").check(
        {
            "email": "Ann@Example.COM",
            "first_name": " Ann ",
            "phone": "+49 (151) 123-456",
            "birth_date": "1990-01-02",
            "status": "",
            "score": "100",
        }
    )
    assert row.errors == ()
    assert row.values == (
        "Ann@example.com",
        "Ann",
        None,
        "+49151123456",
        date(1990, 1, 2),
        "active",
        100,
    )
    assert checker("contacts").key({"email": " Ann@Example.COM"}) == "Ann@example.com"


def test_every_error_of_a_row_is_reported_with_code_field_value_and_message() -> None:
    row = checker("contacts").check(
        {
            "email": "bob@",
            "first_name": "x" * 101,
            "phone": "12345",
            "birth_date": "1990-02-30",
            "status": "gone",
            "score": "-1",
        }
    )
    assert row.values is None
    assert row.errors == (
        RowError("INVALID_EMAIL", "email", "bob@", "not a valid e-mail address"),
        RowError("TOO_LONG", "first_name", "x" * 101, "longer than 100 characters"),
        RowError(
            "INVALID_PHONE", "phone", "12345", "not an E.164 phone number (+ and up to 15 digits)"
        ),
        RowError("INVALID_DATE", "birth_date", "1990-02-30", "not a date (YYYY-MM-DD)"),
        RowError("INVALID_ENUM", "status", "gone", "not one of active, inactive, lead"),
        RowError("TOO_SMALL", "score", "-1", "must be at least 0"),
    )


def test_transactions_types_and_rules() -> None:
    transaction_id = uuid.uuid4()
    good = checker("transactions").check(
        {
            "transaction_id": str(transaction_id),
            "account": "DE89370400440532013000",
            "amount": "-12.50",
            "currency": "EUR",
            "booked_at": "2026-11-01T10:00:00",
            "settled": "yes",
        }
    )
    assert good.values == (
        transaction_id,
        "DE89370400440532013000",
        Decimal("-12.50"),
        "EUR",
        datetime(2026, 11, 1, 10, tzinfo=UTC),
        True,
        None,
    )
    bad = checker("transactions").check(
        {
            "transaction_id": "nope",
            "account": "de89",
            "amount": "NaN",
            "currency": "eur",
            "booked_at": "yesterday",
            "settled": "maybe",
        }
    )
    assert [(e.code, e.field) for e in bad.errors] == [
        ("INVALID_UUID", "transaction_id"),
        ("PATTERN_MISMATCH", "account"),
        ("INVALID_DECIMAL", "amount"),
        ("INVALID_ENUM", "currency"),
        ("INVALID_TIMESTAMP", "booked_at"),
        ("INVALID_BOOL", "settled"),
    ]


def test_missing_required_values_are_each_reported() -> None:
    row = checker("transactions").check({})
    assert [(e.code, e.field) for e in row.errors] == [
        ("REQUIRED", "transaction_id"),
        ("REQUIRED", "account"),
        ("REQUIRED", "amount"),
        ("REQUIRED", "currency"),
        ("REQUIRED", "booked_at"),
    ]
    assert checker("transactions").key({}) is None
    assert checker("transactions").key({"transaction_id": "nope"}) is None


def test_exclusive_bounds_exclude_the_bound_itself() -> None:
    import_type = parse_import_type(
        {
            "name": "t",
            "table": "t",
            "key": ["n"],
            "columns": [
                {"name": "n", "type": "int", "min": 0, "max": 10, "exclusive_bounds": True}
            ],
        }
    )
    check = NamedChecker(import_type, ImportMode.INSERT).check
    assert check({"n": "0"}).errors[0].message == "must be greater than 0"
    assert check({"n": "10"}).errors[0].code == "TOO_LARGE"
    assert check({"n": "5"}).values == (5,)


def test_update_mode_checks_only_the_key_and_the_columns_in_the_file() -> None:
    import_type = TYPES["contacts"]
    update = RowChecker(import_type, {"email": [1], "score": [0]}, ImportMode.UPDATE)
    assert [c.name for c in update.columns] == ["email", "score"]
    assert update.check(["7", "a@x.com"]).values == ("a@x.com", 7)


def test_aliases_in_json_lines_take_the_first_non_empty_spelling() -> None:
    import_type = TYPES["contacts"]
    aliases = RowChecker(import_type, {"email": [0, 2]}, ImportMode.UPSERT)
    assert aliases.key(["", "x", "b@x.com"]) == "b@x.com"
    assert aliases.key(["a@x.com"]) == "a@x.com"


def test_a_row_validator_hook_adds_its_errors() -> None:
    import_type = parse_import_type(
        {
            "name": "t",
            "table": "t",
            "key": ["n"],
            "validator": "tests.unit.hooks:even_only",
            "columns": [{"name": "n", "type": "int"}],
        }
    )
    check = NamedChecker(import_type, ImportMode.INSERT).check
    assert check({"n": "2"}).errors == ()
    assert check({"n": "3"}).errors == (RowError("ODD", "n", "3", "must be even"),)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            {
                "name": "t",
                "table": "t; drop",
                "key": ["n"],
                "columns": [{"name": "n", "type": "int"}],
            },
            "table",
        ),
        (
            {"name": "t", "table": "t", "key": ["m"], "columns": [{"name": "n", "type": "int"}]},
            "key",
        ),
        (
            {"name": "t", "table": "t", "key": ["n"], "columns": [{"name": "n", "type": "blob"}]},
            "type",
        ),
        (
            {"name": "t", "table": "t", "key": ["n"], "columns": [{"name": "n", "type": "enum"}]},
            "values",
        ),
    ],
)
def test_bad_import_type_declarations_are_refused(
    document: dict[str, object], problem: str
) -> None:
    with pytest.raises(ImportTypeError, match=problem):
        parse_import_type(document)


@pytest.mark.parametrize(
    ("type_name", "row", "field"),
    [
        ("contacts", {"email": "a@x.com", "score": str(2**63)}, "score"),
        (
            "transactions",
            {"booked_at": "9999-12-31T23:00:00-05:00"},
            "booked_at",
        ),
        ("transactions", {"amount": "0." + "1" * 17000}, "amount"),
    ],
)
def test_values_postgresql_would_refuse_are_row_errors(
    type_name: str, row: dict[str, str], field: str
) -> None:
    errors = checker(type_name).check(row).errors
    assert ("OUT_OF_RANGE", field) in [(e.code, e.field) for e in errors]


def test_composite_keys_cannot_collide_and_equal_values_share_one_key() -> None:
    import_type = parse_import_type(
        {
            "name": "t",
            "table": "t",
            "key": ["a", "b"],
            "columns": [{"name": "a", "type": "string"}, {"name": "b", "type": "string"}],
        }
    )
    keys = RowChecker(import_type, {"a": [0], "b": [1]}, ImportMode.UPSERT).key
    assert keys(["a|b", "c"]) != keys(["a", "b|c"])
    moments = parse_import_type(
        {"name": "m", "table": "m", "key": ["at"], "columns": [{"name": "at", "type": "timestamp"}]}
    )
    key = RowChecker(moments, {"at": [0]}, ImportMode.UPSERT).key
    assert key(["2024-01-01T00:00:00Z"]) == key(["2024-01-01T01:00:00+01:00"])


def test_key_columns_are_always_required() -> None:
    import_type = parse_import_type(
        {"name": "t", "table": "t", "key": ["n"], "columns": [{"name": "n", "type": "int"}]}
    )
    assert import_type.column("n").required


def test_update_mode_does_not_fill_defaults() -> None:
    import_type = TYPES["contacts"]
    update = RowChecker(import_type, {"email": [0], "status": [1]}, ImportMode.UPDATE)
    assert update.check(["a@x.com", ""]).values == ("a@x.com", None)
    upsert = RowChecker(import_type, {"email": [0], "status": [1]}, ImportMode.UPSERT)
    assert upsert.check(["a@x.com", ""]).values == (
        "a@x.com",
        None,
        None,
        None,
        None,
        "active",
        None,
    )
