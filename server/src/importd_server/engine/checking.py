"""Checking rows at staging, block by block: the fast path's vectorised checks first, and
RowChecker, the reference, for every row they do not accept (so a row's errors are always
RowChecker's). Gives the rows as new entries, with their status, key and clean values."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from importd_server.engine.blocks import Block, ColumnBlock
from importd_server.engine.fast_checks import accepts, key_is_raw
from importd_server.engine.parsing import FileColumns, ParsedRow
from importd_server.engine.validation import RowChecker
from importd_server.model import EntryStatus, ImportMode, ImportType, RowError
from importd_server.store.entries import (
    NewEntries,
    array_literal,
    array_literals,
    errors_to_json,
)

PENDING = EntryStatus.PENDING.value
FAILED = EntryStatus.FAILED.value


class BlockChecker:
    """Checks the blocks of one file: its import type, columns (as read so far) and mode."""

    def __init__(self, import_type: ImportType, mode: ImportMode, columns: FileColumns) -> None:
        self._import_type = import_type
        self._mode = mode
        self._columns = columns
        self._known = -1
        self._checker = RowChecker(import_type, {}, mode)
        self._defaults: dict[str, str | None] = {}
        self._by_field = True
        # The errors of the rows failed so far, by (code, field): the job's error summary.
        self.errors: Counter[tuple[str, str]] = Counter()

    def check(self, block: Block) -> NewEntries:
        """The block's rows as entries."""
        if len(self._columns.names) != self._known:
            # The header, or JSON Lines bringing new keys: the checker follows the columns.
            self._known = len(self._columns.names)
            self._checker = RowChecker(self._import_type, self._columns.positions, self._mode)
            self._defaults = self._checker.defaults()
            # A column read from several fields (JSON Lines aliases): whole rows only.
            self._by_field = all(len(where) <= 1 for where in self._columns.positions.values())
        if isinstance(block, ColumnBlock):
            return self._check_columns(block)
        return self._check_rows(block)

    def _check_columns(self, block: ColumnBlock) -> NewEntries:
        table = block.table
        rows = table.num_rows
        fields = [table.column(i).combine_chunks() for i in range(table.num_columns)]
        positions = self._columns.positions
        accepted = pc.is_valid(fields[0])  # all true
        if self._import_type.row_validator is not None:
            accepted = pc.invert(accepted)  # a hook is Python per row: RowChecker runs it
        # Per column of the checker: where the file has it, and which of its fields the
        # fast path accepts (None: absent, NULL or its default for every row alike).
        verdicts: list[tuple[int | None, pa.Array | None]] = []
        for column in self._checker.columns:
            where = positions.get(column.name)
            if not where:
                verdicts.append((None, None))
                continue
            default_valid = (
                self._defaults[column.name] is not None if column.name in self._defaults else None
            )
            ok = accepts(column, fields[where[0]], default_valid)
            verdicts.append((where[0], ok))
            accepted = pc.and_(accepted, ok)
        keys = self._fast_keys(fields)
        statuses = pa.repeat(PENDING, rows)
        clean = pa.nulls(rows, pa.string())
        errors = pa.nulls(rows, pa.string())
        refused = pc.invert(accepted)
        slow = pc.indices_nonzero(refused)
        if len(slow):
            checked = self._check_refused(fields, slow, verdicts)
            statuses = pc.replace_with_mask(statuses, refused, pa.array(checked.statuses))
            keys = pc.replace_with_mask(keys, refused, pa.array(checked.keys, pa.string()))
            clean = pc.replace_with_mask(clean, refused, pa.array(checked.clean, pa.string()))
            errors = pc.replace_with_mask(errors, refused, pa.array(checked.errors, pa.string()))
        entries = NewEntries(
            row_numbers=block.row_numbers,
            line_numbers=block.line_numbers,
            statuses=statuses,
            keys=keys,
            raw=array_literals(fields),
            clean=clean,
            errors=errors,
        )
        return entries.concat(self._check_rows(block.odd_rows)) if block.odd_rows else entries

    def _check_refused(
        self,
        fields: list[pa.Array],
        slow: pa.Array,
        verdicts: list[tuple[int | None, pa.Array | None]],
    ) -> _Checked:
        """The rows at `slow`, which the fast path refused. Only the fields it refused can
        hold errors: RowChecker checks those field by field, in column order, which gives
        a failed row its errors; the rest (valid, but not spelled canonically) it checks
        whole, for their clean values and keys."""
        failures: dict[int, list[RowError]] = {}  # position in `slow` -> errors
        if self._by_field:
            for index, (position, ok) in enumerate(verdicts):
                if position is None or ok is None:
                    if (error := self._checker.field_error(index, "")) is not None:
                        for at in range(len(slow)):
                            failures.setdefault(at, []).append(error)
                    continue
                bad = pc.indices_nonzero(pc.invert(ok.take(slow)))
                texts = fields[position].take(slow.take(bad)).to_pylist()
                for at, text in zip(bad.to_pylist(), texts, strict=True):
                    if (error := self._checker.field_error(index, text)) is not None:
                        failures.setdefault(at, []).append(error)
        checked = _Checked(self.errors)
        values = [f.take(slow).to_pylist() for f in fields]
        for at, row in enumerate(zip(*values, strict=True)):
            if at in failures:
                checked.fail(self._checker, list(row), failures[at])
            else:
                checked.check(self._checker, list(row))
        return checked

    def _fast_keys(self, fields: list[pa.Array]) -> pa.Array:
        """The keys of the rows the fast path accepts."""
        key = self._import_type.key
        if len(key) == 1 and key_is_raw(self._import_type.column(key[0])):
            return fields[self._columns.positions[key[0]][0]]
        # Keys that are not the value as written (a decimal normalised, several columns)
        # are made by RowChecker, per row.
        values = [f.to_pylist() for f in fields]
        key_of = self._checker.key
        return pa.array([key_of(row) for row in zip(*values, strict=True)], pa.string())

    def _check_rows(self, rows: list[ParsedRow]) -> NewEntries:
        checked = _Checked(self.errors)
        for row in rows:
            if row.error is None:
                checked.check(self._checker, row.values)
            else:
                checked.failed(None, [row.error])
        return NewEntries(
            row_numbers=pa.array([r.row_number for r in rows], pa.int64()),
            line_numbers=pa.array([r.line_number for r in rows], pa.int64()),
            statuses=pa.array(checked.statuses, pa.string()),
            keys=pa.array(checked.keys, pa.string()),
            raw=pa.array([array_literal(r.values) for r in rows], pa.string()),
            clean=pa.array(checked.clean, pa.string()),
            errors=pa.array(checked.errors, pa.string()),
        )


@dataclass
class _Checked:
    """Rows RowChecker checked: each one's status, key, clean literal and errors (JSON);
    the failed rows' errors also counted into `counted`."""

    counted: Counter[tuple[str, str]]
    statuses: list[str] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    clean: list[str | None] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)

    def add(self, status: str, key: str | None, clean: str | None, errors: str | None) -> None:
        self.statuses.append(status)
        self.keys.append(key)
        self.clean.append(clean)
        self.errors.append(errors)

    def check(self, checker: RowChecker, row: list[str]) -> None:
        result = checker.check(row)
        if result.values is None:
            self.fail(checker, row, result.errors)
        else:
            clean = checker.clean_row(row, result.values)
            literal = None if clean is None else array_literal(clean)
            self.add(PENDING, checker.key_of_checked(result.values), literal, None)

    def fail(self, checker: RowChecker, row: list[str], errors: Sequence[RowError]) -> None:
        # The key even of an invalid row: if its key repeats later in the file, the row is
        # SKIPPED (superseded), not FAILED.
        self.failed(checker.key(row), errors)

    def failed(self, key: str | None, errors: Sequence[RowError]) -> None:
        self.add(FAILED, key, None, json.dumps(errors_to_json(errors)))
        self.counted.update((e.code, e.field) for e in errors)
