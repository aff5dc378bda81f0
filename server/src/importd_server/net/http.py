"""HTTP requests behind the SSRF guard, for remote sources and webhooks alike: the check of a
caller's URL before any connection, and the aiohttp session whose every connection the guard
checks."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from importd_server.errors import InvalidArgument, PermissionDenied
from importd_server.net.guard import (
    ALLOW_SETTING,
    AddressGuard,
    GuardedResolver,
    ip_literal,
    is_host_name,
)

HTTP_SCHEMES = ("https", "http")
_ENCODED = re.compile(r"[!-~]*")


def parse_url(raw: str) -> URL:
    """The URL to request. One already encoded (printable ASCII, no spaces) is sent byte for
    byte as given: a signed URL's signature may cover its exact spelling."""
    return URL(raw, encoded=_ENCODED.fullmatch(raw) is not None)


def check_http_url(raw: str, guard: AddressGuard, field: str) -> URL:
    """The URL, if importd may request it: https:// (plain http:// only to allow-listed
    hosts), no credentials, a valid host, and an IP literal the guard allows (aiohttp connects
    to a literal without resolving it, so the resolver's check never sees one).
    InvalidArgument (naming `field`) or PermissionDenied otherwise."""
    try:
        url = parse_url(raw)
        host = url.raw_host
        authority = urlsplit(raw).netloc
    except (ValueError, TypeError):
        raise InvalidArgument.for_field(field, "is not a valid URL") from None
    if url.scheme not in HTTP_SCHEMES:
        raise InvalidArgument.for_field(field, f"scheme {url.scheme!r} is not https")
    if "@" in authority:
        raise InvalidArgument.for_field(
            field,
            "credentials in the URL (user:password@) are not accepted; use a signed URL",
            reason="CREDENTIALS_IN_URL",
        )
    if not host:
        raise InvalidArgument.for_field(field, "names no host")
    try:
        address = ip_literal(host)
    except ValueError as error:
        raise InvalidArgument.for_field(field, str(error), reason="ODD_IP_ADDRESS") from None
    if address is not None:
        guard.check(address, host)
    elif not is_host_name(host):
        raise InvalidArgument.for_field(field, f"{host!r} is not a valid host name")
    if url.scheme == "http" and not guard.allows_host(host):
        raise PermissionDenied(
            f"plain http:// is only for hosts in {ALLOW_SETTING}; use https://",
            reason="PLAIN_HTTP_REFUSED",
            metadata={"host": host},
        )
    return url.with_fragment(None)


def guarded_session(
    guard: AddressGuard,
    timeout: aiohttp.ClientTimeout,
    resolver: AbstractResolver | None = None,
    **options: Any,
) -> aiohttp.ClientSession:
    """An aiohttp session whose connections go only to addresses the guard allows (names
    resolved by `resolver`, else the system's), with no proxy from the environment and no
    cookies; `options` go to the session as they are."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(guard, resolver),
        use_dns_cache=False,  # every connection resolves, and is checked, afresh
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=False,  # no proxy from the environment between the guard and the host
        cookie_jar=aiohttp.DummyCookieJar(),
        **options,
    )
