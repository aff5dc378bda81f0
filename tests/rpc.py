"""Test helpers for reading gRPC errors and arranging jobs in the database."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class RichError:
    """A failed call's code, message and AIP-193 details."""

    code: grpc.StatusCode
    message: str
    reason: str | None
    metadata: dict[str, str]
    field_violations: dict[str, str]


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    """The code and unpacked google.rpc details of a failed call."""
    status = rpc_status.from_call(error)
    reason, metadata, violations = None, {}, {}
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            violations = {v.field: v.description for v in bad.field_violations}
    return RichError(error.code(), error.details() or "", reason, metadata, violations)


async def insert_job(connection: asyncpg.Connection, **columns: Any) -> uuid.UUID:
    """Inserts an import_jobs row with sensible defaults; returns its id."""
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant": "default",
        "import_type": "contacts",
        "mode": "UPSERT",
        "format": "CSV",
        "status": "QUEUED",
        "file_name": "contacts.csv",
        "create_time": datetime.now(UTC),
        "labels": json.dumps({}),
    }
    row.update(columns)
    if isinstance(row["labels"], dict):
        row["labels"] = json.dumps(row["labels"])
    names = ", ".join(row)
    placeholders = ", ".join(
        f"${i}::jsonb" if name == "labels" else f"${i}" for i, name in enumerate(row, 1)
    )
    await connection.execute(
        f"INSERT INTO import_jobs ({names}) VALUES ({placeholders})", *row.values()
    )
    return uuid.UUID(str(row["id"]))
