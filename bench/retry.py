"""Benchmark: RetryJob's staging (the rows importd holds, written as CSV and staged again)
against the upload's staging of the same rows, in one run.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test uv run python bench/retry.py

A contacts CSV is uploaded to a replica without workers (the job stays QUEUED), the job is
cancelled (every row NOT_PROCESSED), and RetryJob makes a job of all of them: both clocks
stop when the call returns the QUEUED job (the rows stored as entries and chunked). Runs
in a database of its own on DATABASE_URL's server, dropped at the end. Not a test: timings
depend on the machine, so they are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.import_vs_copy import write_contacts
from tests.acceptance.processes import serve
from tests.conftest import with_database


async def upload(stub: pb_grpc.ImportServiceStub, path: Path) -> pb.Job:
    async def requests() -> AsyncIterator[pb.StartImportRequest]:
        spec = pb.ImportSpec(import_type="contacts", mode=pb.IMPORT_MODE_UPSERT)
        yield pb.StartImportRequest(spec=spec)
        with path.open("rb") as file:
            while piece := file.read(256 * 1024):
                yield pb.StartImportRequest(chunk=piece)

    job: pb.Job = await stub.StartImport(requests())
    return job


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    server_url = os.environ["DATABASE_URL"]
    name = f"importd_bench_retry_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            path = work / "contacts.csv"
            write_contacts(path, args.rows)
            print(f"{args.rows} rows, {path.stat().st_size / 1e6:.1f} MB")
            database_url = with_database(server_url, name)
            with serve(work / "data", database_url, workers="0") as (port, _):
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = pb_grpc.ImportServiceStub(channel)
                    started = time.perf_counter()
                    job = await upload(stub, path)
                    uploaded = time.perf_counter() - started
                    await stub.CancelJob(pb.CancelJobRequest(id=job.id))
                    started = time.perf_counter()
                    retry = await stub.RetryJob(pb.RetryJobRequest(id=job.id))
                    retried = time.perf_counter() - started
                    assert retry.total_rows == args.rows, retry
            print(f"  upload + staging: {uploaded:7.2f} s ({args.rows / uploaded:,.0f} rows/s)")
            print(f"  RetryJob staging: {retried:7.2f} s ({args.rows / retried:,.0f} rows/s)")
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
