"""Enum values by their short names: "upsert" for IMPORT_MODE_UPSERT, "failed" for
ENTRY_STATUS_FAILED, and back."""

from __future__ import annotations

from typing import Any

from importd.v1 import import_service_pb2 as pb


def _number(enum: Any, prefix: str, value: str | int) -> Any:
    if isinstance(value, int):
        return value
    try:
        return enum.Value(f"{prefix}_{value.upper()}")
    except ValueError:
        known = ", ".join(n.removeprefix(f"{prefix}_").lower() for n in enum.keys()[1:])
        raise ValueError(f"{value!r} is not one of {known}") from None


def mode_number(mode: str | int) -> Any:
    """The ImportMode value for "insert", "upsert", "update" or "delete"."""
    return _number(pb.ImportMode, "IMPORT_MODE", mode)


def format_number(file_format: str | int) -> Any:
    """The FileFormat value for "csv", "jsonl", "xlsx" or "ods"."""
    return _number(pb.FileFormat, "FILE_FORMAT", file_format)


def entry_status_number(status: str | int) -> Any:
    """The EntryStatus value for "failed", "skipped", "created", ..."""
    return _number(pb.EntryStatus, "ENTRY_STATUS", status)


def job_status_number(status: str | int) -> Any:
    """The JobStatus value for "queued", "running", "succeeded", ..."""
    return _number(pb.JobStatus, "JOB_STATUS", status)


def job_status_name(job: pb.Job) -> str:
    """The job's status as a short upper-case name, e.g. "SUCCEEDED"."""
    return str(pb.JobStatus.Name(job.status)).removeprefix("JOB_STATUS_")


def entry_status_name(entry: pb.Entry) -> str:
    """The entry's status as a short upper-case name, e.g. "FAILED"."""
    return str(pb.EntryStatus.Name(entry.status)).removeprefix("ENTRY_STATUS_")


TERMINAL_STATUSES = frozenset(
    {
        pb.JOB_STATUS_SUCCEEDED,
        pb.JOB_STATUS_PARTIALLY_SUCCEEDED,
        pb.JOB_STATUS_FAILED,
        pb.JOB_STATUS_CANCELLED,
    }
)
