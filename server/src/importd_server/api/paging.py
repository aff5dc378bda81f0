"""AIP-158 pagination: page sizes, and opaque page tokens bound to the request's filters and
signed, so a caller can neither forge a position nor reuse a token with other filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from importd_server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
FIELD = "page_token"


def page_size(requested: int) -> int:
    """The page size to use: the default for 0, at most MAX_PAGE_SIZE (AIP-158 coerces)."""
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def fingerprint(*filters: Any) -> str:
    """A short digest of a request's filters, so a token is only valid for the same filters."""
    canonical = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def invalid_token() -> InvalidArgument:
    """The one answer to a token that is not a page token this service issued."""
    return InvalidArgument.for_field(FIELD, "is not a valid page token")


class PageTokens:
    """Issues and checks page tokens: `<payload>.<HMAC-SHA256 of the payload>`, base64url.

    Every replica must hold the same key, so that a page started on one continues on another.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, position: dict[str, Any], filters_fingerprint: str) -> str:
        """An opaque token for the page that starts after `position`."""
        payload = json.dumps({"p": position, "f": filters_fingerprint}, separators=(",", ":"))
        text = _b64(payload.encode())
        return f"{text}.{self._sign(text)}"

    def decode(self, token: str, filters_fingerprint: str) -> dict[str, Any]:
        """The position a token carries; INVALID_ARGUMENT unless this service issued it, for
        these filters. Callers still check the position's fields: a key can leak."""
        text = token.partition(".")[0]
        # The whole token is compared, not decoded bytes: base64 has many spellings of the
        # same bytes, and only the one issued may verify.
        if not token.isascii() or not hmac.compare_digest(
            f"{text}.{self._sign(text)}".encode(), token.encode()
        ):
            raise invalid_token()
        try:
            payload = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            position, token_fingerprint = payload["p"], payload["f"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise invalid_token() from None
        if not isinstance(position, dict):
            raise invalid_token()
        if token_fingerprint != filters_fingerprint:
            raise InvalidArgument.for_field(FIELD, "was issued for a request with other filters")
        return position

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
