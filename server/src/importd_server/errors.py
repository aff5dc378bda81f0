"""The one error hierarchy of importd's domain; `api.status` maps it to gRPC status codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EXCERPT_CHARS = 40


def excerpt(value: str, limit: int = EXCERPT_CHARS) -> str:
    """A caller's value as an error message may show it: quoted with control characters
    escaped (repr), and cut after `limit` characters, so no input is ever echoed unbounded."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: which field, and what is wrong with it."""

    field: str
    description: str


class ImportdError(Exception):
    """Base of every error a caller can be told about.

    `reason` is a stable UPPER_SNAKE_CASE word for machines (AIP-193 ErrorInfo.reason);
    the message is for people.
    """

    default_reason = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field_violations = field_violations
        self.metadata = dict(metadata or {})


class InvalidArgument(ImportdError):
    """The request is malformed: a bad id, page token, spec field or file."""

    default_reason = "INVALID_ARGUMENT"

    @classmethod
    def for_field(
        cls, field: str, description: str, *, reason: str | None = None
    ) -> InvalidArgument:
        """An error about one request field."""
        return cls(
            f"{field}: {description}",
            reason=reason,
            field_violations=(FieldViolation(field, description),),
        )

    @classmethod
    def for_fields(cls, violations: Sequence[FieldViolation]) -> InvalidArgument:
        """An error about several request fields, each named in the message too."""
        return cls(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            field_violations=tuple(violations),
        )


class NotFound(ImportdError):
    """The named resource does not exist (or belongs to someone else)."""

    default_reason = "NOT_FOUND"


class AlreadyExists(ImportdError):
    """A resource with that identity exists, e.g. a request_id reused with another spec."""

    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ImportdError):
    """The request is valid but the resource is in the wrong state for it."""

    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(ImportdError):
    """A configured limit was reached."""

    default_reason = "RESOURCE_EXHAUSTED"


class Unimplemented(ImportdError):
    """The operation exists in the API but not yet in this server."""

    default_reason = "UNIMPLEMENTED"


class Unavailable(ImportdError):
    """The server cannot serve this now (e.g. it is shutting down); retry elsewhere."""

    default_reason = "UNAVAILABLE"


class Unauthenticated(ImportdError):
    """No credentials, or credentials that do not prove who the caller is."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ImportdError):
    """The caller is known but may not do this (a missing scope, a test token on live data)."""

    default_reason = "PERMISSION_DENIED"


class Aborted(ImportdError):
    """The operation was cut short (an upload that ended before its file did)."""

    default_reason = "ABORTED"


class Internal(ImportdError):
    """Something failed on importd's side (a chunk that keeps failing); the log says what."""

    default_reason = "INTERNAL"


def kind_of(error: ImportdError) -> type[ImportdError]:
    """The kind of an error: the class right under ImportdError it belongs to (what
    api/status.py maps to a status code)."""
    return next(k for k in type(error).__mro__ if ImportdError in k.__bases__)


def kind_named(name: str) -> type[ImportdError]:
    """The kind whose class name this is (how a job's error is stored)."""
    kinds = {kind.__name__: kind for kind in ImportdError.__subclasses__()}
    return kinds.get(name, Internal)
