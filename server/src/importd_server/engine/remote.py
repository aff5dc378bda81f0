"""Files the server fetches itself for `source_uri`: https:// (plain http:// to allow-listed
hosts only) and s3://, streamed in pieces behind the SSRF guard (`net.guard`).

Problems found before any byte arrives (a malformed URI, a refused address, a disabled
scheme) are request errors; problems of the fetch itself (404, timeouts, a lost connection
that cannot be resumed, a file too large) are `FileError`s, which fail the job with the reason.
A URI is shown, logged and stored only `redact`ed: a signed URL's query is its signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import aiohttp
import obstore
import structlog
from aiohttp.abc import AbstractResolver
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store
from yarl import URL

from importd_server.config import Settings
from importd_server.engine.parsing import FileError
from importd_server.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from importd_server.net.guard import ALLOW_SETTING, AddressGuard, GuardedResolver, ip_literal
from importd_server.net.http import HTTP_SCHEMES, check_http_url, guarded_session, parse_url

if TYPE_CHECKING:
    from obstore.store import S3Config

log = structlog.get_logger(__name__)

FIELD = "spec.source_uri"
REMOTE_SCHEMES = (*HTTP_SCHEMES, "s3")
PIECE_BYTES = 256 * 1024
MAX_REDIRECTS = 5
# Connection failures (refused, dropped mid-file, a read that stalls) retried per download,
# resuming with a Range request where bytes already arrived.
MAX_RETRIES = 3
RETRY_BACKOFF_SECONDS = 0.25
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HEADERS = {"User-Agent": "importd", "Accept-Encoding": "identity"}
S3_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def redact(uri: str) -> str:
    """The URI without credentials, query and fragment: what importd logs, stores and shows."""
    base = uri.split("#", 1)[0].split("?", 1)[0]
    scheme, separator, rest = base.partition("://")
    if not separator:
        return base
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def source_file_name(uri: str) -> str:
    """The name a job shows for a source URI: its last path segment, without the query."""
    return unquote(redact(uri).rstrip("/").rpartition("/")[2])


def uri_scheme(uri: str) -> str:
    """The URI's scheme, lower-cased ("" when it has none)."""
    found = _SCHEME.match(uri)
    return found.group(1).lower() if found else ""


@dataclass(frozen=True)
class RemoteLimits:
    """How large and how slow a remote file may be."""

    max_file_bytes: int
    connect_seconds: float
    read_seconds: float
    total_seconds: float


@dataclass
class _Download:
    """Where an HTTP download stands: what it asks for when it (re)connects."""

    url: URL
    received: int = 0
    validator: str | None = None

    def request_headers(self) -> dict[str, str]:
        if not self.received:
            return HEADERS
        headers = {**HEADERS, "Range": f"bytes={self.received}-"}
        if self.validator is not None:
            headers["If-Range"] = self.validator  # the rest of THIS file, or an error
        return headers


class RemoteSources:
    """Opens https://, http:// (allow-listed hosts) and s3:// source URIs as streams of pieces."""

    def __init__(
        self,
        guard: AddressGuard,
        limits: RemoteLimits,
        s3_buckets: frozenset[str] = frozenset(),
        s3_endpoint: str | None = None,
        resolver: Callable[[], AbstractResolver] | None = None,
    ) -> None:
        self._guard = guard
        self._limits = limits
        self._s3_buckets = s3_buckets
        self._s3_endpoint = URL(s3_endpoint) if s3_endpoint else None
        self._s3_stores: dict[str, S3Store] = {}
        # Makes the resolver each download's guarded one wraps (tests hand in their own).
        self._resolver = resolver

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] = os.environ
    ) -> RemoteSources:
        """Remote sources as configured; the S3 endpoint comes from the AWS_* variables."""
        endpoint = next((environ[v] for v in S3_ENDPOINT_VARIABLES if environ.get(v)), None)
        return cls(
            AddressGuard.from_allow_list(settings.remote_allow_hosts),
            RemoteLimits(
                max_file_bytes=settings.max_file_bytes,
                connect_seconds=settings.remote_connect_seconds,
                read_seconds=settings.remote_read_seconds,
                total_seconds=settings.remote_total_seconds,
            ),
            frozenset((settings.s3_buckets or "").replace(",", " ").split()),
            endpoint,
        )

    def schemes(self) -> list[str]:
        """The remote schemes this server accepts, as configured."""
        schemes = ["https"]
        if self._guard.allowed_hosts or self._guard.allowed_networks:
            schemes.append("http")
        if self._s3_buckets:
            schemes.append("s3")
        return schemes

    def open(self, uri: str, tenant: str) -> AsyncIterator[bytes]:
        """The file's bytes in pieces, fetched as they are read. The URI is checked now:
        InvalidArgument, PermissionDenied or FailedPrecondition before any connection."""
        if uri_scheme(uri) == "s3":
            bucket, key = self._check_s3_uri(uri, tenant)
            return self._s3_pieces(bucket, key)
        return self._http_pieces(check_http_url(uri, self._guard, FIELD))

    async def _http_pieces(self, url: URL) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.total_seconds
        shown = redact(str(url))
        download = _Download(url)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._limits.connect_seconds, sock_read=self._limits.read_seconds
        )
        failures = 0
        async with guarded_session(
            self._guard,
            timeout,
            self._resolver() if self._resolver else None,
            auto_decompress=False,  # the file's own bytes: Range offsets count those
        ) as session:
            while True:
                try:
                    pieces = self._response_pieces(session, download, deadline)
                    async with contextlib.aclosing(pieces):
                        async for piece in pieces:
                            yield piece
                    return
                except aiohttp.ClientError as error:
                    if isinstance(error, aiohttp.ClientResponseError | aiohttp.InvalidURL):
                        raise FileError(
                            "SOURCE_BAD_RESPONSE", f"{shown} sent a malformed HTTP response"
                        ) from None
                    failures += 1
                    if failures > MAX_RETRIES:
                        raise FileError(
                            "SOURCE_CONNECTION_FAILED",
                            f"{shown}: {_describe(error)}, {failures} times"
                            f" ({download.received} bytes received)",
                        ) from None
                    if download.received and download.validator is None:
                        raise FileError(
                            "SOURCE_CONNECTION_FAILED",
                            f"{shown}: {_describe(error)} after {download.received} bytes, and"
                            " the server gave no ETag or Last-Modified to resume it safely",
                        ) from None
                    log.info(
                        "remote source connection failed; retrying",
                        source=shown,
                        error=_describe(error),
                        received=download.received,
                        attempt=failures,
                    )
                    pause = RETRY_BACKOFF_SECONDS * 2 ** (failures - 1)
                    await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                except TimeoutError:
                    raise FileError(
                        "SOURCE_TIMEOUT",
                        f"{shown} took longer than {self._limits.total_seconds:g} s"
                        f" ({download.received} bytes received)",
                    ) from None

    async def _response_pieces(
        self, session: aiohttp.ClientSession, download: _Download, deadline: float
    ) -> AsyncGenerator[bytes, None]:
        response = await self._response(session, download, deadline)
        async with response:
            while True:
                # The deadline is per read, never across a yield: a timeout must not fire
                # in the consumer's code.
                async with asyncio.timeout_at(deadline):
                    piece = await response.content.readany()
                if not piece:
                    return
                download.received += len(piece)
                yield piece

    async def _response(
        self, session: aiohttp.ClientSession, download: _Download, deadline: float
    ) -> aiohttp.ClientResponse:
        """The response holding (the rest of) the file, redirects followed and re-checked."""
        url = download.url
        for _ in range(MAX_REDIRECTS + 1):
            async with asyncio.timeout_at(deadline):
                response = await session.get(
                    url, headers=download.request_headers(), allow_redirects=False
                )
            if response.status not in REDIRECT_STATUSES:
                download.url = url  # a resumed download goes straight to where the file is
                self._accept(response, download)
                return response
            location = response.headers.get("Location", "")
            response.release()
            url = self._redirect_target(url, location)
        raise FileError(
            "SOURCE_TOO_MANY_REDIRECTS",
            f"{redact(str(download.url))} redirected more than {MAX_REDIRECTS} times",
        )

    def _redirect_target(self, url: URL, location: str) -> URL:
        """Where a redirect leads, checked like the caller's own URL: a refused address or
        plain http stays PermissionDenied; anything malformed fails the job."""
        shown = redact(str(url))
        if not location:
            raise FileError("SOURCE_BAD_REDIRECT", f"{shown} redirected without a Location")
        try:
            return check_http_url(str(url.join(parse_url(location))), self._guard, FIELD)
        except (ValueError, TypeError):
            reason = "an invalid Location"
        except InvalidArgument as error:
            reason = f"{redact(location)} ({error.field_violations[0].description})"
        raise FileError("SOURCE_BAD_REDIRECT", f"{shown} redirected to {reason}")

    def _accept(self, response: aiohttp.ClientResponse, download: _Download) -> None:
        """Checks the status and size of a response before its body is read."""
        shown = redact(str(response.url))
        resuming = download.received > 0
        if response.status != (206 if resuming else 200):
            response.release()
            if resuming and response.status == 200:
                raise FileError(
                    "SOURCE_CHANGED",
                    f"{shown} sent the whole file again instead of the rest: it changed"
                    " during the download, or cannot send ranges",
                )
            raise FileError(
                _status_reason(response.status), f"{shown} answered {_status(response)}"
            )
        if resuming:
            first = response.headers.get("Content-Range", "").removeprefix("bytes ")
            if not first.startswith(f"{download.received}-"):
                response.release()
                raise FileError("SOURCE_CHANGED", f"{shown} sent another range than asked")
            return
        length = response.content_length
        if length is not None and length > self._limits.max_file_bytes:
            response.release()
            raise FileError(
                "FILE_TOO_LARGE",
                f"the file is larger than {self._limits.max_file_bytes} bytes"
                f" ({shown} announces {length})",
            )
        etag = response.headers.get("ETag")
        strong_etag = etag if etag and not etag.startswith("W/") else None
        download.validator = strong_etag or response.headers.get("Last-Modified")

    def _check_s3_uri(self, uri: str, tenant: str) -> tuple[str, str]:
        if not self._s3_buckets:
            raise FailedPrecondition(
                "s3:// sources are disabled on this server (IMPORTD_S3_BUCKETS is not set)",
                reason="SOURCE_URI_DISABLED",
            )
        try:
            parts = urlsplit(uri)
        except ValueError:
            raise InvalidArgument.for_field(FIELD, "is not a valid URI") from None
        bucket = parts.netloc
        if not _BUCKET.fullmatch(bucket):
            raise InvalidArgument.for_field(FIELD, "an s3:// URI must name a valid bucket")
        if parts.query or parts.fragment:
            raise InvalidArgument.for_field(FIELD, "an s3:// URI takes no query or fragment")
        key = unquote(parts.path.removeprefix("/"))
        segments = key.split("/")
        if _CONTROL.search(key) or any(s in ("", ".", "..") for s in segments):
            raise InvalidArgument.for_field(FIELD, "the object key is not a plain path")
        if bucket not in self._s3_buckets:
            raise PermissionDenied(
                f"bucket {bucket} is not one importd reads from (IMPORTD_S3_BUCKETS)",
                reason="BUCKET_NOT_ALLOWED",
                metadata={"bucket": bucket},
            )
        if len(segments) < 2 or segments[0] != tenant:
            raise InvalidArgument.for_field(
                FIELD, f"the key must begin with {tenant}/: each tenant reads its own prefix"
            )
        return bucket, key

    async def _s3_pieces(self, bucket: str, key: str) -> AsyncIterator[bytes]:
        shown = f"s3://{bucket}/{key}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.total_seconds
        store = await self._s3_store(bucket)
        try:
            async with asyncio.timeout_at(deadline):
                result = await obstore.get_async(store, key)
            size = result.meta["size"]
            if size > self._limits.max_file_bytes:
                raise FileError(
                    "FILE_TOO_LARGE",
                    f"the file is larger than {self._limits.max_file_bytes} bytes"
                    f" ({shown} has {size})",
                )
            stream = result.stream(min_chunk_size=PIECE_BYTES)
            while True:
                async with asyncio.timeout_at(deadline):
                    piece = await anext(stream, None)
                if piece is None:
                    return
                yield bytes(piece)
        except FileNotFoundError:
            raise FileError("SOURCE_NOT_FOUND", f"{shown} does not exist") from None
        except (PermissionDeniedError, UnauthenticatedError):
            raise FileError(
                "SOURCE_ACCESS_DENIED", f"importd's credentials may not read {shown}"
            ) from None
        except TimeoutError:
            raise FileError(
                "SOURCE_TIMEOUT", f"{shown} took longer than {self._limits.total_seconds:g} s"
            ) from None
        except (BaseError, OSError, ValueError) as error:  # obstore raises some builtins too
            raise FileError(
                "SOURCE_CONNECTION_FAILED", f"reading {shown} failed ({type(error).__name__})"
            ) from None

    async def _s3_store(self, bucket: str) -> S3Store:
        """The bucket's store, once its endpoint passed the guard again (obstore resolves
        names itself, so every address the endpoint has must be allowed)."""
        endpoint = self._s3_endpoint
        if endpoint is not None and endpoint.raw_host:
            await self._check_s3_endpoint(endpoint, endpoint.raw_host)
        if bucket not in self._s3_stores:
            config: S3Config = {"endpoint": str(endpoint)} if endpoint is not None else {}
            self._s3_stores[bucket] = S3Store(
                bucket,
                config=config,
                client_options={
                    "allow_http": endpoint is not None and endpoint.scheme == "http",
                    "connect_timeout": timedelta(seconds=self._limits.connect_seconds),
                    "read_timeout": timedelta(seconds=self._limits.read_seconds),
                    # obstore's own 30 s default would cut every larger download short.
                    "timeout": timedelta(seconds=self._limits.total_seconds),
                },
            )
        return self._s3_stores[bucket]

    async def _check_s3_endpoint(self, endpoint: URL, host: str) -> None:
        address = ip_literal(host)
        if address is not None:
            self._guard.check(address, host)
        else:
            await GuardedResolver(self._guard).check_every_address(host, endpoint.port or 0)
        if endpoint.scheme == "http" and not self._guard.allows_host(host):
            raise PermissionDenied(
                f"the S3 endpoint is plain http://, which is only for hosts in {ALLOW_SETTING}",
                reason="PLAIN_HTTP_REFUSED",
                metadata={"host": host},
            )


def _status(response: aiohttp.ClientResponse) -> str:
    """e.g. "404 Not Found" (the standard phrase, not whatever the server wrote)."""
    try:
        return f"{response.status} {http.HTTPStatus(response.status).phrase}"
    except ValueError:
        return str(response.status)


def _status_reason(status: int) -> str:
    if status in (401, 403):
        return "SOURCE_ACCESS_DENIED"
    if status in (404, 410):
        return "SOURCE_NOT_FOUND"
    return "SOURCE_HTTP_ERROR"


def _describe(error: aiohttp.ClientError) -> str:
    """What went wrong with a connection, in words that never carry the URL's query."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return "no connection within the connect timeout"
    if isinstance(error, aiohttp.ServerTimeoutError):
        return "no data within the read timeout"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "its host name does not resolve"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect ({error.os_error.strerror or type(error.os_error).__name__})"
    if isinstance(error, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return "the connection was lost mid-file"
    return f"the connection failed ({type(error).__name__})"
