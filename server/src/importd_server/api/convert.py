"""Conversions between protobuf messages and domain types, done once, at the edge."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2

from importd.v1 import import_service_pb2 as pb
from importd_server.api.status import to_rpc_status
from importd_server.auth import Principal
from importd_server.engine.parsing import ParseOptions
from importd_server.engine.remote import redact, source_file_name
from importd_server.engine.shapes import ENCODINGS, encoding_name
from importd_server.engine.staging import NewJob
from importd_server.errors import FieldViolation, InvalidArgument, excerpt
from importd_server.http.links import Link
from importd_server.model import (
    Dialect,
    Entry,
    EntryStatus,
    FileFormat,
    ImportMode,
    ImportType,
    Job,
    JobStatus,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEvents,
)

E = TypeVar("E", bound=StrEnum)

# Each domain enum's proto twin and the prefix of its value names (AIP-126 style).
JOB_STATUS = (pb.JobStatus, "JOB_STATUS")
JOB_STAGE = (pb.JobStage, "JOB_STAGE")
IMPORT_MODE = (pb.ImportMode, "IMPORT_MODE")
FILE_FORMAT = (pb.FileFormat, "FILE_FORMAT")
ENTRY_STATUS = (pb.EntryStatus, "ENTRY_STATUS")
WEBHOOK_EVENTS = (pb.WebhookEvents, "WEBHOOK_EVENTS")
WEBHOOK_DELIVERY_STATE = (pb.WebhookDeliveryState, "WEBHOOK_DELIVERY_STATE")
# A file name's extension (after any .gz) -> the format guessed when the spec names none.
EXTENSIONS = {
    "jsonl": FileFormat.JSONL,
    "ndjson": FileFormat.JSONL,
    "xlsx": FileFormat.XLSX,
    "ods": FileFormat.ODS,
}


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    """The UUID in a request field, or INVALID_ARGUMENT naming the field."""
    if not value:
        raise InvalidArgument.for_field(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.for_field(field, f"{excerpt(value)} is not a UUID") from None


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


def mode_from_proto(number: int, import_type: ImportType, field: str) -> ImportMode:
    """The mode a request names (INSERT when unset), if the import type allows it."""
    mode = enum_from_proto(number, IMPORT_MODE, ImportMode, field) if number else ImportMode.INSERT
    if mode not in import_type.modes:
        allowed = ", ".join(m.value for m in import_type.modes)
        raise InvalidArgument.for_field(
            field, f"{import_type.name} allows {allowed}, not {mode.value}"
        )
    return mode


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


def download_link_to_proto(link: Link) -> pb.DownloadLink:
    """A DownloadLink message."""
    return pb.DownloadLink(url=link.url, expire_time=timestamp(link.expire_time))


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
        update_time=timestamp(job.update_time),
        received_bytes=job.received_bytes,
        staged_rows=job.staged_rows,
        not_processed_count=job.not_processed_count,
        error_summary=[
            pb.ErrorCount(code=e.code, field=e.field, count=e.count) for e in job.error_summary
        ],
        retry_of=str(job.retry_of) if job.retry_of else "",
        revert_of=str(job.revert_of or ""),
        reverted_by=str(job.reverted_by or ""),
        revertible=job.revertible,
    )
    if job.dialect is not None:
        message.dialect.CopyFrom(dialect_to_proto(job.dialect))
    if job.error is not None:
        message.error.CopyFrom(to_rpc_status(job.error.as_error()))
    return message


def dialect_to_proto(dialect: Dialect) -> pb.Dialect:
    """The Dialect message: how a job's file was read."""
    return pb.Dialect(
        format=enum_to_proto(dialect.format, FILE_FORMAT),
        encoding=dialect.encoding or "",
        delimiter=dialect.delimiter or "",
        sheet=dialect.sheet or "",
        gzip=dialect.gzip,
        detected=list(dialect.detected),
    )


def entry_to_proto(entry: Entry) -> pb.Entry:
    """The Entry message for a domain entry (raw values rendered as text)."""
    return pb.Entry(
        row_number=entry.row_number,
        line_number=entry.line_number,
        status=enum_to_proto(entry.status, ENTRY_STATUS),
        key=entry.key or "",
        raw=dict(entry.raw),
        errors=[
            pb.RowError(code=e.code, field=e.field, value=e.value, message=e.message)
            for e in entry.errors
        ],
        process_time=timestamp(entry.process_time),
        note=entry.note or "",
        job_id=str(entry.job_id) if entry.job_id else "",
    )


def entry_statuses_from_proto(numbers: Iterable[int], field: str) -> tuple[EntryStatus, ...]:
    """The EntryStatus filter of a request."""
    return tuple(enum_from_proto(n, ENTRY_STATUS, EntryStatus, field) for n in numbers)


def import_type_to_proto(import_type: ImportType) -> pb.ImportType:
    """The ImportType message, with every column's rules."""
    return pb.ImportType(
        name=import_type.name,
        description=import_type.description,
        table=import_type.table,
        key_columns=list(import_type.key),
        modes=[enum_to_proto(m, IMPORT_MODE) for m in import_type.modes],
        columns=[
            pb.ColumnSpec(
                name=c.name,
                type=c.type,
                required=c.required,
                default=c.default,
                aliases=list(c.aliases),
                max_length=c.max_length,
                pattern=c.pattern.pattern if c.pattern else None,
                min=None if c.min is None else str(c.min),
                max=None if c.max is None else str(c.max),
                exclusive_bounds=c.exclusive_bounds,
                values=list(c.values),
            )
            for c in import_type.columns
        ],
    )


def new_job_from_spec(
    spec: pb.ImportSpec,
    import_types: Mapping[str, ImportType],
    caller: Principal,
    max_rows: int,
    max_chars: int,
    fallback_encodings: tuple[str, ...] = (),
) -> NewJob:
    """The checked NewJob a spec asks for; INVALID_ARGUMENT naming every bad field. What
    the spec leaves unset (format, delimiter, encoding) is decided from the file's first
    bytes, an encoding that is not UTF-8 by `fallback_encodings`.

    The spec's strings are within their limits (`limits.check_request`)."""
    violations: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        violations.append(FieldViolation(f"spec.{field}", description))

    import_type = import_types.get(spec.import_type)
    if import_type is None:
        known = ", ".join(sorted(import_types)) or "none"
        bad("import_type", f"unknown import type {excerpt(spec.import_type)} (known: {known})")
    mode = ImportMode.INSERT
    if import_type is not None:
        try:
            mode = mode_from_proto(spec.mode, import_type, "spec.mode")
        except InvalidArgument as error:
            violations.extend(error.field_violations)
    file_format = _file_format(spec)
    quote_char = spec.csv.quote or '"'
    encoding = encoding_name(spec.csv.encoding) if spec.csv.encoding else None
    if quote_char == spec.csv.delimiter:
        bad("csv.quote", "must differ from the delimiter")
    if spec.csv.encoding and encoding is None:
        bad("csv.encoding", f"must be one of {', '.join(ENCODINGS)}")
    if spec.HasField("max_errors") and spec.max_errors < 0:
        bad("max_errors", "must not be negative")
    webhook_events = WebhookEvents.TERMINAL
    if spec.webhook_events:
        try:
            webhook_events = enum_from_proto(
                spec.webhook_events, WEBHOOK_EVENTS, WebhookEvents, "spec.webhook_events"
            )
        except InvalidArgument:
            bad("webhook_events", f"{spec.webhook_events} is not a valid value")
        if not spec.webhook_url:
            bad("webhook_events", "needs a webhook_url")
    column_map = _column_map(spec, import_type, bad) if import_type is not None else {}
    if violations:
        raise InvalidArgument.for_fields(violations)
    assert import_type is not None
    header = spec.csv.header if spec.csv.HasField("header") else True
    identity = pb.ImportSpec()
    identity.CopyFrom(spec)
    identity.ClearField("request_id")
    return NewJob(
        tenant=caller.tenant,
        live=caller.live,
        import_type=import_type.with_header_map(column_map),
        mode=mode,
        parse=ParseOptions(
            format=file_format,
            delimiter=spec.csv.delimiter or ",",
            quote=quote_char,
            header=header,
            encoding=encoding or "utf-8",
            max_rows=max_rows,
            max_chars=max_chars,
            sheet=spec.sheet or None,
            detect_format=not spec.format,
            sniff_delimiter=not spec.csv.delimiter,
            detect_encoding=encoding is None,
            fallback_encodings=fallback_encodings,
        ),
        file_name=spec.file_name or source_file_name(spec.source_uri),
        dry_run=spec.dry_run,
        all_or_nothing=spec.all_or_nothing,
        max_errors=spec.max_errors if spec.HasField("max_errors") else None,
        revertible=spec.revertible if spec.HasField("revertible") else True,
        labels=dict(spec.labels),
        request_id=spec.request_id or None,
        spec_digest=hashlib.sha256(identity.SerializeToString(deterministic=True)).hexdigest(),
        options={
            # None: left to importd (the job's dialect says what it decided).
            "delimiter": spec.csv.delimiter or None,
            "quote": quote_char,
            "header": header,
            "encoding": encoding,
            **({"sheet": spec.sheet} if spec.sheet else {}),
            # Read again by the workers (processing.py), which map the stored header.
            **({"column_map": column_map} if column_map else {}),
            **({"source_uri": redact(spec.source_uri)} if spec.source_uri else {}),
            # Read by the outbox trigger (migration 0007), whichever code changes the job.
            **(
                {"webhook": {"url": spec.webhook_url, "events": webhook_events.value}}
                if spec.webhook_url
                else {}
            ),
        },
    )


def _file_format(spec: pb.ImportSpec) -> FileFormat:
    """The spec's format, else the file name's guess (the file's bytes may overrule it)."""
    if spec.format:
        return enum_from_proto(spec.format, FILE_FORMAT, FileFormat, "spec.format")
    name = (spec.file_name or source_file_name(spec.source_uri)).lower().removesuffix(".gz")
    extension = name.rpartition(".")[2]
    return EXTENSIONS.get(extension, FileFormat.CSV)


def _column_map(
    spec: pb.ImportSpec, import_type: ImportType, bad: Callable[[str, str], None]
) -> dict[str, str]:
    """The spec's column map as header (stripped, lower-cased) -> column name; each bad
    entry reported through `bad`."""
    mapped: dict[str, str] = {}
    mapped_from: dict[str, str] = {}  # the spec's own spelling, for messages
    by_column: dict[str, str] = {}
    for header in sorted(spec.column_map):
        target = spec.column_map[header]
        name = header.strip().lower()
        column = import_type.resolve_header(target)
        if not name:
            bad("column_map", f"key {excerpt(header)} is blank")
        elif name in mapped:
            bad(
                "column_map",
                f"keys {excerpt(mapped_from[name])} and {excerpt(header)} name one header"
                " (header names match without regard to case and surrounding spaces)",
            )
        elif column is None:
            columns = ", ".join(c.name for c in import_type.columns)
            bad(
                "column_map",
                f"key {excerpt(header)} is mapped to {excerpt(target)}, which is no column of"
                f" {import_type.name} (columns: {columns})",
            )
        elif column.name in by_column:
            bad(
                "column_map",
                f"keys {excerpt(by_column[column.name])} and {excerpt(header)} both map to"
                f" column {column.name}",
            )
        else:
            mapped[name], mapped_from[name], by_column[column.name] = column.name, header, header
    return mapped


def progress_event(job: Job) -> pb.ProgressEvent:
    """A ProgressEvent for the job as it is now; `terminal` once it has ended."""
    event = pb.ProgressEvent(job=job_to_proto(job), terminal=job.status.is_terminal)
    seconds = job.estimated_seconds_left
    if seconds is not None:
        event.estimated_time_remaining.FromTimedelta(timedelta(seconds=seconds))
    return event


def webhook_delivery_to_proto(delivery: WebhookDelivery) -> pb.WebhookDelivery:
    """The WebhookDelivery message, its URL without the query (which may hold a secret)."""
    message = pb.WebhookDelivery(
        id=str(delivery.id),
        job_id=str(delivery.job_id),
        url=redact(delivery.url),
        job_status=enum_to_proto(delivery.job_status, JOB_STATUS),
        state=enum_to_proto(delivery.state, WEBHOOK_DELIVERY_STATE),
        create_time=timestamp(delivery.create_time),
        end_time=timestamp(delivery.end_time),
    )
    if delivery.state is WebhookDeliveryState.PENDING:
        message.next_attempt_time.FromDatetime(delivery.next_attempt_time)
    for attempt in delivery.attempts:
        shown = message.attempts.add(
            number=attempt.number,
            http_status=attempt.http_status or 0,
            error=attempt.error or "",
        )
        shown.start_time.FromDatetime(attempt.start_time)
        shown.latency.FromTimedelta(timedelta(seconds=attempt.latency_seconds))
    return message
