"""Test helpers: reading gRPC errors, arranging jobs, and driving imports through the API."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_client import ImportdError
from importd_client._errors import error_from_rpc


def rich_error(error: grpc.aio.AioRpcError) -> ImportdError:
    """The code and unpacked google.rpc details of a failed call (as the client sees them)."""
    return error_from_rpc(error)


async def insert_job(connection: asyncpg.Connection, **columns: Any) -> uuid.UUID:
    """Inserts an import_jobs row with sensible defaults; returns its id."""
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant": "default",
        "import_type": "contacts",
        "mode": "UPSERT",
        "format": "CSV",
        "status": "QUEUED",
        "file_name": "contacts.csv",
        "create_time": datetime.now(UTC),
        "labels": json.dumps({}),
    }
    row.update(columns)
    if isinstance(row["labels"], dict):
        row["labels"] = json.dumps(row["labels"])
    names = ", ".join(row)
    placeholders = ", ".join(
        f"${i}::jsonb" if name == "labels" else f"${i}" for i, name in enumerate(row, 1)
    )
    await connection.execute(
        f"INSERT INTO import_jobs ({names}) VALUES ({placeholders})", *row.values()
    )
    return uuid.UUID(str(row["id"]))


async def start_import(
    stub: pb_grpc.ImportServiceStub, data: bytes = b"", *, piece: int = 7, **spec: Any
) -> pb.Job:
    """Starts an import: the spec, then the file in pieces of `piece` bytes."""
    spec.setdefault("import_type", "contacts")
    spec.setdefault("mode", pb.IMPORT_MODE_UPSERT)

    async def requests() -> AsyncIterator[pb.StartImportRequest]:
        yield pb.StartImportRequest(spec=pb.ImportSpec(**spec))
        for start in range(0, len(data), piece):
            yield pb.StartImportRequest(chunk=data[start : start + piece])

    job: pb.Job = await stub.StartImport(requests())
    return job


TERMINAL = {
    pb.JOB_STATUS_SUCCEEDED,
    pb.JOB_STATUS_PARTIALLY_SUCCEEDED,
    pb.JOB_STATUS_FAILED,
    pb.JOB_STATUS_CANCELLED,
}


async def wait_for_job(stub: pb_grpc.ImportServiceStub, job_id: str, within: float = 30) -> pb.Job:
    """The job once it has reached a terminal status (at most `within` seconds from now)."""
    async with asyncio.timeout(within):
        while True:
            job: pb.Job = await stub.GetJob(pb.GetJobRequest(id=job_id))
            if job.status in TERMINAL:
                return job
            await asyncio.sleep(0.02)


async def wait_for_progress(
    stub: pb_grpc.ImportServiceStub, job_id: str, rows: int, within: float = 30
) -> pb.Job:
    """The job once at least `rows` rows are processed."""
    async with asyncio.timeout(within):
        while True:
            job: pb.Job = await stub.GetJob(pb.GetJobRequest(id=job_id))
            if job.processed_rows >= rows:
                return job
            await asyncio.sleep(0.01)


async def import_and_wait(stub: pb_grpc.ImportServiceStub, data: bytes, **spec: Any) -> pb.Job:
    """Starts an import and waits for its end."""
    job = await start_import(stub, data, **spec)
    return await wait_for_job(stub, job.id)


async def entries_of(
    stub: pb_grpc.ImportServiceStub, job_id: str, *statuses: int
) -> list[pb.Entry]:
    """Every entry of the job, paging through ListEntries."""
    entries: list[pb.Entry] = []
    token = ""
    while True:
        page = await stub.ListEntries(
            pb.ListEntriesRequest(id=job_id, statuses=statuses, page_size=1000, page_token=token)
        )
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries


def counts(job: pb.Job) -> dict[str, int]:
    """The job's non-zero counts by name, for compact assertions."""
    names = ("created", "updated", "unchanged", "skipped", "failed", "deleted")
    found = {n: getattr(job, f"{n}_count") for n in names}
    return {n: c for n, c in found.items() if c}


async def read_to_end(stream: Any) -> list[pb.ProgressEvent]:
    """The rest of a stream read with `read()` (grpc.aio forbids mixing in iteration)."""
    events = []
    while (event := await stream.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


async def wait_until(condition: Callable[[], bool], within: float = 10) -> None:
    """Returns once `condition()` holds; fails after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)
