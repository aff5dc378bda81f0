"""The one mapping from importd's errors to gRPC status with AIP-193 details."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar, cast

import grpc
import structlog
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from importd_server import errors

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
}


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
) -> status_pb2.Status:
    """A google.rpc.Status with an ErrorInfo detail and, for bad fields, a BadRequest."""
    details: list[Message] = [
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    ]
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
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=code, message=message, details=packed)


Handler = TypeVar("Handler", bound=Callable[..., Any])

# The context handed to every handler; request and response types vary by RPC.
Context = grpc.aio.ServicerContext[Any, Any]


def maps_errors(handler: Handler) -> Handler:
    """Ends the RPC with the mapped status when the handler raises an ImportdError.

    Any other exception is logged and becomes INTERNAL without leaking its text.
    Works for unary handlers and for server-streaming async generators.
    """

    async def abort(context: Context, exc: Exception) -> None:
        if isinstance(exc, errors.ImportdError):
            await context.abort_with_status(rpc_status.to_status(to_rpc_status(exc)))
        log.exception("unexpected error in rpc", rpc=handler.__name__)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

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
