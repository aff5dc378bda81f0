"""BlockChecker against RowChecker, the reference: whichever fields of a row the fast path
refuses, every row gets RowChecker's status, errors (in column order) and key."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from importd_server.engine.blocks import ColumnBlock
from importd_server.engine.checking import BlockChecker
from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.parsing import FileColumns
from importd_server.engine.validation import RowChecker
from importd_server.model import ImportMode, ImportType, RowError
from importd_server.store.entries import array_literal, errors_to_json

CONTACTS = load_import_types(default_types_dir())["contacts"]
HEADER = ["email", "first_name", "last_name", "phone", "birth_date", "status", "score", "x"]
# Per column: canonical values, values RowChecker accepts in another spelling, and errors.
FIELDS = [
    ["a@x.com", "b@x.com", "a@X.com", " b@x.com", "a@", "", "a b@x.com"],
    ["Ann", "", " Ann", "A" * 101],
    ["Lee", "", "L" * 100, "L" * 101],
    ["+14155550100", "", "+1 415 555 0100", "0044 20 7946 0958", "555-CALL", "12"],
    ["1990-02-28", "", "1990-02-30", "31/12/1990", " 1990-02-28"],
    ["active", "lead", "", "retired", " lead", "Active"],
    ["0", "100", "", "101", "-3", "many", "007", " 5"],
    ["", "anything"],
]


def hooked(values: dict[str, object]) -> list[RowError]:
    """A row validator: refuses first names equal to last names (DELETE checks keys only)."""
    first = values.get("first_name")
    if first is not None and first == values.get("last_name"):
        return [RowError("SAME_NAMES", "first_name", "", "first and last name are equal")]
    return []


@settings(max_examples=200)
@given(
    st.lists(st.tuples(*(st.sampled_from(f) for f in FIELDS)), min_size=1, max_size=30),
    st.sampled_from(list(ImportMode)),
    st.booleans(),
)
def test_each_row_has_the_reference_status_errors_and_key(
    rows: list[tuple[str, ...]], mode: ImportMode, with_hook: bool
) -> None:
    import_type: ImportType = replace(CONTACTS, row_validator=hooked if with_hook else None)
    columns = FileColumns.of(HEADER, import_type)
    reference = RowChecker(import_type, columns.positions, mode)
    table = pa.table(
        [pa.array([r[i] for r in rows], pa.string()) for i in range(len(HEADER))],
        names=[f"c{i}" for i in range(len(HEADER))],
    )
    numbers = pa.array(range(1, len(rows) + 1), pa.int64())
    entries = BlockChecker(import_type, mode, columns).check(
        ColumnBlock(numbers, numbers, table, [])
    )
    for at, row in enumerate(rows):
        checked = reference.check(list(row))
        if checked.values is None:
            assert entries.statuses[at].as_py() == "FAILED"
            assert entries.errors[at].as_py() == json.dumps(errors_to_json(checked.errors))
            assert entries.keys[at].as_py() == reference.key(list(row))
            continue
        assert entries.statuses[at].as_py() == "PENDING"
        assert entries.keys[at].as_py() == reference.key_of_checked(checked.values)
        clean = entries.clean[at].as_py()
        if clean is not None:  # else the row is canonical as the file has it
            expected = reference.clean_row(list(row), checked.values)
            assert clean == (None if expected is None else array_literal(expected))
