"""ImportServicer: the importd.v1.ImportService RPCs, each a translation to domain calls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.api import paging
from importd_server.api.convert import (
    FILE_FORMAT,
    download_link_to_proto,
    entry_statuses_from_proto,
    entry_to_proto,
    enum_to_proto,
    import_type_to_proto,
    job_statuses_from_proto,
    job_to_proto,
    mode_from_proto,
    new_job_from_spec,
    parse_id,
    progress_event,
    webhook_delivery_to_proto,
)
from importd_server.api.filters import parse_filter
from importd_server.api.limits import check_request
from importd_server.api.status import Context, maps_errors
from importd_server.auth import READ, WRITE, Authenticator, Principal
from importd_server.config import Settings
from importd_server.engine.admission import Admission
from importd_server.engine.export import ALL_ROWS, NOT_IMPORTED, export_job, with_entries
from importd_server.engine.remote import REMOTE_SCHEMES, RemoteSources, uri_scheme
from importd_server.engine.retries import (
    check_ended,
    check_parent,
    linked_import_type,
    new_retry_job,
    retried_statuses,
    retry_file,
)
from importd_server.engine.reverts import Reverter
from importd_server.engine.shapes import DELIMITERS, ENCODINGS, fallback_list
from importd_server.engine.sources import open_source
from importd_server.engine.staging import NewJob, Stager, file_pieces
from importd_server.engine.validation import INT64_MAX
from importd_server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from importd_server.http.links import DownloadLinks
from importd_server.model import (
    FileFormat,
    ImportType,
    Job,
    JobCursor,
    JobFilter,
    JobStatus,
    WatchFilter,
)
from importd_server.net.guard import AddressGuard
from importd_server.net.http import check_http_url
from importd_server.progress.hub import ProgressHub
from importd_server.store.entries import EntryStore
from importd_server.store.jobs import JobStore
from importd_server.store.webhooks import WebhookStore
from importd_server.tenants import Tenant
from importd_server.tracing import Tracing
from importd_server.webhooks.signing import WebhookSigner

# Jobs per message of a WatchJobs snapshot: far below the message size limit.
SNAPSHOT_BATCH = 100
# How many jobs a watch remembers having sent (to never send a job's older state after a
# newer one); the oldest are forgotten first.
SENT_STATES_KEPT = 10_000

# StartImport's initial metadata: the new job's id, sent as soon as the job exists.
JOB_ID_METADATA = "importd-job-id"


class ImportServicer(pb_grpc.ImportServiceServicer):
    """Serves the ImportService."""

    def __init__(
        self,
        settings: Settings,
        import_types: Mapping[str, ImportType],
        jobs: JobStore,
        entries: EntryStore,
        stager: Stager,
        hub: ProgressHub,
        authenticator: Authenticator,
        admission: Admission,
        page_tokens: paging.PageTokens,
        webhooks: WebhookStore,
        webhook_signer: WebhookSigner,
        tracing: Tracing,
        on_job_queued: Callable[[], None] = lambda: None,
        *,
        reverter: Reverter,
        download_links: DownloadLinks | None = None,
    ) -> None:
        self._settings = settings
        self._import_types = import_types
        self._jobs = jobs
        self._entries = entries
        self._stager = stager
        self._hub = hub
        self._auth = authenticator
        self._admission = admission
        self._page_tokens = page_tokens
        self._open_streams: Counter[str] = Counter()
        self._remote = RemoteSources.from_settings(settings)
        self._fallback_encodings = fallback_list(settings.fallback_encodings)
        self._guard = AddressGuard.from_allow_list(settings.remote_allow_hosts)
        self._webhooks = webhooks
        self._webhook_signer = webhook_signer
        self._tracing = tracing
        self._on_job_queued = on_job_queued
        self._links = download_links
        self._reverter = reverter

    def _caller(self, context: Context, scope: str) -> Principal:
        """The authenticated caller, if its token grants `scope`."""
        principal = self._auth.authenticate(context.invocation_metadata())
        principal.require(scope)
        return principal

    async def _job(self, job_id: uuid.UUID, caller: Principal) -> Job:
        """The caller's job: another tenant's is NOT_FOUND; a live one is not a test token's."""
        job = await self._jobs.get_job(job_id, caller.tenant)
        if job is None:
            raise NotFound(f"job {job_id} not found", metadata={"id": str(job_id)})
        if job.live and not caller.live:
            raise PermissionDenied(
                f"job {job_id} is a live job; a test token cannot touch it",
                reason="TEST_TOKEN_ON_LIVE_JOB",
                metadata={"id": str(job_id)},
            )
        return job

    @maps_errors
    async def StartImport(
        self, request_iterator: AsyncIterator[pb.StartImportRequest], context: Context
    ) -> pb.Job:
        try:
            return await self._start_import(request_iterator, context)
        finally:
            # Answering before the caller has sent its whole upload makes grpc.aio clients
            # report INTERNAL instead of our status (grpc/grpc#36066): read what is left.
            await _drain(request_iterator, self._settings.grace_seconds)

    async def _start_import(
        self, request_iterator: AsyncIterator[pb.StartImportRequest], context: Context
    ) -> pb.Job:
        caller = self._caller(context, WRITE)
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("spec"):
            raise InvalidArgument.for_field("spec", "the first message must carry the spec")
        check_request(first)
        spec = first.spec
        if not caller.live and not spec.dry_run:
            raise PermissionDenied(
                "a test token can only start dry runs (set dry_run); live imports need a"
                " live token",
                reason="TEST_TOKEN_LIVE_IMPORT",
            )
        new_job = new_job_from_spec(
            spec,
            self._import_types,
            caller,
            self._settings.max_rows,
            self._settings.max_file_bytes,
            self._fallback_encodings,
        )
        if spec.webhook_url:
            check_http_url(spec.webhook_url, self._guard, "spec.webhook_url")
        if spec.retry_of:
            parent = await self._job(parse_id(spec.retry_of, "spec.retry_of"), caller)
            check_parent(parent, new_job.import_type.name, "spec.retry_of")
            new_job = dataclasses.replace(
                new_job,
                import_type=linked_import_type(new_job.import_type, parent),
                retry_of=parent.id,
            )
        existing = await self._stager.existing(new_job)
        if existing is not None:
            return job_to_proto(existing)  # a retried start: the limit was checked the first time
        await self._admission.precheck(caller.tenant)
        if spec.source_uri:
            if await anext(aiter(request_iterator), None) is not None:
                raise InvalidArgument.for_field(
                    "chunk", "no file chunks may follow a spec with a source_uri"
                )
            pieces = await self._source_pieces(spec.source_uri, caller.tenant)
        else:
            pieces = _upload_pieces(request_iterator)

        async def tell_job_id(job_id: uuid.UUID) -> None:
            # Before the file is received: the caller can follow the upload at once.
            await context.send_initial_metadata(((JOB_ID_METADATA, str(job_id)),))

        return job_to_proto(await self._stage(new_job, pieces, tell_job_id))

    async def _stage(
        self,
        new_job: NewJob,
        pieces: AsyncIterator[bytes],
        on_created: Callable[[uuid.UUID], Awaitable[None]] | None = None,
    ) -> Job:
        """The job staged from the file's pieces (uploaded, fetched, or a retry's), traced."""
        with self._tracing.span("importd.staging") as span:
            # The job keeps this span's context: its chunks join the trace on any replica.
            new_job = dataclasses.replace(new_job, trace_parent=self._tracing.trace_parent())
            async with _closing(pieces):
                job = await self._stager.start(new_job, pieces, on_created)
            span.set_attribute("importd.job_id", str(job.id))
        self._on_job_queued()
        return job

    @maps_errors
    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> pb.Job:
        caller = self._caller(context, WRITE)
        check_request(request)
        parent = with_entries(await self._job(parse_id(request.id), caller))
        check_ended(parent)
        import_type = self._import_types.get(parent.import_type)
        if import_type is None:
            raise FailedPrecondition(
                f"job {parent.id} imported {parent.import_type}, which this server no longer knows",
                reason="IMPORT_TYPE_UNKNOWN",
                metadata={"import_type": parent.import_type},
            )
        statuses = retried_statuses(entry_statuses_from_proto(request.statuses, "statuses"))
        mode = mode_from_proto(request.mode, import_type, "mode") if request.mode else parent.mode
        columns, options = await self._jobs.retry_source(parent.id)
        new_job = new_retry_job(
            parent,
            options,
            import_type,
            mode,
            statuses,
            request.request_id or None,
            (self._settings.max_rows, self._settings.max_file_bytes),
            caller.live,
        )
        existing = await self._stager.existing(new_job)
        if existing is not None:
            return job_to_proto(existing)
        await self._admission.precheck(caller.tenant)
        explicit = bool(request.statuses)
        pieces = retry_file(self._entries, parent, columns, statuses, mode, explicit)
        return job_to_proto(await self._stage(new_job, pieces))

    async def _source_pieces(self, uri: str, tenant: Tenant) -> AsyncIterator[bytes]:
        """The bytes of the file a source_uri names: the tenant's own file, or a remote one."""
        try:
            urlsplit(uri)
        except ValueError:  # e.g. an unbalanced "[" in the host
            raise InvalidArgument.for_field("spec.source_uri", "is not a valid URI") from None
        scheme = uri_scheme(uri)
        if scheme in REMOTE_SCHEMES:
            return self._remote.open(uri, tenant)
        if scheme != "file":
            raise InvalidArgument.for_field(
                "spec.source_uri",
                f"scheme {scheme!r} is not supported; use file://, https:// or s3://",
            )
        return file_pieces(await open_source(uri, self._settings.source_dir, tenant))

    @maps_errors
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        caller = self._caller(context, READ)
        check_request(request)
        return job_to_proto(await self._job(parse_id(request.id), caller))

    @maps_errors
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        caller = self._caller(context, READ)
        check_request(request)
        job_filter = JobFilter(
            tenant=caller.tenant,
            statuses=job_statuses_from_proto(request.statuses, "statuses"),
            import_type=request.import_type or None,
            include_live=caller.live,
            search=request.search or None,
            conditions=parse_filter(request.filter),
        )
        size = paging.page_size(request.page_size)
        filters = paging.fingerprint(
            "ListJobs",
            job_filter.tenant,
            sorted(job_filter.statuses),
            job_filter.import_type,
            job_filter.include_live,
            job_filter.search,
            dataclasses.asdict(job_filter.conditions),  # labels in any order: one filter
        )
        after = None
        if request.page_token:
            position = self._page_tokens.decode(request.page_token, filters)
            try:
                after = JobCursor(datetime.fromisoformat(position["t"]), uuid.UUID(position["i"]))
            except (KeyError, ValueError, TypeError):
                raise paging.invalid_token() from None
            if after.create_time.tzinfo is None:
                raise paging.invalid_token()
        page = await self._jobs.list_jobs(job_filter, size, after)
        next_token = ""
        if page.next_cursor is not None:
            next_token = self._page_tokens.encode(
                {"t": page.next_cursor.create_time.isoformat(), "i": str(page.next_cursor.job_id)},
                filters,
            )
        return pb.ListJobsResponse(
            jobs=[job_to_proto(j) for j in page.jobs], next_page_token=next_token
        )

    @maps_errors
    async def ListEntries(
        self, request: pb.ListEntriesRequest, context: Context
    ) -> pb.ListEntriesResponse:
        caller = self._caller(context, READ)
        check_request(request)
        job = with_entries(await self._job(parse_id(request.id), caller))
        statuses = entry_statuses_from_proto(request.statuses, "statuses")
        size = paging.page_size(request.page_size)
        if request.offset < 0:
            raise InvalidArgument.for_field("offset", "must not be negative")
        if request.offset and request.page_token:
            raise InvalidArgument.for_field("offset", "cannot be combined with page_token")
        error_code = request.error_code or None
        if error_code and request.across_retries:
            raise InvalidArgument.for_field("error_code", "cannot be combined with across_retries")
        filters = paging.fingerprint(
            "ListEntries", str(job.id), sorted(statuses), error_code, request.across_retries
        )
        after_row = 0
        if request.page_token:
            row = self._page_tokens.decode(request.page_token, filters).get("r")
            # bool is an int to Python, and the row number is a bigint to PostgreSQL.
            if type(row) is not int or not 0 <= row <= INT64_MAX:
                raise paging.invalid_token()
            after_row = row
        if request.across_retries:
            page = await self._entries.list_latest_entries(
                job,
                self._jobs.get_jobs,
                self._jobs.file_columns,
                statuses,
                size,
                after_row=after_row,
                offset=request.offset,
            )
        else:
            page = await self._entries.list_entries(
                job,
                await self._jobs.file_columns(job.id),
                statuses,
                size,
                after_row=after_row,
                offset=request.offset,
                error_code=error_code,
            )
        next_token = ""
        if page.next_after_row is not None:
            next_token = self._page_tokens.encode({"r": page.next_after_row}, filters)
        return pb.ListEntriesResponse(
            entries=[entry_to_proto(e) for e in page.entries],
            next_page_token=next_token,
            total_count=page.total_count,
        )

    @maps_errors
    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        caller = self._caller(context, WRITE)
        check_request(request)
        job_id = parse_id(request.id)
        job = await self._job(job_id, caller)
        cancelled = await self._jobs.cancel_job(job_id, caller.tenant)
        if cancelled is not None:
            return job_to_proto(cancelled)
        job = await self._job(job_id, caller)
        if job.status is JobStatus.CANCELLED:
            return job_to_proto(job)  # cancelling twice (a retried call) is no error
        raise FailedPrecondition(
            f"job {job_id} has already ended ({job.status.value}); only a queued or running"
            " job can be cancelled",
            reason="JOB_ALREADY_ENDED",
            metadata={"id": str(job_id), "status": job.status.value},
        )

    @maps_errors
    async def RevertJob(self, request: pb.RevertJobRequest, context: Context) -> pb.Job:
        caller = self._caller(context, WRITE)
        check_request(request)
        job = await self._job(parse_id(request.id), caller)
        revert = await self._reverter.revert(job, request.request_id or None)
        self._on_job_queued()
        return job_to_proto(revert)

    @maps_errors
    async def ExportEntries(
        self, request: pb.ExportEntriesRequest, context: Context
    ) -> AsyncIterator[pb.ExportEntriesResponse]:
        caller = self._caller(context, READ)
        check_request(request)
        job = await self._job(parse_id(request.id), caller)
        statuses = entry_statuses_from_proto(request.statuses, "statuses") or NOT_IMPORTED
        if request.all_rows:
            if request.statuses:
                raise InvalidArgument.for_field(
                    "all_rows", "cannot be combined with statuses: all_rows exports every row"
                )
            statuses = ALL_ROWS
        async for piece in export_job(job, self._jobs, self._entries, statuses):
            yield pb.ExportEntriesResponse(chunk=piece)

    @maps_errors
    async def ListImportTypes(
        self, request: pb.ListImportTypesRequest, context: Context
    ) -> pb.ListImportTypesResponse:
        self._caller(context, READ)
        local = ["file"] if self._settings.source_dir is not None else []
        return pb.ListImportTypesResponse(
            import_types=[import_type_to_proto(t) for _, t in sorted(self._import_types.items())],
            source_uri_schemes=[*local, *self._remote.schemes()],
            formats=[enum_to_proto(f, FILE_FORMAT) for f in FileFormat],
            encodings=list(ENCODINGS),
            fallback_encodings=list(self._fallback_encodings),
            sniffed_delimiters=list(DELIMITERS),
        )

    @maps_errors
    async def CreateDownloadLink(
        self, request: pb.CreateDownloadLinkRequest, context: Context
    ) -> pb.DownloadLink:
        caller = self._caller(context, READ)
        check_request(request)
        job = with_entries(await self._job(parse_id(request.id), caller))
        if self._links is None:
            raise FailedPrecondition(
                "download links need the HTTP port, which is off (IMPORTD_HTTP_PORT)",
                reason="HTTP_PORT_OFF",
            )
        link = self._links.issue(job.id, caller.tenant, all_rows=request.all_rows)
        return download_link_to_proto(link)

    @maps_errors
    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        caller = self._caller(context, READ)
        check_request(request)
        job = await self._job(parse_id(request.id), caller)
        deliveries = await self._webhooks.list_deliveries(job.id)
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[webhook_delivery_to_proto(d) for d in deliveries]
        )

    @maps_errors
    async def GetWebhookSecret(
        self, request: pb.GetWebhookSecretRequest, context: Context
    ) -> pb.WebhookSecret:
        # The secret can forge the tenant's webhooks: for those who may start imports.
        caller = self._caller(context, WRITE)
        return pb.WebhookSecret(secret=self._webhook_signer.secret(caller.tenant, caller.live))

    @maps_errors
    async def WatchJobs(
        self, request: pb.WatchJobsRequest, context: Context
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        caller = self._caller(context, READ)
        check_request(request)
        watch_filter = WatchFilter(
            tenant=caller.tenant,
            statuses=job_statuses_from_proto(request.statuses, "statuses"),
            import_type=request.import_type or None,
            labels=dict(request.labels),
            include_live=caller.live,
        )
        since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None
        async with self._stream_slot(caller.tenant):
            async for response in self._watch(watch_filter, since):
                yield response

    async def _watch(
        self, watch_filter: WatchFilter, since: datetime | None
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        # Watch before reading the snapshot, so no change falls between the two.
        async with self._hub.watch(watch_filter.tenant, watch_filter.matches) as watch:
            sent = _SentStates()
            batch: list[pb.Job] = []
            async for job in self._jobs.watched_jobs(watch_filter, since):
                sent.note(job)
                batch.append(job_to_proto(job))
                if len(batch) == SNAPSHOT_BATCH:
                    yield pb.WatchJobsResponse(jobs=batch)
                    batch = []
            yield pb.WatchJobsResponse(jobs=batch, snapshot_complete=True)
            while True:
                changed = [job_to_proto(j) for j in await watch.next() if sent.note(j)]
                if changed:
                    yield pb.WatchJobsResponse(jobs=changed)

    @maps_errors
    async def StreamProgress(
        self, request: pb.StreamProgressRequest, context: Context
    ) -> AsyncIterator[pb.ProgressEvent]:
        caller = self._caller(context, READ)
        check_request(request)
        job_id = parse_id(request.id)
        async with self._stream_slot(caller.tenant):
            async for event in self._follow(job_id, caller):
                yield event

    @contextlib.asynccontextmanager
    async def _stream_slot(self, tenant: str) -> AsyncIterator[None]:
        """One of the tenant's open streams (StreamProgress, WatchJobs) on this server, or
        RESOURCE_EXHAUSTED when it has as many as allowed."""
        limit = self._settings.max_streams_per_tenant
        if self._open_streams[tenant] >= limit:
            raise ResourceExhausted(
                f"tenant {tenant} has {limit} progress streams open on this server,"
                " the most allowed",
                reason="TOO_MANY_STREAMS",
                metadata={"limit": str(limit)},
            )
        self._open_streams[tenant] += 1
        try:
            yield
        finally:
            self._open_streams[tenant] -= 1

    async def _follow(
        self, job_id: uuid.UUID, caller: Principal
    ) -> AsyncIterator[pb.ProgressEvent]:
        # Subscribe before reading the snapshot, so no change falls between the two.
        async with self._hub.subscribe(job_id) as subscription:
            job = await self._job(job_id, caller)
            yield progress_event(job)
            while not job.status.is_terminal:
                latest = await subscription.next()
                # A state read before the snapshot may still arrive: never go back in time.
                if latest.update_time >= job.update_time and latest.progress != job.progress:
                    job = latest
                    yield progress_event(job)


class _SentStates:
    """The update_time of each job a watch sent last: a state read before the snapshot may
    arrive after it, and must not take a job back in time."""

    def __init__(self) -> None:
        self._sent: OrderedDict[uuid.UUID, datetime] = OrderedDict()

    def note(self, job: Job) -> bool:
        """Notes the job's state as sent if it is newer than the one sent last; returns
        whether it was (an older or the same state is not to be sent)."""
        last = self._sent.get(job.id)
        if last is not None and job.update_time <= last:
            return False
        self._sent[job.id] = job.update_time
        self._sent.move_to_end(job.id)
        if len(self._sent) > SENT_STATES_KEPT:
            self._sent.popitem(last=False)
        return True


async def _drain(request_iterator: AsyncIterator[pb.StartImportRequest], seconds: float) -> None:
    """Reads and drops what is left of an upload, for at most `seconds`."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            async for _ in request_iterator:
                pass


@contextlib.asynccontextmanager
async def _closing(pieces: AsyncIterator[bytes]) -> AsyncIterator[None]:
    """Closes the file's pieces when staging ends, also early (an error, a file too large):
    a remote connection ends then, not whenever the generator is collected."""
    try:
        yield
    finally:
        if isinstance(pieces, AsyncGenerator):
            await pieces.aclose()


async def _upload_pieces(
    request_iterator: AsyncIterator[pb.StartImportRequest],
) -> AsyncIterator[bytes]:
    async for message in request_iterator:
        if message.HasField("spec"):
            raise InvalidArgument.for_field("spec", "only the first message may carry a spec")
        yield message.chunk
