"""Benchmark: a contacts CSV imported from an http:// source_uri (the server fetches it from
a file server on 127.0.0.1, allow-listed) against the same file uploaded, in one run, with
the server's peak RSS after each.

    uv run python bench/remote_source.py [--rows 1000000]

Uses DATABASE_URL when set, else an embedded PostgreSQL. Not a test: timings depend on the
machine, so they are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
from aiohttp import web

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.import_vs_copy import (
    _embedded_url,
    _peak_rss_mb,
    import_through_api,
    reset,
    write_contacts,
)
from tests.acceptance.processes import serve


async def import_from_uri(port: int, uri: str) -> tuple[float, pb.Job]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        spec = pb.ImportSpec(import_type="contacts", mode=pb.IMPORT_MODE_UPSERT, source_uri=uri)
        started = time.perf_counter()
        job = await stub.StartImport(iter([pb.StartImportRequest(spec=spec)]))
        received = time.perf_counter()
        while job.status in (pb.JOB_STATUS_QUEUED, pb.JOB_STATUS_RUNNING):
            await asyncio.sleep(0.05)
            job = await stub.GetJob(pb.GetJobRequest(id=job.id))
        finished = time.perf_counter()
        print(f"  fetch + staging:  {received - started:7.2f} s")
        print(f"  processing:       {finished - received:7.2f} s")
        return finished - started, job


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.chmod(work, 0o755)  # the embedded server's user reads the data folder's parent
        path = work / "contacts.csv"
        write_contacts(path, args.rows)
        print(f"{args.rows} rows, {path.stat().st_size / 1e6:.1f} MB")

        files = web.Application()
        files.router.add_static("/", work)
        runner = web.AppRunner(files)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        uri = f"http://127.0.0.1:{runner.addresses[0][1]}/contacts.csv?signature=bench"

        settings = {"workers": "2", "poll_seconds": "0.05", "remote_allow_hosts": "127.0.0.1"}
        database_url = os.environ.get("DATABASE_URL")
        try:
            for name, run in (
                ("source_uri (http://127.0.0.1)", lambda port: import_from_uri(port, uri)),
                ("upload (gRPC stream)", lambda port: import_through_api(port, path)),
            ):
                # A fresh server for each, so each peak RSS is its own.
                with serve(work / "data", database_url, **settings) as (port, server):
                    await reset(database_url or _embedded_url(work / "data"))
                    print(f"{name}:")
                    seconds, job = await run(port)
                    assert job.status == pb.JOB_STATUS_SUCCEEDED, job
                    assert job.created_count == args.rows, job
                    peak = _peak_rss_mb(server.pid)
                    print(f"  total: {seconds:7.2f} s, server peak RSS {peak:.0f} MB")
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
