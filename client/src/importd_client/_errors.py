"""The client's exceptions: one per gRPC status code a caller may want to catch, each
carrying the server's AIP-193 details (ErrorInfo reason and metadata, BadRequest fields)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class ImportdError(Exception):
    """Any failed call to importd.

    Attributes: `code` (the gRPC status code), `message` (the server's message),
    `reason` (a stable UPPER_SNAKE_CASE word, or None), `metadata` (ErrorInfo metadata),
    `field_violations` (request field -> what is wrong with it), `retry_delay` (seconds the
    server asks to wait before retrying, from RetryInfo, or None).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        field_violations: dict[str, str] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.field_violations = field_violations or {}
        self.retry_delay = retry_delay
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.field_violations and len(self.field_violations) > 1:
            text += "".join(f"\n  {f}: {d}" for f, d in self.field_violations.items())
        return text


class InvalidArgument(ImportdError):
    """The request was malformed; `field_violations` says which fields and why."""


class NotFound(ImportdError):
    """The job (or other resource) does not exist, or is not the caller's."""


class AlreadyExists(ImportdError):
    """E.g. a request_id reused with a different import."""


class FailedPrecondition(ImportdError):
    """The request is valid but the resource is in the wrong state (e.g. cancelling a
    finished job)."""


class PermissionDenied(ImportdError):
    """The token lacks a scope or may not touch this resource."""


class Unauthenticated(ImportdError):
    """No token, or a bad one."""


class ResourceExhausted(ImportdError):
    """A limit was reached."""


class Unavailable(ImportdError):
    """The server could not be reached, or is shutting down; safe calls were retried."""


class DeadlineExceeded(ImportdError):
    """The call took longer than its deadline."""


class InternalError(ImportdError):
    """The server failed; its log says why."""


_BY_CODE: dict[grpc.StatusCode, type[ImportdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: InternalError,
}


def error_from_rpc(error: grpc.aio.AioRpcError) -> ImportdError:
    """The client exception for a failed call, with the status details unpacked."""
    code = error.code()
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: dict[str, str] = {}
    retry_delay: float | None = None
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad_request):
            violations = {v.field: v.description for v in bad_request.field_violations}
        elif detail.Unpack(retry_info):
            retry_delay = retry_info.retry_delay.ToTimedelta().total_seconds()
    kind = _BY_CODE.get(code, ImportdError)
    return kind(
        code,
        error.details() or code.name,
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        retry_delay=retry_delay,
    )
