"""ImportServicer: the importd.v1.ImportService RPCs, each a translation to domain calls."""

from __future__ import annotations

import uuid
from datetime import datetime

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.api import paging
from importd_server.api.convert import job_statuses_from_proto, job_to_proto, parse_id
from importd_server.api.status import Context, maps_errors
from importd_server.errors import InvalidArgument, NotFound, Unimplemented
from importd_server.model import JobCursor, JobFilter
from importd_server.store.jobs import JobStore

# Until authentication lands every caller is this one tenant.
DEFAULT_TENANT = "default"


class ImportServicer(pb_grpc.ImportServiceServicer):
    """Serves the ImportService; RPCs not implemented yet answer UNIMPLEMENTED."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    @maps_errors
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        job_id = parse_id(request.id)
        job = await self._jobs.get_job(job_id, DEFAULT_TENANT)
        if job is None:
            raise NotFound(f"job {job_id} not found", metadata={"id": str(job_id)})
        return job_to_proto(job)

    @maps_errors
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        job_filter = JobFilter(
            tenant=DEFAULT_TENANT,
            statuses=job_statuses_from_proto(request.statuses, "statuses"),
            import_type=request.import_type or None,
        )
        size = paging.page_size(request.page_size)
        filters = paging.fingerprint(
            "ListJobs", job_filter.tenant, sorted(job_filter.statuses), job_filter.import_type
        )
        after = None
        if request.page_token:
            position = paging.decode_page_token(request.page_token, filters)
            try:
                after = JobCursor(datetime.fromisoformat(position["t"]), uuid.UUID(position["i"]))
            except (KeyError, ValueError, TypeError):
                raise InvalidArgument.for_field("page_token", "is not a valid page token") from None
        page = await self._jobs.list_jobs(job_filter, size, after)
        next_token = ""
        if page.next_cursor is not None:
            next_token = paging.encode_page_token(
                {"t": page.next_cursor.create_time.isoformat(), "i": str(page.next_cursor.job_id)},
                filters,
            )
        return pb.ListJobsResponse(
            jobs=[job_to_proto(j) for j in page.jobs], next_page_token=next_token
        )

    @maps_errors
    async def StartImport(self, request_iterator: object, context: Context) -> pb.Job:
        raise Unimplemented("StartImport is not implemented yet")

    @maps_errors
    async def ListEntries(
        self, request: pb.ListEntriesRequest, context: Context
    ) -> pb.ListEntriesResponse:
        raise Unimplemented("ListEntries is not implemented yet")

    @maps_errors
    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        raise Unimplemented("CancelJob is not implemented yet")

    @maps_errors
    async def ListImportTypes(
        self, request: pb.ListImportTypesRequest, context: Context
    ) -> pb.ListImportTypesResponse:
        raise Unimplemented("ListImportTypes is not implemented yet")

    # Server-streaming RPCs written as coroutines (not generators) until their issues land:
    # grpc.aio accepts a coroutine handler, and maps_errors turns the raise into a status.
    @maps_errors
    async def StreamProgress(  # type: ignore[override]
        self, request: pb.StreamProgressRequest, context: Context
    ) -> None:
        raise Unimplemented("StreamProgress is not implemented yet")

    @maps_errors
    async def ExportEntries(  # type: ignore[override]
        self, request: pb.ExportEntriesRequest, context: Context
    ) -> None:
        raise Unimplemented("ExportEntries is not implemented yet")
