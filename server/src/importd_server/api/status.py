"""The one mapping from importd's errors to gRPC status with AIP-193 details."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar, cast

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from importd_server import errors
from importd_server.store.availability import is_connection_error

log = structlog.get_logger(__name__)

ERROR_DOMAIN = "importd"

_CODES: dict[type[errors.ImportdError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unimplemented: code_pb2.UNIMPLEMENTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.Aborted: code_pb2.ABORTED,
    errors.Internal: code_pb2.INTERNAL,
}


# What a caller should wait before retrying while the database is out of reach: about the
# health monitor's probe interval.
DATABASE_RETRY_DELAY = timedelta(seconds=1)


def to_rpc_status(error: errors.ImportdError) -> status_pb2.Status:
    """A google.rpc.Status for the error: its code, message, ErrorInfo and BadRequest."""
    code = next((c for kind, c in _CODES.items() if isinstance(error, kind)), code_pb2.INTERNAL)
    return build_rpc_status(
        code, error.message, error.reason, error.field_violations, error.metadata
    )


def build_rpc_status(
    code: int,
    message: str,
    reason: str,
    field_violations: tuple[errors.FieldViolation, ...] = (),
    metadata: Mapping[str, str] | None = None,
    retry_delay: timedelta | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with an ErrorInfo detail, for bad fields a BadRequest, and with
    a `retry_delay` a RetryInfo."""
    details: list[Message] = [
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    ]
    if retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(retry_delay)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if field_violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in field_violations
                ]
            )
        )
    return status_pb2.Status(code=code, message=message, details=_packed(details))


# gRPC refuses trailing metadata beyond 8 KiB by default (the caller then sees
# RESOURCE_EXHAUSTED "Stream removed" instead of our status), and a status travels twice:
# its message percent-encoded in grpc-message (up to 3 bytes per byte), the whole Status
# base64-encoded in grpc-status-details-bin. These bounds keep both under 6 KiB.
MAX_MESSAGE_BYTES = 512
MAX_STATUS_BYTES = 3072
MAX_DETAIL_CHARS = 256


def bounded(status: status_pb2.Status) -> status_pb2.Status:
    """The status cut to fit in gRPC's metadata: its message, each string of its
    ErrorInfo and BadRequest, then (while still too big) violations and metadata entries
    from the end. A safety net: callers' values are already cut where they are quoted."""
    details = [_unpacked(detail) for detail in status.details]
    for detail in details:
        _cut_strings(detail)
    message = _cut_utf8(status.message, MAX_MESSAGE_BYTES)
    while True:
        result = status_pb2.Status(code=status.code, message=message, details=_packed(details))
        if result.ByteSize() <= MAX_STATUS_BYTES or not _drop_one(details):
            return result


def _unpacked(detail: any_pb2.Any) -> Message:
    for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
        if detail.Is(kind.DESCRIPTOR):
            message: Message = kind()
            detail.Unpack(message)
            return message
    return detail  # another kind of detail: kept as it is


def _packed(details: list[Message]) -> list[any_pb2.Any]:
    """Each detail as an Any (one that is an Any already as it is)."""
    packed = []
    for detail in details:
        if isinstance(detail, any_pb2.Any):
            packed.append(detail)
        else:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
    return packed


def _cut_strings(detail: Message) -> None:
    if isinstance(detail, error_details_pb2.ErrorInfo):
        detail.reason = _cut(detail.reason)
        metadata = dict(detail.metadata)
        detail.metadata.clear()
        detail.metadata.update({_cut(k): _cut(v) for k, v in metadata.items()})
    elif isinstance(detail, error_details_pb2.BadRequest):
        for violation in detail.field_violations:
            violation.field = _cut(violation.field)
            violation.description = _cut(violation.description)


def _drop_one(details: list[Message]) -> bool:
    """Drops the last field violation, else the last metadata entry; False if none is left."""
    for detail in details:
        if isinstance(detail, error_details_pb2.BadRequest) and detail.field_violations:
            del detail.field_violations[-1]
            return True
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo) and detail.metadata:
            del detail.metadata[max(detail.metadata)]
            return True
    return False


def _cut(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _cut_utf8(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return f"{encoded[: limit - 3].decode(errors='ignore')}..."


def status_of(exc: Exception, rpc: str) -> status_pb2.Status:
    """The status a caller is told for an exception raised while serving `rpc`.

    A database out of reach is UNAVAILABLE (DATABASE_UNAVAILABLE) with a RetryInfo; any
    other exception but an ImportdError is logged and becomes INTERNAL without its text.
    """
    if isinstance(exc, errors.ImportdError):
        return bounded(to_rpc_status(exc))
    if is_connection_error(exc):
        # Expected while the database is away: the health monitor logs the outage once.
        log.debug("rpc failed: database unreachable", rpc=rpc, error=str(exc))
        return build_rpc_status(
            code_pb2.UNAVAILABLE,
            "the database is unreachable; retry shortly",
            "DATABASE_UNAVAILABLE",
            retry_delay=DATABASE_RETRY_DELAY,
        )
    log.error("unexpected error in rpc", rpc=rpc, exc_info=exc)
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the server log")


Handler = TypeVar("Handler", bound=Callable[..., Any])

# The context handed to every handler; request and response types vary by RPC.
Context = grpc.aio.ServicerContext[Any, Any]


def maps_errors(handler: Handler) -> Handler:
    """Ends the RPC with the status `status_of` maps an exception to.

    Works for unary handlers and for server-streaming async generators.
    """

    async def abort(context: Context, exc: Exception) -> None:
        await context.abort_with_status(rpc_status.to_status(status_of(exc, handler.__name__)))

    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for message in handler(self, request, context):
                    yield message
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort(context, exc)

        return cast(Handler, stream)

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: Context) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)

    return cast(Handler, unary)
