"""Named SQL queries, kept in `.sql` files under `store/queries` and read once at import."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def load_queries(file_name: str) -> dict[str, str]:
    """The queries of one file, each started by a `-- name: <query_name>` line."""
    text = (resources.files("importd_server.store") / "queries" / file_name).read_text("utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


# Each file read once; the stores and the engine share these.
JOB_QUERIES = load_queries("jobs.sql")
CHUNK_QUERIES = load_queries("chunks.sql")
ENTRY_QUERIES = load_queries("entries.sql")
SECRET_QUERIES = load_queries("secrets.sql")
WEBHOOK_QUERIES = load_queries("webhooks.sql")
