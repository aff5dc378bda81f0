"""`importd serve` started while PostgreSQL is down: it waits, saying so, then gives up in
one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.acceptance.processes import free_port, serve_command, serve_environment

PASSWORD = "never-in-the-log-7f3a"


def test_serve_retries_a_closed_port_for_the_configured_time_then_exits_with_one_line(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql://importd:{PASSWORD}@127.0.0.1:{closed}/orders"
    result = subprocess.run(
        serve_command(free_port()),
        env=serve_environment(tmp_path, url, database_wait_seconds="2"),
        capture_output=True,
        timeout=60,
    )

    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "Traceback" not in stderr
    assert PASSWORD not in stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    retries = [line for line in lines if line["event"] == "database not reachable; retrying"]
    # Pauses of 0.5 s, 1 s, then what is left of the 2 s: a line for each failed attempt.
    assert len(retries) >= 2
    assert [line["attempt"] for line in retries] == list(range(1, len(retries) + 1))
    assert {(line["host"], line["database"]) for line in retries} == {
        (f"127.0.0.1:{closed}", "orders")
    }
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["event"] == "giving up: the database cannot be reached"
    assert (errors[0]["host"], errors[0]["database"]) == (f"127.0.0.1:{closed}", "orders")
    assert "Connect call failed" in errors[0]["error"]
