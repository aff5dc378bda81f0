"""Named SQL queries, kept in `.sql` files under `store/queries` and read once at import.

A query names its parameters (`:job_id`, as aiosql reads them); `Query` turns them into
PostgreSQL's `$1, $2, ...` and a call's keyword arguments into the positional ones asyncpg
sends. The stores (`store/*.py`) run these; the engine runs only the statements that apply
a chunk to its target, which `store/targets.py` builds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from importd_server.store.pool import Executor

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
# A comment, a string literal, or a parameter: a colon and a name (a cast is two colons).
_TOKEN = re.compile(r"--[^\n]*|'(?:[^']|'')*'|(?<![:\w]):([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class Query:
    """One named query: PostgreSQL's text and the names of its parameters, in `$n` order."""

    name: str
    sql: str
    parameters: tuple[str, ...]

    def args(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """The parameters' values in `$n` order; every parameter, and nothing else, given."""
        if values.keys() != set(self.parameters):
            raise TypeError(
                f"query {self.name} takes {sorted(self.parameters)}, not {sorted(values)}"
            )
        return tuple(values[name] for name in self.parameters)

    async def execute(self, connection: Executor, **values: Any) -> str:
        """Runs the query; PostgreSQL's status line (e.g. `UPDATE 3`)."""
        status: str = await connection.execute(self.sql, *self.args(values))
        return status

    async def fetch(self, connection: Executor, **values: Any) -> list[Any]:
        """The query's rows."""
        rows: list[Any] = await connection.fetch(self.sql, *self.args(values))
        return rows

    async def fetchrow(self, connection: Executor, **values: Any) -> Any:
        """The query's first row, or None."""
        return await connection.fetchrow(self.sql, *self.args(values))

    async def fetchval(self, connection: Executor, **values: Any) -> Any:
        """The first column of the query's first row, or None."""
        return await connection.fetchval(self.sql, *self.args(values))


def parse_queries(text: str) -> dict[str, Query]:
    """The queries of one file's text, each started by a `-- name: <query_name>` line."""
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {
        name: numbered(name, body.strip())
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def load_queries(file_name: str) -> dict[str, Query]:
    """The queries of one file of `store/queries`."""
    folder = resources.files("importd_server.store") / "queries"
    return parse_queries((folder / file_name).read_text("utf-8"))


def numbered(name: str, body: str) -> Query:
    """A query from SQL with named parameters."""
    parameters: list[str] = []

    def number(token: re.Match[str]) -> str:
        parameter = token[1]
        if parameter is None:
            return token[0]  # a comment or a string literal, as it is
        if parameter not in parameters:
            parameters.append(parameter)
        return f"${parameters.index(parameter) + 1}"

    return Query(name, _TOKEN.sub(number, body), tuple(parameters))


# Each file read once, by the store that owns its tables.
JOB_QUERIES = load_queries("jobs.sql")
CHUNK_QUERIES = load_queries("chunks.sql")
ENTRY_QUERIES = load_queries("entries.sql")
SECRET_QUERIES = load_queries("secrets.sql")
SESSION_QUERIES = load_queries("session.sql")
WEBHOOK_QUERIES = load_queries("webhooks.sql")
