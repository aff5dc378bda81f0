"""Import types: declared in TOML files, one per type, loaded once at start-up.

An import type (`model.ImportType`) names its target table, key columns, allowed modes, and
each column's type and rules. Identifiers come from these files, never from an imported file.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from importd_server.model import ColumnSpec, ImportMode, ImportType, RowValidator

COLUMN_TYPES = (
    "string",
    "int",
    "decimal",
    "bool",
    "date",
    "timestamp",
    "email",
    "phone",
    "uuid",
    "enum",
)
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ImportTypeError(ValueError):
    """An import type file is not valid; the message names the file and the problem."""


def load_import_types(folder: Path) -> dict[str, ImportType]:
    """Every `*.toml` import type in `folder`, by name."""
    types: dict[str, ImportType] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            import_type = parse_import_type(tomllib.loads(path.read_text(encoding="utf-8")))
        except (tomllib.TOMLDecodeError, ImportTypeError, KeyError, TypeError) as error:
            raise ImportTypeError(f"{path}: {error}") from error
        if import_type.name in types:
            raise ImportTypeError(f"{path}: import type {import_type.name!r} is declared twice")
        types[import_type.name] = import_type
    return types


def default_types_dir() -> Path:
    """The folder of the import types shipped with importd (contacts, transactions)."""
    return Path(__file__).resolve().parent.parent / "import_types"


def parse_import_type(document: Mapping[str, Any]) -> ImportType:
    """An ImportType from a parsed TOML document."""
    key = tuple(document["key"])
    # A key column always needs a value: it is the row's identity (and NOT NULL in the table).
    columns = tuple(
        replace(column, required=True) if column.name in key else column
        for column in (_parse_column(c) for c in document["columns"])
    )
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ImportTypeError("column names must be unique")
    if not key or any(k not in names for k in key):
        raise ImportTypeError(f"key {list(key)} must name declared columns")
    table = _identifier(document["table"], "table")
    try:
        modes = tuple(ImportMode(m) for m in document.get("modes", list(ImportMode)))
    except ValueError as error:
        raise ImportTypeError(str(error)) from None
    tenant_column = document.get("tenant_column")
    if tenant_column is not None:
        _identifier(tenant_column, "tenant_column")
        if tenant_column in names:
            raise ImportTypeError(f"tenant_column {tenant_column!r} is also a declared column")
    return ImportType(
        tenant_column=tenant_column,
        name=document["name"],
        description=document.get("description", ""),
        table=table,
        key=key,
        modes=modes,
        columns=columns,
        row_validator=_load_hook(document["validator"]) if "validator" in document else None,
    )


def _parse_column(spec: Mapping[str, Any]) -> ColumnSpec:
    name = _identifier(spec["name"], "column name")
    kind = spec["type"]
    if kind not in COLUMN_TYPES:
        raise ImportTypeError(f"column {name}: type {kind!r} is not one of {COLUMN_TYPES}")
    if kind == "enum" and not spec.get("values"):
        raise ImportTypeError(f"column {name}: an enum needs values")
    return ColumnSpec(
        name=name,
        type=kind,
        required=bool(spec.get("required", False)),
        default=None if spec.get("default") is None else str(spec["default"]),
        aliases=tuple(spec.get("aliases", ())),
        max_length=spec.get("max_length"),
        pattern=re.compile(spec["pattern"]) if "pattern" in spec else None,
        min=_bound(spec, "min", name),
        max=_bound(spec, "max", name),
        exclusive_bounds=bool(spec.get("exclusive_bounds", False)),
        values=tuple(spec.get("values", ())),
    )


def _bound(spec: Mapping[str, Any], which: str, column: str) -> Decimal | None:
    if which not in spec:
        return None
    try:
        return Decimal(str(spec[which]))
    except InvalidOperation:
        raise ImportTypeError(f"column {column}: {which} is not a number") from None


def _identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ImportTypeError(f"{what} {value!r} must match {IDENTIFIER.pattern}")
    return value


def _load_hook(reference: str) -> RowValidator:
    module_name, _, attribute = reference.partition(":")
    try:
        hook: RowValidator = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ImportTypeError(f"validator {reference!r} cannot be loaded: {error}") from None
    return hook
