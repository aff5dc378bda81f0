"""importctl run as a real process against a real server: output, JSON, exit codes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from importd_server.app import Application

GOOD = b"email,first_name\na@x.com,A\nb@x.com,B\n"
MIXED = b"email,first_name,score\na@x.com,A,1\nbad,B,2\n"


async def importctl(app: Application, *args: str, **env: str) -> tuple[int, str, str]:
    """Runs importctl (without blocking the server, which shares this event loop)."""
    environment = {**os.environ, "IMPORTD_TARGET": f"127.0.0.1:{app.port}", **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "importd_client.cli",
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def json_of(app: Application, *args: str) -> Any:
    code, stdout, stderr = await importctl(app, "--json", *args)
    assert code in (0, 1), stderr
    return json.loads(stdout)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "good.csv").write_bytes(GOOD)
    (tmp_path / "mixed.csv").write_bytes(MIXED)
    return tmp_path


async def test_start_watch_succeeds_with_exit_code_zero_and_a_summary(
    app: Application, files: Path
) -> None:
    code, stdout, _ = await importctl(
        app, "start", str(files / "good.csv"), "--type", "contacts", "--watch"
    )
    assert code == 0
    assert "SUCCEEDED" in stdout
    assert "created    2" in stdout


async def test_a_job_that_did_not_fully_succeed_exits_one(app: Application, files: Path) -> None:
    code, stdout, _ = await importctl(
        app, "--json", "start", str(files / "mixed.csv"), "-t", "contacts", "-m", "insert", "-w"
    )
    assert code == 1
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[-1]["terminal"] is True
    job = events[-1]["job"]
    assert job["status"] == "JOB_STATUS_PARTIALLY_SUCCEEDED"
    assert (job["created_count"], job["failed_count"]) == ("1", "1")

    code, _, _ = await importctl(app, "get", job["id"])
    assert code == 1
    entries = await json_of(app, "entries", job["id"], "--status", "failed")
    assert [(e["row_number"], e["errors"][0]["code"]) for e in entries] == [("2", "INVALID_EMAIL")]
    code, stdout, _ = await importctl(app, "entries", job["id"])
    assert code == 0 and "not a valid e-mail address" in stdout


async def test_get_list_export_cancel_and_types(app: Application, files: Path) -> None:
    started = await json_of(app, "start", str(files / "mixed.csv"), "-t", "contacts")
    assert started["status"] in (
        "JOB_STATUS_QUEUED",
        "JOB_STATUS_RUNNING",
        "JOB_STATUS_PARTIALLY_SUCCEEDED",
    )
    code, _, _ = await importctl(app, "watch", started["id"])
    assert code == 1

    listed = await json_of(app, "list")
    assert [j["id"] for j in listed] == [started["id"]]
    assert (await json_of(app, "list", "--status", "succeeded")) == []

    target = files / "fix.csv"
    code, stdout, _ = await importctl(app, "export", started["id"], "-o", str(target))
    assert code == 0 and "wrote" in stdout
    assert target.read_text().splitlines()[1].startswith("bad,B,2,2,FAILED,")

    code, _, stderr = await importctl(app, "cancel", started["id"])
    assert code == 3
    assert "FAILED_PRECONDITION" in stderr

    types = await json_of(app, "types")
    assert [t["name"] for t in types] == ["contacts", "transactions"]
    code, stdout, _ = await importctl(app, "types")
    assert code == 0 and "transaction_id" in stdout


async def test_revert_follows_the_revert_to_its_end_and_refuses_a_second(
    app: Application, files: Path
) -> None:
    job = await json_of(app, "start", str(files / "good.csv"), "-t", "contacts")
    code, _, _ = await importctl(app, "watch", job["id"])
    assert code == 0
    code, stdout, _ = await importctl(app, "revert", job["id"])
    assert code == 0
    assert "SUCCEEDED" in stdout
    assert "deleted    2" in stdout
    assert f"reverts    {job['id']}" in stdout

    code, _, stderr = await importctl(app, "revert", job["id"])
    assert code == 3
    assert "FAILED_PRECONDITION" in stderr and "already" in stderr and "reverted by job" in stderr

    other = await json_of(app, "start", str(files / "mixed.csv"), "-t", "contacts")
    await importctl(app, "watch", other["id"])
    queued = await json_of(app, "revert", other["id"], "--no-wait")
    assert queued["revert_of"] == other["id"]


async def test_refused_requests_exit_three_with_the_reason(app: Application, files: Path) -> None:
    code, _, stderr = await importctl(app, "get", "not-a-uuid")
    assert code == 3
    assert "INVALID_ARGUMENT: id: 'not-a-uuid' is not a UUID" in stderr
    code, _, stderr = await importctl(app, "start", str(files / "good.csv"), "-t", "unicorns")
    assert code == 3
    assert "unknown import type 'unicorns'" in stderr


async def test_target_and_token_come_from_flags_or_the_environment(
    app: Application, files: Path
) -> None:
    code, _, stderr = await importctl(app, "--target", "127.0.0.1:1", "--timeout", "1", "types")
    assert code == 3 and "UNAVAILABLE" in stderr
    code, _, _ = await importctl(app, "types", IMPORTD_TOKEN="anything")
    assert code == 0


async def test_bad_usage_exits_two(app: Application, files: Path) -> None:
    code, _, stderr = await importctl(app, "start", str(files / "good.csv"))
    assert code == 2
    assert "Missing option '--type'" in stderr


async def test_an_unknown_status_is_bad_usage(app: Application) -> None:
    code, _, stderr = await importctl(app, "list", "--status", "bogus")
    assert code == 2
    assert "'bogus' is not one of" in stderr


async def test_get_shows_what_went_wrong_and_export_all_writes_every_row(
    app: Application, files: Path
) -> None:
    # max_errors 0: the bad row stops the job at staging, the good one is never processed.
    started = await json_of(
        app, "start", str(files / "mixed.csv"), "-t", "contacts", "--max-errors", "0"
    )
    code, _, _ = await importctl(app, "watch", started["id"])
    assert code == 1
    code, stdout, _ = await importctl(app, "get", started["id"])
    assert code == 1
    assert "not processed  1" in stdout
    assert "row errors" in stdout
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in stdout.splitlines()]
    assert ["INVALID_EMAIL", "email", "1"] in cells
    job = await json_of(app, "get", started["id"])
    assert job["not_processed_count"] == "1"
    assert job["error_summary"] == [{"code": "INVALID_EMAIL", "field": "email", "count": "1"}]

    target = files / "report.csv"
    code, stdout, _ = await importctl(app, "export", started["id"], "--all", "-o", str(target))
    assert code == 0 and "wrote" in stdout
    assert list(csv.reader(io.StringIO(target.read_text()))) == [
        ["email", "first_name", "score", "importd_row", "importd_status", "importd_errors"],
        [
            "a@x.com",
            "A",
            "1",
            "1",
            "NOT_PROCESSED",
            "not processed: the job failed: MAX_ERRORS_EXCEEDED:"
            " 1 rows failed, more than max_errors (0)",
        ],
        ["bad", "B", "2", "2", "FAILED", "email: not a valid e-mail address [INVALID_EMAIL]"],
    ]
    code, _, stderr = await importctl(
        app, "export", started["id"], "--all", "--status", "failed", "-o", str(target)
    )
    assert code == 2 and "--all" in stderr


async def test_retry_from_held_rows_or_a_fixed_file_and_list_by_filter(
    app: Application, files: Path
) -> None:
    async def last_event(*args: str) -> Any:
        _, stdout, _ = await importctl(app, "--json", *args, "--watch")
        return json.loads(stdout.splitlines()[-1])["job"]

    parent = await last_event("start", str(files / "mixed.csv"), "-t", "contacts")
    code, stdout, _ = await importctl(app, "retry", parent["id"], "--status", "failed", "-w")
    assert code == 1  # the bad e-mail fails again
    assert re.search(rf"retry of +{parent['id']}", stdout)

    fixed = files / "fixed.csv"
    code, _, _ = await importctl(app, "export", parent["id"], "-o", str(fixed))
    fixed.write_text(fixed.read_text().replace("bad,B", "b@x.com,B"))
    upload = await last_event("retry", parent["id"], "--file", str(fixed))
    assert (upload["status"], upload["retry_of"]) == ("JOB_STATUS_SUCCEEDED", parent["id"])
    assert upload["created_count"] == "1"

    children = await json_of(app, "list", "--filter", f'retry_of = "{parent["id"]}"')
    assert len(children) == 2 and children[0]["id"] == upload["id"]
    code, _, stderr = await importctl(app, "list", "--filter", "retry_of ==")
    assert code == 3 and "filter: at character 11: expected a value" in stderr
    code, _, stderr = await importctl(
        app, "retry", parent["id"], "--file", str(fixed), "--status", "failed"
    )
    assert code == 2 and "cannot go with --file" in stderr
