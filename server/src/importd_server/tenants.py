"""The tenant: who owns jobs, target rows and a source folder. Its name follows one grammar,
whether it comes from a JWT claim or the static token table, because it becomes a folder name
and a key: nothing may use a name that did not pass `parse_tenant`."""

from __future__ import annotations

import re
from typing import NewType

# A name that passed parse_tenant; mypy keeps unchecked strings out of paths and queries.
Tenant = NewType("Tenant", str)

MAX_TENANT_LENGTH = 63
TENANT_GRAMMAR = (
    f"1-{MAX_TENANT_LENGTH} characters of a-z, 0-9, '.', '_' and '-', starting with a-z or 0-9"
)
_TENANT = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{MAX_TENANT_LENGTH - 1}}}")
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")

_KINDS = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}


class InvalidTenant(ValueError):
    """A value that is not a tenant name. The message says why, never repeating the value
    beyond one character: it may be huge or hostile."""


def parse_tenant(value: object) -> Tenant:
    """`value` as a Tenant if it is a string matching the grammar, else InvalidTenant."""
    if not isinstance(value, str):
        raise InvalidTenant(f"must be a string ({TENANT_GRAMMAR}), not {value_kind(value)}")
    if not value:
        raise InvalidTenant(f"must not be empty ({TENANT_GRAMMAR})")
    if len(value) > MAX_TENANT_LENGTH:
        raise InvalidTenant(f"is {len(value)} characters long, more than {MAX_TENANT_LENGTH}")
    if not _TENANT.fullmatch(value):
        bad = next((c for c in value if c not in _ALLOWED), None)
        if bad is not None:
            raise InvalidTenant(f"contains {bad!r}; a tenant is {TENANT_GRAMMAR}")
        raise InvalidTenant(f"must start with a-z or 0-9, not {value[0]!r}")
    return Tenant(value)


def value_kind(value: object) -> str:
    """What a JSON or TOML value is, for errors that must not repeat the value itself."""
    if value is None:
        return "null"
    return _KINDS.get(type(value), f"a {type(value).__name__}")
