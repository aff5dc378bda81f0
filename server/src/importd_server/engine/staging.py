"""Receiving a file: bytes streamed in (in pieces), read and checked in a worker thread as
they arrive, stored as entries with COPY, chunked, and queued, all in one transaction, so a
broken or aborted upload leaves nothing behind."""

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
from importd_server.engine.processing import too_many_errors
from importd_server.errors import AlreadyExists, PermissionDenied
from importd_server.metrics import Metrics
from importd_server.model import EntryStatus, ImportMode, ImportType, Job
from importd_server.store.entries import EntryStore, encode_entries
from importd_server.store.jobs import JobStore, NewJobRow
from importd_server.store.pool import Connection

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
    live: bool = True
    source_uri: str | None = None  # redacted (engine.remote.redact): no secrets in it


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
        entries: EntryStore,
        limits: StagingLimits,
        admission: Admission,
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self._jobs = jobs
        self._entries = entries
        self._limits = limits
        self._admission = admission
        self._metrics = metrics

    async def start(self, new_job: NewJob, pieces: AsyncIterator[bytes]) -> Job:
        """The job for this request: the existing one for a repeated request_id (AIP-155),
        else a new one made from the file."""
        existing = await self.existing(new_job)
        if existing is not None:
            return existing
        try:
            return await self.receive(new_job, pieces)
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

    async def receive(self, new_job: NewJob, pieces: AsyncIterator[bytes]) -> Job:
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
                    await self._stage(connection, job_id, new_job, pieces, received)
                    await self._admission.admit(connection, new_job.tenant)
            except FileError as error:
                bound.info("file refused", reason=error.reason, message=error.message)
                async with connection.transaction():
                    await self._insert_job(connection, job_id, new_job)
                    await self._record_file(connection, job_id, received)
                    await self._jobs.fail_job(connection, job_id, error)
                    await self._jobs.notify(connection, job_id)
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
        await self._jobs.insert_job(
            connection,
            NewJobRow(
                job_id=job_id,
                tenant=new_job.tenant,
                import_type=new_job.import_type.name,
                mode=new_job.mode,
                format=new_job.parse.format,
                file_name=new_job.file_name,
                dry_run=new_job.dry_run,
                all_or_nothing=new_job.all_or_nothing,
                max_errors=new_job.max_errors,
                labels=new_job.labels,
                request_id=new_job.request_id,
                spec_digest=new_job.spec_digest,
                live=new_job.live,
                source_uri=new_job.source_uri,
            ),
        )

    async def _record_file(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        received: _Received,
        rows: _Rows | None = None,
        columns: list[str] | None = None,
        chunk_rows: int | None = None,
    ) -> None:
        """Records what the file was: its size and digest, and (when it could be read) its
        rows, columns, the rows decided already, and how many rows each chunk has."""
        await self._jobs.record_file(
            connection,
            job_id,
            size=received.size,
            sha256=received.sha256.hexdigest(),
            total_rows=rows.total if rows else None,
            columns=columns or [],
            failed=rows.failed if rows else 0,
            skipped=rows.skipped if rows else 0,
            chunk_rows=chunk_rows,
        )

    async def _stage(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        new_job: NewJob,
        pieces: AsyncIterator[bytes],
        received: _Received,
    ) -> None:
        feed = _ByteFeed()
        columns = FileColumns()
        blocks = read_blocks(feed, new_job.parse, new_job.import_type, new_job.mode, columns)
        checker = BlockChecker(new_job.import_type, new_job.mode, columns)
        rows = _Rows()

        def next_entries() -> pa.Buffer | None:
            """The next block's rows, checked and encoded for COPY (in a worker thread)."""
            block = next(blocks, None)
            if block is None:
                return None
            entries = checker.check(block)
            rows.total += len(entries.row_numbers)
            rows.failed += entries.failed
            return encode_entries(job_id, entries)

        async def feed_bytes() -> None:
            try:
                async for piece in pieces:
                    received.size += len(piece)
                    if received.size > self._limits.max_file_bytes:
                        raise FileError(
                            "FILE_TOO_LARGE",
                            f"the file is larger than {self._limits.max_file_bytes} bytes",
                        )
                    received.sha256.update(piece)
                    await asyncio.to_thread(feed.put, piece)
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
                    await self._entries.copy_new(connection, payload)
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

        rows.skipped, were_failed = await self._entries.skip_superseded(connection, job_id)
        rows.failed -= were_failed
        if new_job.all_or_nothing and rows.failed:
            # Nothing is imported: no chunk needs to run.
            rows.skipped += await self._entries.skip_pending(connection, job_id)
        chunk_rows = max(rows.total, 1) if new_job.all_or_nothing else self._limits.chunk_size
        await self._record_file(connection, job_id, received, rows, columns.names, chunk_rows)
        if (too_many := too_many_errors(rows.failed, new_job.max_errors)) is not None:
            await self._jobs.fail_job(connection, job_id, too_many)  # no chunk runs
        elif rows.total - rows.failed - rows.skipped > 0:
            await self._jobs.create_chunks(connection, job_id, rows.total, chunk_rows)
        else:
            await self._jobs.finish_if_done(connection, job_id)
        await self._jobs.notify(connection, job_id)


@dataclass
class _Rows:
    """A file's rows as staging counts them: all, failed, and skipped (superseded)."""

    total: int = 0
    failed: int = 0
    skipped: int = 0


async def file_pieces(source: BinaryIO, block_size: int = 1 << 20) -> AsyncIterator[bytes]:
    """An open file's bytes in blocks, read in a worker thread; closes it at the end."""
    with source:
        while block := await asyncio.to_thread(source.read, block_size):
            yield block
