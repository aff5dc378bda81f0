"""AIP-158 pagination: page sizes and opaque page tokens bound to the request's filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from importd_server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """The page size to use: the default for 0, at most MAX_PAGE_SIZE (AIP-158 coerces)."""
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def fingerprint(*filters: Any) -> str:
    """A short digest of a request's filters, so a token is only valid for the same filters."""
    canonical = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(position: dict[str, Any], filters_fingerprint: str) -> str:
    """An opaque token for the page that starts after `position`."""
    payload = json.dumps({"p": position, "f": filters_fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, filters_fingerprint: str) -> dict[str, Any]:
    """The position a token carries; INVALID_ARGUMENT if it is malformed or for other filters."""
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, token_fingerprint = payload["p"], payload["f"]
        if not isinstance(position, dict):
            raise TypeError
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument.for_field("page_token", "is not a valid page token") from None
    if token_fingerprint != filters_fingerprint:
        raise InvalidArgument.for_field("page_token", "was issued for a request with other filters")
    return position
