"""`importctl start FILE --watch` as a new user runs it: an upload bar (bytes, MB/s, ETA) from
the job's first byte, before the job's own bar, as a real process against a real server."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich import filesize

from tests.acceptance.test_importctl import importctl
from tests.conftest import AppFactory

ROWS = 150_000
# rich draws its live display only on a terminal; these tell it stderr is one.
TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160"}


def big_file(folder: Path) -> Path:
    path = folder / "big.csv"
    path.write_text("email,score\n" + "".join(f"p{i}@x.com,{i % 100}\n" for i in range(ROWS)))
    return path


async def test_start_watch_shows_the_upload_bar_before_the_jobs_own(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = await make_app(chunk_size=5000)
    path = big_file(tmp_path)
    size = filesize.decimal(path.stat().st_size)  # e.g. "2.7 MB"
    code, stdout, stderr = await importctl(
        app, "start", str(path), "--type", "contacts", "--watch", **TERMINAL
    )
    assert code == 0, stderr
    assert "SUCCEEDED" in stdout and f"rows       {ROWS} of {ROWS}" in stdout
    upload = re.search(rf"(uploading|staging|uploaded) .*of {re.escape(size)}", stderr)
    assert upload is not None, stderr[-2000:]
    job_bar = re.search(r"(QUEUED|RUNNING|SUCCEEDED) .* rows/s", stderr)
    assert job_bar is not None and upload.start() < job_bar.start()
    assert f"/{ROWS:,} rows" in stderr  # the job's bar knows its total rows


async def test_start_watch_json_follows_the_job_from_its_upload(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = await make_app(chunk_size=5000)
    path = big_file(tmp_path)
    code, stdout, stderr = await importctl(
        app, "--json", "start", str(path), "--type", "contacts", "--watch"
    )
    assert code == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    received = [int(e["job"].get("received_bytes", 0)) for e in events]
    assert received == sorted(received) and received[-1] == path.stat().st_size
    assert events[-1]["terminal"] and events[-1]["job"]["status"] == "JOB_STATUS_SUCCEEDED"
    assert len({e["job"]["id"] for e in events}) == 1
