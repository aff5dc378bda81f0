"""Receiving a file: the job is committed at the first byte (stage RECEIVING), then the bytes
are parsed in a thread of the uploads' own as they arrive, stored as entries with COPY,
chunked, and queued, all in one transaction, so a broken or aborted upload leaves no rows
behind: its job ends FAILED saying so. How far the upload got is written to the job row
meanwhile, from short transactions of their own (engine/uploads.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import queue
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import asyncpg
import pyarrow as pa
import structlog

from importd_server.engine.admission import Admission
from importd_server.engine.checking import BlockChecker
from importd_server.engine.parsing import FileColumns, FileError, ParseOptions
from importd_server.engine.processing import too_many_errors
from importd_server.engine.repeats import RepeatedKeys
from importd_server.engine.shapes import FileReader
from importd_server.engine.uploads import JobEnded, UploadSlots, UploadState, writing_progress
from importd_server.errors import Aborted, AlreadyExists, ImportdError, PermissionDenied
from importd_server.metrics import Metrics
from importd_server.model import (
    Dialect,
    EntryStatus,
    ErrorCount,
    ImportMode,
    ImportType,
    Job,
    ranked_errors,
)
from importd_server.store.availability import is_connection_error
from importd_server.store.entries import EntryStore, encode_entries
from importd_server.store.jobs import JobStore, NewJobRow
from importd_server.store.pool import Connection, close_connection, open_connection

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
    trace_parent: str | None = None  # the W3C traceparent of the span creating the job
    retry_of: uuid.UUID | None = None  # the ended job this one retries
    revertible: bool = True  # whether its writes record what they replace


@dataclass(frozen=True)
class StagingLimits:
    """How big a file may be, how rows are grouped into chunks, and how often a live
    upload's heartbeat is written."""

    max_file_bytes: int
    chunk_size: int
    heartbeat_seconds: float = 15.0


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
    """What has arrived so far; the progress writer reads it while staging updates it."""

    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    staged_rows: int = 0
    total_rows: int | None = None  # known once the file is read whole
    dialect: Dialect | None = None

    def state(self) -> UploadState:
        return (self.size, self.staged_rows, self.total_rows)


@dataclass(frozen=True)
class _Staged:
    """The file's rows once stored: how many, their columns, those already decided, and
    the failed ones' errors by code and column."""

    total: int
    columns: list[str]
    failed: int
    skipped: int
    error_summary: tuple[ErrorCount, ...] = ()


class _Prepended:
    """An async iterator of bytes with what was already taken from it put back in front:
    its first piece, or the FileError taking it raised."""

    def __init__(self, first: bytes | FileError | None, rest: AsyncIterator[bytes]) -> None:
        self._first = first
        self._rest = rest

    def __aiter__(self) -> _Prepended:
        return self

    async def __anext__(self) -> bytes:
        first, self._first = self._first, None
        if isinstance(first, FileError):
            raise first
        if first is not None:
            return first
        return await anext(self._rest)


def same_request(job: Job, digest: str, request_id: str, wanted: str) -> Job:
    """The job an earlier call with `request_id` made (its request's digest `digest`), if it
    was the same request (`wanted`): ALREADY_EXISTS otherwise (AIP-155)."""
    if digest != wanted:
        raise AlreadyExists(
            f"request_id {request_id!r} was used for another request (job {job.id})",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": request_id, "job_id": str(job.id)},
        )
    return job


class Stager:
    """Turns an upload into a queued job with its entries and chunks."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        jobs: JobStore,
        entries: EntryStore,
        limits: StagingLimits,
        admission: Admission,
        slots: UploadSlots,
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self._database_url = database_url
        self._jobs = jobs
        self._entries = entries
        self._limits = limits
        self._admission = admission
        self._slots = slots
        self._metrics = metrics

    async def start(
        self,
        new_job: NewJob,
        pieces: AsyncIterator[bytes],
        on_created: Callable[[uuid.UUID], Awaitable[None]] | None = None,
    ) -> Job:
        """The job for this request: the existing one for a repeated request_id (AIP-155),
        else a new one, committed when the file's first byte arrives (`on_created` is then
        told its id), made from the file."""
        existing = await self.existing(new_job)
        if existing is not None:
            return existing
        # A request refused before any byte (a remote source's address) leaves no job; a
        # file that fails then (a remote 404) is a job that failed.
        rest = aiter(pieces)
        first: bytes | FileError | None
        try:
            first = await anext(rest, None)
        except FileError as error:
            first = error
        with self._slots.take():
            job_id = uuid.uuid4()
            try:
                await self._create_job(job_id, new_job)
            except asyncpg.UniqueViolationError:
                # The same request_id raced us and committed first (its upload may still run).
                existing = await self.existing(new_job)
                if existing is None:
                    raise
                return existing
            return await self.receive(job_id, new_job, _Prepended(first, rest), on_created)

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
        return same_request(job, digest, new_job.request_id, new_job.spec_digest)

    async def _create_job(self, job_id: uuid.UUID, new_job: NewJob) -> None:
        """Commits the job, RECEIVING, if the tenant's active jobs (receiving ones too) stay
        within its limit; RESOURCE_EXHAUSTED (and no job) otherwise."""
        async with self._pool.acquire() as connection, connection.transaction():
            await self._insert_job(connection, job_id, new_job)
            await self._admission.admit(connection, new_job.tenant)
            await self._jobs.notify(connection, job_id)

    async def receive(
        self,
        job_id: uuid.UUID,
        new_job: NewJob,
        pieces: AsyncIterator[bytes],
        on_created: Callable[[uuid.UUID], Awaitable[None]] | None = None,
    ) -> Job:
        """Stores the file's rows and returns the job: QUEUED (or already finished when no
        row needs processing), FAILED with a job-level error when the file is unreadable, or
        as the job ended meanwhile (cancelled). An exception (the caller went away, the
        database failed) stores no rows and fails the job as UPLOAD_ABORTED."""
        bound = log.bind(
            job_id=str(job_id),
            import_type=new_job.import_type.name,
            tenant=new_job.tenant,
            request_id=new_job.request_id,
        )
        received = _Received()
        job: Job | None = None
        try:
            if on_created is not None:
                await on_created(job_id)
            # A connection of its own, not the pool's: an upload holds it as long as the
            # caller takes to send the file, and uploads must never starve other work.
            connection = await open_connection(self._database_url)
            try:
                async with connection.transaction():
                    async with writing_progress(
                        self._jobs, job_id, received.state, self._limits.heartbeat_seconds
                    ):
                        staged = await self._stage(connection, job_id, new_job, pieces, received)
                    job = await self._queue(connection, job_id, new_job, received, staged)
            finally:
                await close_connection(connection)
        except FileError as error:
            bound.info("file refused", reason=error.reason, message=error.message)
            async with self._pool.acquire() as pooled, pooled.transaction():
                if await self._record_file(pooled, job_id, received):
                    await self._jobs.fail_job(pooled, job_id, error)
                    await self._jobs.notify(pooled, job_id)
        except JobEnded:
            bound.info("upload dropped: the job stopped receiving (cancelled or timed out)")
        except BaseException as error:
            # Shielded: the caller going away cancels this task, not the record of why.
            await asyncio.shield(self._abort(job_id, error, bound))
            raise
        if job is None:
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

    async def _abort(
        self, job_id: uuid.UUID, error: BaseException, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Fails the job of an upload that ended before its file did, saying why."""
        why = _abort_cause(error)
        bound.info("upload aborted", cause=why, error=repr(error))
        try:
            await self._jobs.abort_upload(
                job_id,
                Aborted(
                    f"the upload ended before the file did: {why}; no rows were kept."
                    " Start the import again (the same request_id may be used)",
                    reason="UPLOAD_ABORTED",
                ),
            )
        except Exception as failure:
            # The housekeeper fails it (UPLOAD_INTERRUPTED) once its heartbeat is stale.
            bound.warning("could not record the aborted upload", error=repr(failure))

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
                options=new_job.options,
                retry_of=new_job.retry_of,
                revertible=new_job.revertible,
            ),
        )
        await self._jobs.record_trace_parent(connection, job_id, new_job.trace_parent)

    async def _record_file(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        received: _Received,
        staged: _Staged | None = None,
        chunk_rows: int | None = None,
    ) -> bool:
        """Records what the file was: its size and digest, and (when it could be read) its
        rows, columns, the rows decided already, how many rows each chunk has, and how it
        was read; False if the job is no longer receiving."""
        recorded = await self._jobs.record_file(
            connection,
            job_id,
            size=received.size,
            sha256=received.sha256.hexdigest(),
            total_rows=staged.total if staged else None,
            columns=staged.columns if staged else [],
            failed=staged.failed if staged else 0,
            skipped=staged.skipped if staged else 0,
            chunk_rows=chunk_rows,
            error_summary=staged.error_summary if staged else (),
        )
        if recorded and received.dialect is not None:
            await self._jobs.record_dialect(connection, job_id, received.dialect)
        return recorded

    async def _stage(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        new_job: NewJob,
        pieces: AsyncIterator[bytes],
        received: _Received,
    ) -> _Staged:
        """Stores the file's rows as entries (COPY) as its bytes arrive, then resolves
        repeated keys; the job row is left to `_queue` (the progress writer owns it now)."""
        feed = _ByteFeed()
        columns = FileColumns()
        reader = FileReader(new_job.parse, new_job.import_type, new_job.mode, columns)
        blocks = reader.blocks(feed)
        checker = BlockChecker(new_job.import_type, new_job.mode, columns)
        repeats = RepeatedKeys()
        failed = 0
        total = 0

        def next_entries() -> pa.Buffer | None:
            """The next block's rows, checked and encoded for COPY (in a worker thread)."""
            nonlocal failed, total
            block = next(blocks, None)
            if block is None:
                return None
            entries = checker.check(block)
            repeats.add(entries.row_numbers, entries.keys)
            total += len(entries.row_numbers)
            failed += entries.failed
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
                    await self._slots.run(feed.put, piece)
                await self._slots.run(feed.put, None)
            except BaseException:
                feed.abort()
                raise

        async def store_rows() -> None:
            # The thread reads and checks the next block while this one is copied.
            reading = asyncio.ensure_future(self._slots.run(next_entries))
            try:
                while (payload := await reading) is not None:
                    read = total  # the rows of this payload and those before it
                    reading = asyncio.ensure_future(self._slots.run(next_entries))
                    await self._entries.copy_new(connection, payload)
                    received.staged_rows = read
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
        finally:
            received.dialect = reader.dialect  # a refused file's job shows how it was read
        received.total_rows = total  # the file is read whole: stage STAGING

        superseded = await self._entries.skip_superseded(
            connection, job_id, await self._slots.run(repeats.candidates)
        )
        failed -= superseded.were_failed
        skipped = superseded.skipped
        if new_job.all_or_nothing and failed:
            # Nothing is imported: no chunk needs to run.
            skipped += await self._entries.skip_pending(connection, job_id)
        # The errors of the rows that failed, but for those superseded rows dropped.
        summary = ranked_errors(checker.errors - Counter(superseded.dropped_errors))
        return _Staged(total, columns.names, failed, skipped, tuple(summary))

    async def _queue(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        new_job: NewJob,
        received: _Received,
        staged: _Staged,
    ) -> Job:
        """Records the file on the job row and queues its chunks, in the staging transaction
        (JobEnded if the job stopped receiving meanwhile: the transaction rolls back);
        returns the job as this transaction commits it (a worker may start it at once)."""
        total, failed, skipped = staged.total, staged.failed, staged.skipped
        chunk_rows = max(total, 1) if new_job.all_or_nothing else self._limits.chunk_size
        if not await self._record_file(connection, job_id, received, staged, chunk_rows):
            raise JobEnded
        if (too_many := too_many_errors(failed, new_job.max_errors)) is not None:
            await self._jobs.fail_job(connection, job_id, too_many)  # no chunk runs
        elif total - failed - skipped > 0:
            await self._jobs.create_chunks(connection, job_id, total, chunk_rows)
        else:
            await self._jobs.finish_if_done(connection, job_id)
        await self._jobs.notify(connection, job_id)
        job = await self._jobs.job_in(connection, job_id, new_job.tenant)
        assert job is not None
        return job


def _abort_cause(error: BaseException) -> str:
    """Why an upload ended early, in words for the job's error (never an internal text)."""
    if isinstance(error, asyncio.CancelledError):
        return "the caller went away (or the server stopped)"
    if is_connection_error(error):
        return "the database could not be reached"
    if isinstance(error, ImportdError):
        return f"the request was refused ({error.reason})"
    if isinstance(error, asyncpg.PostgresError):
        return "the database refused the rows (see the server log)"
    return "the server failed (see its log)"


async def file_pieces(source: BinaryIO, block_size: int = 1 << 20) -> AsyncIterator[bytes]:
    """An open file's bytes in blocks, read in a worker thread; closes it at the end."""
    with source:
        while block := await asyncio.to_thread(source.read, block_size):
            yield block
