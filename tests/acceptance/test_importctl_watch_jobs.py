"""`importctl watch-jobs` run as a real process: one JSON line per job change, until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from importd_client import AsyncClient
from importd_server.app import Application
from tests.rpc import wait_until

CONTACTS = b"email\na@x.com\nb@x.com\n"
OTHERS = b"email\nc@x.com\nd@x.com\n"


async def test_watch_jobs_prints_each_change_as_a_json_line_until_interrupted(
    app: Application,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "importd_client.cli",
        "--json",
        "watch-jobs",
        "--label",
        "batch=7",
        env={**os.environ, "IMPORTD_TARGET": f"127.0.0.1:{app.port}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and app.hub is not None
    hub = app.hub
    await wait_until(lambda: hub.watch_count == 1, within=30)
    lines: list[dict[str, object]] = []
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        # Unlabelled jobs are not this watch's; the labelled one is followed to its end.
        await client.start_import(CONTACTS, import_type="contacts")
        job = await client.start_import(OTHERS, import_type="contacts", labels={"batch": "7"})
        async with asyncio.timeout(30):
            while not lines or lines[-1]["status"] != "JOB_STATUS_SUCCEEDED":
                lines.append(json.loads(await process.stdout.readline()))
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0, (await process.stderr.read()).decode()
    assert {line["id"] for line in lines} == {job.id}
    assert lines[-1]["created_count"] == "2"
