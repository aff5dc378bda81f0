"""A row validator hook used by the tests, declared as `validator = "tests.unit.hooks:even_only"`."""

from collections.abc import Iterable, Mapping
from typing import Any

from importd_server.model import RowError


def even_only(row: Mapping[str, Any]) -> Iterable[RowError]:
    """Refuses odd numbers."""
    if row["n"] % 2:
        yield RowError("ODD", "n", str(row["n"]), "must be even")
