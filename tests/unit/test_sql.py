"""Named SQL queries: parameters by name in the .sql files, by number for PostgreSQL."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from importd_server.store.sql import parse_queries

TEXT = """-- Preamble: ignored.

-- name: pick
-- Rows of :job_id (a comment's :names stay, and so does this one's apostrophe: it's fine)
SELECT ':not_a_parameter', 'it''s :literal', x::text, :job_id, :limit::bigint
FROM t WHERE job_id = :job_id AND owner = :owner;

-- name: none
SELECT 1;
"""


def test_named_parameters_become_numbered_in_order_of_first_use() -> None:
    queries = parse_queries(TEXT)
    pick = queries["pick"]
    assert pick.parameters == ("job_id", "limit", "owner")
    assert "SELECT ':not_a_parameter', 'it''s :literal', x::text, $1, $2::bigint" in pick.sql
    assert "WHERE job_id = $1 AND owner = $3;" in pick.sql
    assert "-- Rows of :job_id (a comment's :names stay" in pick.sql
    assert queries["none"].parameters == ()


def test_a_query_takes_every_parameter_by_name_and_nothing_else() -> None:
    pick = parse_queries(TEXT)["pick"]
    assert pick.args({"owner": "w", "limit": 3, "job_id": 7}) == (7, 3, "w")
    with pytest.raises(TypeError, match="takes"):
        pick.args({"job_id": 7, "limit": 3})
    with pytest.raises(TypeError, match="takes"):
        pick.args({"job_id": 7, "limit": 3, "owner": "w", "extra": 1})


@pytest.mark.parametrize(
    "file_name",
    ["jobs.sql", "chunks.sql", "entries.sql", "secrets.sql", "session.sql", "webhooks.sql"],
)
def test_the_shipped_queries_name_their_parameters(file_name: str) -> None:
    text = (resources.files("importd_server.store") / "queries" / file_name).read_text()
    assert not re.search(r"\$\d", text)
    assert parse_queries(text)
