"""AsyncClient and AsyncJob: the importd API for asyncio code."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypedDict, TypeVar, Unpack

import grpc
import stamina
from google.protobuf import timestamp_pb2

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_client._errors import error_from_rpc
from importd_client._names import (
    TERMINAL_STATUSES,
    entry_status_number,
    format_number,
    job_status_name,
    job_status_number,
    mode_number,
)

DEFAULT_TARGET = "127.0.0.1:50051"
# StartImport's initial metadata: the job's id, sent by the server once the job exists.
JOB_ID_METADATA = "importd-job-id"
PIECE_BYTES = 256 * 1024
# RevertJob's deadline at least: the call copies the job's changed rows into the revert's
# entries (about 15 s a million on a loaded server).
REVERT_TIMEOUT = 300.0
# Keepalive pings find a peer that went silent without closing the connection, so a
# stream on it fails (and resumes) instead of hanging.
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
)

Response = TypeVar("Response")
Source = str | os.PathLike[str] | bytes | BinaryIO
"""What `start_import` reads: a path, the file's bytes, or a binary file object."""


class ImportOptions(TypedDict, total=False):
    """How `start_import` imports a file; every key is optional."""

    mode: str | int  # "insert", "upsert" (the default), "update" or "delete"
    file_format: str | int | None  # "csv", "jsonl", "xlsx", "ods"; by default detected
    file_name: str | None  # by default the source's own name
    dry_run: bool  # validate and count; write nothing
    max_errors: int | None  # fail the job when more rows than this fail
    all_or_nothing: bool  # commit nothing unless every row is valid
    labels: Mapping[str, str] | None  # your own references, returned on the job
    delimiter: str  # CSV: sniffed among , ; tab | by default
    quote: str  # CSV: '"' by default
    header: bool | None  # CSV: whether the first row names the columns (default yes)
    encoding: str  # e.g. "utf-8", "utf-16", "windows-1252"; by default detected
    sheet: str  # workbooks: the sheet to read; by default the first visible one
    column_map: Mapping[str, str] | None  # file header -> column, e.g. {"E-Mail": "email"}
    request_id: str | None  # idempotency key; generated when not given
    retry_of: str | None  # the id of an ended job this upload retries (e.g. its export, fixed)
    revertible: bool  # record what the writes replace, for revert() (default yes)


@dataclass(frozen=True)
class RetryPolicy:
    """How calls that are safe to repeat are retried when the server is UNAVAILABLE.

    Pauses grow exponentially from `initial_backoff` to `max_backoff` seconds, each plus a
    random `jitter` of up to that many seconds, so that clients turned away together (a
    rolling restart, a database outage) do not come back in lock-step. Retries are made
    for up to `deadline` seconds after the first attempt, however many that takes; a broken
    progress stream is resumed likewise for up to `resume_seconds` (counted afresh each
    time it has delivered events again).
    """

    deadline: float = 30.0
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    jitter: float = 1.0
    resume_seconds: float = 120.0

    def attempts(self, within: float) -> AsyncIterable[stamina.Attempt]:
        """Attempts at a call: a `with` block that fails UNAVAILABLE is tried again after a
        jittered pause until `within` seconds have passed, then its error is raised."""
        return stamina.retry_context(
            on=_is_unavailable,
            attempts=None,
            timeout=within,
            wait_initial=self.initial_backoff,
            wait_max=self.max_backoff,
            wait_jitter=self.jitter,
        )


def _is_unavailable(error: Exception) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


class AsyncClient:
    """A connection to importd for asyncio code. Use as `async with AsyncClient(...)`.

    `token` is sent as `authorization: Bearer <token>` on every call; `timeout` is the
    deadline of each unary call in seconds; `credentials` turns TLS on.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = pb_grpc.ImportServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._retry = retry or RetryPolicy()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection."""
        await self._channel.close()

    async def start_import(
        self,
        source: Source | None = None,
        *,
        import_type: str,
        source_uri: str | None = None,
        on_created: Callable[[str], object] | None = None,
        **options: Unpack[ImportOptions],
    ) -> AsyncJob:
        """Uploads a file (streamed in pieces, never read whole) and returns its job, QUEUED
        once the server has stored the file (or FAILED if the file cannot be read).

        The job exists from the file's first byte: `on_created` is called with its id then,
        while the file is still being sent, so the upload can be followed (`get_job(id)`,
        stages RECEIVING and STAGING). (With the sync Client it runs on the client's own
        thread: hand the id over, do not call the client from it.)

        Or, with `source_uri` instead of `source`, has the server read the file itself:
        `https://…` (e.g. a signed URL), `s3://bucket/<tenant>/key` or `file://…`, as the
        server allows (`list_source_uri_schemes`).

        `options` are ImportOptions (mode "upsert" by default). A `request_id` is generated
        when not given, so a retried start (after UNAVAILABLE) never makes two jobs. Paths,
        bytes, seekable files and URIs are retried; other streams cannot be read twice.
        """
        if (source is None) == (source_uri is None):
            raise TypeError("start_import takes a source or a source_uri, not both or neither")
        file_format = options.get("file_format")
        spec = pb.ImportSpec(
            import_type=import_type,
            mode=mode_number(options.get("mode", "upsert")),
            format=(
                format_number(file_format)
                if file_format is not None
                else pb.FILE_FORMAT_UNSPECIFIED
            ),
            file_name=options.get("file_name") or _source_name(source),
            source_uri=source_uri or "",
            dry_run=options.get("dry_run", False),
            max_errors=options.get("max_errors"),
            all_or_nothing=options.get("all_or_nothing", False),
            revertible=options.get("revertible", True),
            labels=dict(options.get("labels") or {}),
            sheet=options.get("sheet", ""),
            column_map=dict(options.get("column_map") or {}),
            csv=pb.CsvOptions(
                delimiter=options.get("delimiter", ""),
                quote=options.get("quote", ""),
                header=options.get("header"),
                encoding=options.get("encoding", ""),
            ),
            request_id=options.get("request_id") or str(uuid.uuid4()),
            retry_of=options.get("retry_of") or "",
        )
        pieces, rereadable = _pieces(source)

        async def requests() -> AsyncIterator[pb.StartImportRequest]:
            yield pb.StartImportRequest(spec=spec)
            async for piece in pieces():
                yield pb.StartImportRequest(chunk=piece)

        async def start() -> pb.Job:
            call = self._stub.StartImport(requests(), metadata=self._metadata)
            if on_created is None:
                return await call
            telling = asyncio.ensure_future(_tell_job_id(call, on_created))
            try:
                return await call
            finally:
                await telling  # done once the call is: its metadata came first

        job = await self._with_retries(start, idempotent=rereadable)
        return AsyncJob(self, job)

    async def get_job(self, job_id: str) -> AsyncJob:
        """The job with this id."""
        return AsyncJob(self, await self._get(job_id))

    async def retry_job(
        self,
        job_id: str,
        *,
        statuses: Iterable[str | int] = (),
        mode: str | int | None = None,
        request_id: str | None = None,
    ) -> AsyncJob:
        """Starts a new job over the rows of the ended job `job_id` that did not go in (by
        default failed, not processed, and the skipped rows a retry can change; or these
        `statuses`), from the rows the server holds, in `mode` (by default the job's). A
        `request_id` is generated when not given, so a retried call makes one job."""
        if isinstance(statuses, str | int):
            statuses = [statuses]
        request = pb.RetryJobRequest(
            id=job_id,
            statuses=[entry_status_number(s) for s in statuses],
            mode=mode_number(mode) if mode is not None else pb.IMPORT_MODE_UNSPECIFIED,
            request_id=request_id or str(uuid.uuid4()),
        )
        return AsyncJob(self, await self._unary(self._stub.RetryJob, request))

    async def revert_job(self, job_id: str, *, request_id: str | None = None) -> AsyncJob:
        """Reverts an ended job: returns the revert, a job of its own (QUEUED), which deletes
        the rows the job created, restores the ones it updated and re-inserts the ones it
        deleted, skipping rows changed since (with a note). FailedPrecondition if the job
        cannot be reverted (still running, a dry run, already reverted, ...). A
        `request_id` is generated when not given, so a retried call makes one revert. Its
        deadline is at least REVERT_TIMEOUT: the call copies the job's changed rows."""
        request = pb.RevertJobRequest(id=job_id, request_id=request_id or str(uuid.uuid4()))
        deadline = max(self._timeout, REVERT_TIMEOUT)
        return AsyncJob(self, await self._unary(self._stub.RevertJob, request, deadline))

    async def list_jobs(
        self,
        *,
        statuses: Iterable[str | int] = (),
        import_type: str | None = None,
        filter: str = "",
        page_size: int = 100,
    ) -> AsyncIterator[AsyncJob]:
        """The caller's jobs, newest first, fetched page by page as you iterate. `filter` is
        AIP-160, e.g. `labels.batch = "x" AND create_time > "2026-11-01T00:00:00Z"` or
        `retry_of = "<job id>"` (a job's retries)."""
        token = ""
        while True:
            request = pb.ListJobsRequest(
                page_size=page_size,
                page_token=token,
                statuses=[job_status_number(s) for s in statuses],
                import_type=import_type or "",
                filter=filter,
            )
            page = await self._unary(self._stub.ListJobs, request)
            for job in page.jobs:
                yield AsyncJob(self, job)
            token = page.next_page_token
            if not token:
                return

    async def watch_jobs(
        self,
        *,
        statuses: Iterable[str | int] = (),
        import_type: str | None = None,
        labels: Mapping[str, str] | None = None,
        since: datetime | None = None,
    ) -> AsyncIterator[pb.Job]:
        """Every change to your jobs that match the filters, as it happens (coalesced to a
        few a second a job), until you stop iterating: first the matching jobs that are
        queued or running (and, with `since`, those changed since then), then each change.

        A dropped stream or a restarted server is resumed transparently, from the latest
        change received: a job's state is never given twice, nor an older one after a newer.
        The statuses filter applies to each state: leave it empty to follow jobs to their end.
        """
        request = pb.WatchJobsRequest(
            statuses=[job_status_number(s) for s in statuses],
            import_type=import_type or "",
            labels=dict(labels or {}),
        )
        if since is not None:
            request.since.FromDatetime(since)
        # The last state given of each job: (update time, whether terminal).
        given: dict[str, tuple[tuple[int, int], bool]] = {}
        try:
            while True:
                async for attempt in self._retry.attempts(self._retry.resume_seconds):
                    with attempt:
                        delivered = False
                        call = self._stub.WatchJobs(request, metadata=self._metadata)
                        try:
                            async for response in call:
                                delivered = True
                                for job in response.jobs:
                                    if _note_if_new(job, given, request.since):
                                        yield job
                        except grpc.aio.AioRpcError as error:
                            if not delivered or error.code() != grpc.StatusCode.UNAVAILABLE:
                                raise
                # Resumed: the server's snapshot covers what changed since the latest state
                # given; ended jobs older than that cannot come back, so are forgotten.
                latest = (request.since.seconds, request.since.nanos)
                given = {k: v for k, v in given.items() if not v[1] or v[0] >= latest}
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from None

    async def list_import_types(self) -> list[pb.ImportType]:
        """The import types the server knows, with their columns and rules."""
        response = await self._unary(self._stub.ListImportTypes, pb.ListImportTypesRequest())
        return list(response.import_types)

    async def list_source_uri_schemes(self) -> list[str]:
        """The schemes `source_uri` may use on this server, e.g. ["file", "https", "s3"]."""
        response = await self._unary(self._stub.ListImportTypes, pb.ListImportTypesRequest())
        return list(response.source_uri_schemes)

    async def _get(self, job_id: str) -> pb.Job:
        return await self._unary(self._stub.GetJob, pb.GetJobRequest(id=job_id))

    async def _cancel(self, job_id: str) -> pb.Job:
        return await self._unary(self._stub.CancelJob, pb.CancelJobRequest(id=job_id))

    async def _entries(
        self, job_id: str, statuses: Iterable[str | int], page_size: int
    ) -> AsyncIterator[pb.Entry]:
        wanted = [entry_status_number(s) for s in statuses]
        token = ""
        while True:
            request = pb.ListEntriesRequest(
                id=job_id, statuses=wanted, page_size=page_size, page_token=token
            )
            page = await self._unary(self._stub.ListEntries, request)
            for entry in page.entries:
                yield entry
            token = page.next_page_token
            if not token:
                return

    async def _progress(self, job_id: str) -> AsyncIterator[pb.ProgressEvent]:
        last: pb.ProgressEvent | None = None
        try:
            while True:
                # Each round resumes until the stream delivers again or resume_seconds pass.
                async for attempt in self._retry.attempts(self._retry.resume_seconds):
                    with attempt:
                        delivered = False
                        call = self._stub.StreamProgress(
                            pb.StreamProgressRequest(id=job_id), metadata=self._metadata
                        )
                        try:
                            async for event in call:
                                delivered = True
                                if last is None or _is_newer(event, last):
                                    last = event
                                    yield event
                                if event.terminal:
                                    return
                        except grpc.aio.AioRpcError as error:
                            if not delivered or error.code() != grpc.StatusCode.UNAVAILABLE:
                                raise
                # The stream broke after delivering (a replica went away), or ended early:
                # resume from a fresh snapshot.
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from None

    async def _download(
        self, job_id: str, path: Path, statuses: Iterable[str | int], *, all_rows: bool = False
    ) -> Path:
        request = pb.ExportEntriesRequest(
            id=job_id, statuses=[entry_status_number(s) for s in statuses], all_rows=all_rows
        )
        partial = path.with_name(path.name + ".partial")
        try:
            with partial.open("wb") as out:
                async for piece in self._stub.ExportEntries(request, metadata=self._metadata):
                    out.write(piece.chunk)
        except grpc.aio.AioRpcError as error:
            partial.unlink(missing_ok=True)
            raise error_from_rpc(error) from None
        partial.replace(path)  # the file appears whole or not at all
        return path

    async def _unary(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Any,
        deadline: float | None = None,
    ) -> Response:
        """The call's answer; `deadline` in seconds (the client's timeout by default)."""
        seconds = self._timeout if deadline is None else deadline
        return await self._with_retries(
            lambda: method(request, timeout=seconds, metadata=self._metadata),
            idempotent=True,
        )

    async def _with_retries(
        self, call: Callable[[], Awaitable[Response]], *, idempotent: bool
    ) -> Response:
        try:
            if not idempotent:
                return await call()
            async for attempt in self._retry.attempts(self._retry.deadline):
                with attempt:
                    return await call()
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from None
        raise AssertionError("unreachable: stamina either returns an attempt's result or raises")


class AsyncJob:
    """A handle on one job: `job` is its last known state; the methods call the server."""

    def __init__(self, client: AsyncClient, job: pb.Job) -> None:
        self._client = client
        self.job = job

    @property
    def id(self) -> str:
        """The job's id."""
        return self.job.id

    @property
    def status(self) -> str:
        """The last known status, e.g. "RUNNING" or "SUCCEEDED"."""
        return job_status_name(self.job)

    @property
    def done(self) -> bool:
        """Whether the job has ended (as last known)."""
        return self.job.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        """Whether the job ended with every row applied."""
        return self.job.status == pb.JOB_STATUS_SUCCEEDED

    async def refresh(self) -> pb.Job:
        """Fetches the job's current state."""
        self.job = await self._client._get(self.id)
        return self.job

    async def wait(self, timeout: float | None = None) -> pb.Job:  # noqa: ASYNC109 - the API's word
        """Waits until the job ends and returns its final state. Raises TimeoutError after
        `timeout` seconds; follows the progress stream, resuming it if a replica goes away."""
        async with asyncio.timeout(timeout):
            async for event in self.progress():
                if event.terminal:
                    break
        return self.job

    async def progress(self) -> AsyncIterator[pb.ProgressEvent]:
        """Progress events until the job ends: a snapshot, each change, the terminal event.
        A dropped stream or a restarted server is resumed transparently."""
        async for event in self._client._progress(self.id):
            self.job = event.job
            yield event

    def entries(
        self, statuses: Iterable[str | int] = (), *, page_size: int = 500
    ) -> AsyncIterator[pb.Entry]:
        """The job's entries in row order (only these statuses, e.g. ["failed"]), fetched
        page by page as you iterate."""
        if isinstance(statuses, str | int):
            statuses = [statuses]
        return self._client._entries(self.id, statuses, page_size)

    async def cancel(self) -> pb.Job:
        """Cancels the job; committed chunks stay. FailedPrecondition if it already ended."""
        self.job = await self._client._cancel(self.id)
        return self.job

    async def revert(self, *, request_id: str | None = None) -> AsyncJob:
        """Reverts this ended job (see AsyncClient.revert_job); returns the revert's handle."""
        return await self._client.revert_job(self.id, request_id=request_id)

    async def download_not_imported(
        self, path: str | os.PathLike[str], statuses: Iterable[str | int] = ()
    ) -> Path:
        """Writes the rows that were not imported (failed, skipped and not processed, or
        `statuses`) as CSV in the file's own columns plus importd_row, importd_status,
        importd_errors."""
        return await self._client._download(self.id, Path(path), statuses)

    async def download_report(self, path: str | os.PathLike[str]) -> Path:
        """Writes every row of the file in file order as CSV, each with its importd_row,
        importd_status and importd_errors: the whole file as one report."""
        return await self._client._download(self.id, Path(path), (), all_rows=True)

    async def retry(
        self,
        statuses: Iterable[str | int] = (),
        *,
        mode: str | int | None = None,
        request_id: str | None = None,
    ) -> AsyncJob:
        """Starts a new job over this ended job's rows that did not go in; see
        AsyncClient.retry_job. Returns the new job (its `retry_of` is this job's id)."""
        return await self._client.retry_job(
            self.id, statuses=statuses, mode=mode, request_id=request_id
        )


def _is_newer(event: pb.ProgressEvent, last: pb.ProgressEvent) -> bool:
    """Whether a (possibly resumed) event says something the last one did not."""
    if event.terminal != last.terminal:
        return True
    new, old = event.job.update_time, last.job.update_time
    return (new.seconds, new.nanos) > (old.seconds, old.nanos)


def _note_if_new(
    job: pb.Job,
    given: dict[str, tuple[tuple[int, int], bool]],
    since: timestamp_pb2.Timestamp,
) -> bool:
    """Whether the job's state is newer than the one given last; if so, notes it, and moves
    `since` (the resume point) up to it."""
    changed = (job.update_time.seconds, job.update_time.nanos)
    last = given.get(job.id)
    if last is not None and changed <= last[0]:
        return False
    given[job.id] = (changed, job.status in TERMINAL_STATUSES)
    if changed > (since.seconds, since.nanos):
        since.CopyFrom(job.update_time)
    return True


async def _tell_job_id(
    call: grpc.aio.StreamUnaryCall[Any, Any], on_created: Callable[[str], object]
) -> None:
    """Calls `on_created` with the job id the server sends in StartImport's initial metadata
    as soon as the job exists (not at all if the call ends without a job)."""
    try:
        metadata = await call.initial_metadata()
    except grpc.aio.AioRpcError:
        return
    job_id = metadata.get(JOB_ID_METADATA) if metadata else None
    if isinstance(job_id, str):
        on_created(job_id)


async def _no_pieces() -> AsyncIterator[bytes]:
    return
    yield b""  # makes this an async generator that yields nothing


def _source_name(source: Source | None) -> str:
    if source is None:
        return ""  # the server names the job after the URI, without its query
    if isinstance(source, bytes):
        return ""
    if isinstance(source, str | os.PathLike):
        return Path(source).name
    return Path(str(getattr(source, "name", ""))).name


def _pieces(source: Source | None) -> tuple[Callable[[], AsyncIterator[bytes]], bool]:
    """A way to read the source from its start, in pieces, and whether it can be re-read."""
    if source is None:  # the server reads a source_uri itself
        return _no_pieces, True

    if isinstance(source, bytes):

        async def from_bytes() -> AsyncIterator[bytes]:
            for start in range(0, len(source), PIECE_BYTES):
                yield source[start : start + PIECE_BYTES]

        return from_bytes, True

    if isinstance(source, str | os.PathLike):
        path = Path(source)

        async def from_path() -> AsyncIterator[bytes]:
            with path.open("rb") as file:  # noqa: ASYNC230 - reads run in a thread below
                while piece := await asyncio.to_thread(file.read, PIECE_BYTES):
                    yield piece

        return from_path, True

    stream = source
    start = stream.tell() if stream.seekable() else None

    async def from_stream() -> AsyncIterator[bytes]:
        if start is not None:
            stream.seek(start)
        while piece := await asyncio.to_thread(stream.read, PIECE_BYTES):
            yield piece

    return from_stream, start is not None
