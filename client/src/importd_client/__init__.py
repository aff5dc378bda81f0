"""importd client: the Python library for the importd bulk-import service.

    from importd_client import Client

    with Client("127.0.0.1:50051", token="...") as client:
        job = client.start_import("contacts.csv", import_type="contacts", mode="upsert")
        for event in job.progress():
            print(event.job.processed_rows, "/", event.job.total_rows)
        job.download_not_imported("not-imported.csv")

AsyncClient and AsyncJob offer the same calls to asyncio code. Messages (Job, Entry,
ProgressEvent, ImportType) are the generated `importd.v1` protobuf classes.
"""

from importd_client._async_client import (
    DEFAULT_TARGET,
    AsyncClient,
    AsyncJob,
    ImportOptions,
    RetryPolicy,
)
from importd_client._errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    ImportdError,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from importd_client._names import entry_status_name, job_status_name
from importd_client._sync_client import Client, Job

__all__ = [
    "DEFAULT_TARGET",
    "AlreadyExists",
    "AsyncClient",
    "AsyncJob",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "ImportOptions",
    "ImportdError",
    "InternalError",
    "InvalidArgument",
    "Job",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "entry_status_name",
    "job_status_name",
]
