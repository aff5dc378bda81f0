"""Receiving a file: bytes streamed in, parsed in a worker thread as they arrive, stored as
entries with COPY, chunked, and queued, all in one transaction, so a broken or aborted
upload leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import queue
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import asyncpg
import pyarrow as pa
import structlog

from importd_server.engine.admission import Admission
from importd_server.engine.blocks import read_blocks
from importd_server.engine.checking import BlockChecker
from importd_server.engine.parsing import FileColumns, FileError, ParseOptions
from importd_server.engine.processing import fail_if_too_many_errors
from importd_server.errors import AlreadyExists, PermissionDenied
from importd_server.metrics import Metrics
from importd_server.model import EntryStatus, ImportMode, ImportType, Job
from importd_server.store.entries import copy_entries, encode_entries
from importd_server.store.jobs import JobStore, notify_progress
from importd_server.store.pool import Connection
from importd_server.store.sql import CHUNK_QUERIES, ENTRY_QUERIES, JOB_QUERIES

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class NewJob:
    """What a caller asked for in StartImport, checked."""

    tenant: str
    import_type: ImportType
    mode: ImportMode
    parse: ParseOptions
    file_name: str
    dry_run: bool
    all_or_nothing: bool
    max_errors: int | None
    labels: dict[str, str]
    request_id: str | None
    spec_digest: str
    options: dict[str, Any] = field(default_factory=dict)
    live: bool = True


@dataclass(frozen=True)
class StagingLimits:
    """How big a file may be, and how rows are grouped into chunks."""

    max_file_bytes: int
    chunk_size: int


class _Aborted(Exception):
    """The upload ended before the file did (the caller went away)."""


class _ByteFeed(io.RawIOBase):
    """A blocking byte stream fed from the event loop, read by the parser thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._current = memoryview(b"")
        self._aborted = False
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            if self._ended:
                return 0
            item = self._queue.get()
            if self._aborted:
                raise _Aborted
            if item is None:
                self._ended = True
                return 0
            self._current = memoryview(item)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size

    def put(self, item: bytes | None) -> None:
        """Queues bytes (None: the end), waiting while the parser is behind."""
        while not self._aborted:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def abort(self) -> None:
        """Makes the parser stop at its next read."""
        self._aborted = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)


@dataclass
class _Received:
    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)


class Stager:
    """Turns an upload into a queued job with its entries and chunks."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        jobs: JobStore,
        limits: StagingLimits,
        admission: Admission,
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self._jobs = jobs
        self._limits = limits
        self._admission = admission
        self._metrics = metrics

    async def start(self, new_job: NewJob, chunks: AsyncIterator[bytes]) -> Job:
        """The job for this request: the existing one for a repeated request_id (AIP-155),
        else a new one made from the file."""
        existing = await self.existing(new_job)
        if existing is not None:
            return existing
        try:
            return await self.receive(new_job, chunks)
        except asyncpg.UniqueViolationError:
            # The same request_id raced us and committed first.
            existing = await self.existing(new_job)
            if existing is None:
                raise
            return existing

    async def existing(self, new_job: NewJob) -> Job | None:
        """The job an earlier start with the same request_id made, if any (AIP-155)."""
        if new_job.request_id is None:
            return None
        found = await self._jobs.find_by_request_id(new_job.tenant, new_job.request_id)
        if found is None:
            return None
        job, digest = found
        if job.live and not new_job.live:
            raise PermissionDenied(
                "request_id belongs to a live job; a test token cannot touch it",
                reason="TEST_TOKEN_ON_LIVE_JOB",
            )
        if digest != new_job.spec_digest:
            raise AlreadyExists(
                f"request_id {new_job.request_id!r} was used for another import (job {job.id})",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": new_job.request_id, "job_id": str(job.id)},
            )
        return job

    async def receive(self, new_job: NewJob, chunks: AsyncIterator[bytes]) -> Job:
        """Stores the file's rows and returns the job: QUEUED (or already finished when no
        row needs processing), or FAILED with a job-level error when the file is unreadable.
        An exception (the caller went away, the database failed) leaves nothing stored."""
        job_id = uuid.uuid4()
        bound = log.bind(
            job_id=str(job_id),
            import_type=new_job.import_type.name,
            tenant=new_job.tenant,
            request_id=new_job.request_id,
        )
        received = _Received()
        async with self._pool.acquire() as connection:
            try:
                async with connection.transaction():
                    await self._insert_job(connection, job_id, new_job)
                    await self._stage(connection, job_id, new_job, chunks, received)
                    await self._admission.admit(connection, new_job.tenant)
            except FileError as error:
                bound.info("file refused", reason=error.reason, message=error.message)
                async with connection.transaction():
                    await self._insert_job(connection, job_id, new_job)
                    await _record_file(connection, job_id, received, None, [], 0, 0, None)
                    await connection.execute(
                        JOB_QUERIES["fail_job"],
                        job_id,
                        "INVALID_ARGUMENT",
                        error.reason,
                        error.message,
                    )
                    await notify_progress(connection, job_id)
        job = await self._jobs.get_job(job_id, new_job.tenant)
        assert job is not None
        # Rows that failed validation or were superseded got their outcome here.
        decided = {
            EntryStatus.FAILED.value: job.counts.failed,
            EntryStatus.SKIPPED.value: job.counts.skipped,
        }
        self._metrics.count_rows(job.import_type, {s: n for s, n in decided.items() if n})
        bound.info(
            "file received", status=job.status, rows=job.total_rows, bytes=job.file_size_bytes
        )
        return job

    async def _insert_job(self, connection: Connection, job_id: uuid.UUID, new_job: NewJob) -> None:
        await connection.execute(
            JOB_QUERIES["insert_job"],
            job_id,
            new_job.tenant,
            new_job.import_type.name,
            new_job.mode.value,
            new_job.parse.format.value,
            new_job.options,
            new_job.file_name,
            new_job.dry_run,
            new_job.all_or_nothing,
            new_job.max_errors,
            new_job.labels,
            new_job.request_id,
            new_job.spec_digest,
            new_job.live,
        )

    async def _stage(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        new_job: NewJob,
        chunks: AsyncIterator[bytes],
        received: _Received,
    ) -> None:
        feed = _ByteFeed()
        columns = FileColumns()
        blocks = read_blocks(feed, new_job.parse, new_job.import_type, new_job.mode, columns)
        checker = BlockChecker(new_job.import_type, new_job.mode, columns)
        failed = 0
        total = 0

        def next_entries() -> pa.Buffer | None:
            """The next block's rows, checked and encoded for COPY (in a worker thread)."""
            nonlocal failed, total
            block = next(blocks, None)
            if block is None:
                return None
            entries = checker.check(block)
            total += len(entries.row_numbers)
            failed += entries.failed
            return encode_entries(job_id, entries)

        async def feed_bytes() -> None:
            try:
                async for chunk in chunks:
                    received.size += len(chunk)
                    if received.size > self._limits.max_file_bytes:
                        raise FileError(
                            "FILE_TOO_LARGE",
                            f"the file is larger than {self._limits.max_file_bytes} bytes",
                        )
                    received.sha256.update(chunk)
                    await asyncio.to_thread(feed.put, chunk)
                await asyncio.to_thread(feed.put, None)
            except BaseException:
                feed.abort()
                raise

        async def store_rows() -> None:
            # The thread reads and checks the next block while this one is copied.
            reading = asyncio.ensure_future(asyncio.to_thread(next_entries))
            try:
                while (payload := await reading) is not None:
                    reading = asyncio.ensure_future(asyncio.to_thread(next_entries))
                    await copy_entries(connection, payload)
            except BaseException:
                feed.abort()
                reading.cancel()
                raise

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(feed_bytes())
                group.create_task(store_rows())
        except BaseExceptionGroup as group_error:
            # The first real cause wins: a file error over the parser's resulting abort.
            file_errors = [e for e in group_error.exceptions if isinstance(e, FileError)]
            if file_errors:
                raise file_errors[0] from None
            raise group_error.exceptions[0] from None

        await connection.execute(CHUNK_QUERIES["by_key_only"])
        superseded = await connection.fetchrow(ENTRY_QUERIES["skip_superseded_rows"], job_id)
        assert superseded is not None
        skipped = superseded["skipped"]
        failed -= superseded["were_failed"]
        if new_job.all_or_nothing and failed:
            # Nothing is imported: no chunk needs to run.
            skipped += await connection.fetchval(ENTRY_QUERIES["skip_pending_rows"], job_id)
        chunk_rows = max(total, 1) if new_job.all_or_nothing else self._limits.chunk_size
        await _record_file(
            connection, job_id, received, total, columns.names, failed, skipped, chunk_rows
        )
        if await fail_if_too_many_errors(connection, job_id, failed, new_job.max_errors):
            pass  # more rows failed than the limit allows: no chunk runs
        elif total - failed - skipped > 0:
            await connection.execute(CHUNK_QUERIES["create_chunks"], job_id, total, chunk_rows)
        else:
            await connection.execute(JOB_QUERIES["finish_job_if_done"], job_id)
        await notify_progress(connection, job_id)


async def _record_file(
    connection: Connection,
    job_id: uuid.UUID,
    received: _Received,
    total_rows: int | None,
    columns: list[str],
    failed: int,
    skipped: int,
    chunk_rows: int | None,
) -> None:
    """Records what the file was: size, digest, rows, columns, rows already decided, and
    how many rows each chunk has."""
    await connection.execute(
        JOB_QUERIES["finish_staging"],
        job_id,
        received.size,
        received.sha256.hexdigest(),
        total_rows,
        columns,
        failed,
        skipped,
        chunk_rows,
    )


async def file_chunks(source: BinaryIO, block_size: int = 1 << 20) -> AsyncIterator[bytes]:
    """An open file's bytes in blocks, read in a worker thread; closes it at the end."""
    with source:
        while block := await asyncio.to_thread(source.read, block_size):
            yield block
