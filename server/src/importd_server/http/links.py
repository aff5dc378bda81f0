"""Signed, time-limited links to a job's not-imported rows (or all its rows), usable without
a token.

A link names its job, tenant, expiry and rows in the clear and carries an HMAC-SHA256 over
them, so it opens that one file until it expires and cannot be bent to another job, tenant
or file. Every replica must hold the same key for a link from one to open on another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from importd_server.errors import PermissionDenied

LIFETIME = timedelta(minutes=60)
# A link's path, under the HTTP port; the name is what a browser saves the file as, and
# says which rows: the not-imported ones, or every row (ExportEntries' all_rows).
PATH = "/downloads/jobs/{id}/{rows}.csv"
NOT_IMPORTED_FILE = "not-imported"
ALL_ROWS_FILE = "all-rows"


@dataclass(frozen=True)
class Link:
    """An issued link and the moment it stops working."""

    url: str
    expire_time: datetime


@dataclass(frozen=True)
class Grant:
    """What a valid link lets its holder read: one job's not-imported rows, or all its
    rows."""

    job_id: uuid.UUID
    tenant: str
    all_rows: bool = False


class LinkExpired(PermissionDenied):
    """A genuine link past its expiry: HTTP 410, for the fix is to ask for a fresh one."""


class DownloadLinks:
    """Issues and checks download links signed with one key."""

    def __init__(self, key: bytes, base_url: str) -> None:
        # A key of its own, derived: a link signature can never double as another token's.
        self._key = hmac.new(key, b"importd download links", hashlib.sha256).digest()
        self._base_url = base_url.rstrip("/")

    def issue(
        self,
        job_id: uuid.UUID,
        tenant: str,
        now: datetime | None = None,
        *,
        all_rows: bool = False,
    ) -> Link:
        """A link to the job's not-imported rows (every row, with `all_rows`), valid for
        LIFETIME from `now`."""
        expire_time = (now or datetime.now(UTC)).replace(microsecond=0) + LIFETIME
        expires = int(expire_time.timestamp())
        signature = self._sign(job_id, tenant, expires, all_rows)
        query = urlencode({"tenant": tenant, "expires": expires, "signature": signature})
        path = PATH.format(
            id=quote(str(job_id)), rows=ALL_ROWS_FILE if all_rows else NOT_IMPORTED_FILE
        )
        return Link(f"{self._base_url}{path}?{query}", expire_time)

    def check(
        self,
        job_id: str,
        tenant: str,
        expires: str,
        signature: str,
        now: datetime | None = None,
        *,
        all_rows: bool = False,
    ) -> Grant:
        """The grant of a link's parts; PERMISSION_DENIED if they were not signed together
        by this key, LinkExpired if they were but the time has passed."""
        try:
            parsed_id = uuid.UUID(job_id)
            expiry = int(expires)
        except ValueError:
            raise _refused() from None
        expected = self._sign(parsed_id, tenant, expiry, all_rows)
        # The canonical spelling of the id is signed: another spelling of it must not verify.
        if str(parsed_id) != job_id or not hmac.compare_digest(
            expected.encode(), signature.encode("utf-8", "surrogatepass")
        ):
            raise _refused()
        expire_time = datetime.fromtimestamp(expiry, UTC)
        if (now or datetime.now(UTC)) >= expire_time:
            raise LinkExpired(
                f"this download link expired at {expire_time:%Y-%m-%d %H:%M:%S} UTC; ask for a"
                " new one (the job's page, or CreateDownloadLink)",
                reason="LINK_EXPIRED",
                metadata={"id": job_id},
            )
        return Grant(parsed_id, tenant, all_rows)

    def _sign(self, job_id: uuid.UUID, tenant: str, expires: int, all_rows: bool) -> str:
        # A not-imported link signs what links always signed, so those issued before
        # all-rows links existed still open; an all-rows one signs one more line.
        scope = f"\n{ALL_ROWS_FILE}" if all_rows else ""
        message = f"{job_id}\n{tenant}\n{expires}{scope}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _refused() -> PermissionDenied:
    return PermissionDenied(
        "this download link is not valid: it was altered or not issued by this service",
        reason="BAD_LINK_SIGNATURE",
    )
