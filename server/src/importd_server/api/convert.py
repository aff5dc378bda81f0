"""Conversions between protobuf messages and domain types, done once, at the edge."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2
from google.rpc import code_pb2

from importd.v1 import import_service_pb2 as pb
from importd_server.api.status import build_rpc_status
from importd_server.errors import InvalidArgument
from importd_server.model import Job, JobStatus

E = TypeVar("E", bound=StrEnum)

# Each domain enum's proto twin and the prefix of its value names (AIP-126 style).
JOB_STATUS = (pb.JobStatus, "JOB_STATUS")
JOB_STAGE = (pb.JobStage, "JOB_STAGE")
IMPORT_MODE = (pb.ImportMode, "IMPORT_MODE")
FILE_FORMAT = (pb.FileFormat, "FILE_FORMAT")


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    """The UUID in a request field, or INVALID_ARGUMENT naming the field."""
    if not value:
        raise InvalidArgument.for_field(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.for_field(field, f"{value!r} is not a UUID") from None


def enum_to_proto(value: StrEnum | None, twin: tuple[Any, str]) -> Any:
    """The proto number of a domain enum value (0, unspecified, for None).

    Typed Any because each generated enum has its own ValueType.
    """
    proto_enum, prefix = twin
    return 0 if value is None else proto_enum.Value(f"{prefix}_{value.value}")


def enum_from_proto(number: int, twin: tuple[Any, str], domain: type[E], field: str) -> E:
    """The domain value of a proto enum number; INVALID_ARGUMENT for unknown or unspecified."""
    proto_enum, prefix = twin
    try:
        return domain(str(proto_enum.Name(number)).removeprefix(f"{prefix}_"))
    except ValueError:
        raise InvalidArgument.for_field(field, f"{number} is not a valid value") from None


def job_statuses_from_proto(numbers: Iterable[int], field: str) -> tuple[JobStatus, ...]:
    """The JobStatus filter of a request."""
    return tuple(enum_from_proto(n, JOB_STATUS, JobStatus, field) for n in numbers)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp, or None to leave the field unset."""
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def job_to_proto(job: Job) -> pb.Job:
    """The Job message for a domain job."""
    counts = job.counts
    message = pb.Job(
        id=str(job.id),
        import_type=job.import_type,
        mode=enum_to_proto(job.mode, IMPORT_MODE),
        status=enum_to_proto(job.status, JOB_STATUS),
        stage=enum_to_proto(job.stage, JOB_STAGE),
        format=enum_to_proto(job.format, FILE_FORMAT),
        file_name=job.file_name,
        file_size_bytes=job.file_size_bytes,
        sha256=job.sha256,
        total_rows=job.total_rows,
        processed_rows=counts.processed,
        created_count=counts.created,
        updated_count=counts.updated,
        unchanged_count=counts.unchanged,
        skipped_count=counts.skipped,
        failed_count=counts.failed,
        deleted_count=counts.deleted,
        progress_percent=job.progress_percent,
        rows_per_second=job.rows_per_second,
        dry_run=job.dry_run,
        all_or_nothing=job.all_or_nothing,
        max_errors=job.max_errors,
        labels=dict(job.labels),
        request_id=job.request_id or "",
        create_time=timestamp(job.create_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
    )
    if job.error is not None:
        code = code_pb2.Code.DESCRIPTOR.values_by_name.get(job.error.code)
        number = code.number if code is not None else code_pb2.UNKNOWN
        message.error.CopyFrom(build_rpc_status(number, job.error.message, job.error.reason))
    return message
