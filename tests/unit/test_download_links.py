"""Download links: a link opens its own job's file for its own tenant until it expires, and
any change to any part of it is refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importd_server.errors import PermissionDenied
from importd_server.http.links import LIFETIME, DownloadLinks, Grant, LinkExpired

KEY = b"k" * 32
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
JOB = uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")


def parts(url: str) -> dict[str, str]:
    """The parts `check` takes, read back from an issued URL."""
    split = urlsplit(url)
    query = dict(parse_qsl(split.query))
    return {
        "job_id": split.path.split("/")[3],
        "tenant": query["tenant"],
        "expires": query["expires"],
        "signature": query["signature"],
    }


def test_an_issued_link_names_its_file_and_opens_for_sixty_minutes() -> None:
    links = DownloadLinks(KEY, "https://importd.example/")
    link = links.issue(JOB, "acme", now=NOW)
    assert link.url.startswith(f"https://importd.example/downloads/jobs/{JOB}/not-imported.csv?")
    assert link.expire_time == NOW + LIFETIME
    assert links.check(**parts(link.url), now=NOW + LIFETIME - timedelta(seconds=1)) == Grant(
        JOB, "acme"
    )
    with pytest.raises(LinkExpired) as expired:
        links.check(**parts(link.url), now=NOW + LIFETIME)
    assert expired.value.reason == "LINK_EXPIRED"


@given(
    tenant=st.text(min_size=1, max_size=40),
    part=st.sampled_from(["job_id", "tenant", "expires", "signature"]),
    replacement=st.text(max_size=50),
)
def test_any_change_to_any_part_of_a_link_is_refused(
    tenant: str, part: str, replacement: str
) -> None:
    links = DownloadLinks(KEY, "http://127.0.0.1:8080")
    given_parts = parts(links.issue(JOB, tenant, now=NOW).url)
    if given_parts[part] == replacement:
        return
    with pytest.raises(PermissionDenied) as refused:
        links.check(**{**given_parts, part: replacement}, now=NOW)
    assert refused.value.reason == "BAD_LINK_SIGNATURE"  # not LinkExpired: never a hint


def test_a_link_signed_with_another_key_or_another_spelling_of_the_id_is_refused() -> None:
    link = DownloadLinks(b"another key", "http://x").issue(JOB, "acme", now=NOW)
    links = DownloadLinks(KEY, "http://x")
    with pytest.raises(PermissionDenied):
        links.check(**parts(link.url), now=NOW)
    mine = parts(links.issue(JOB, "acme", now=NOW).url)
    with pytest.raises(PermissionDenied):
        links.check(**{**mine, "job_id": str(JOB).upper()}, now=NOW)


def test_a_link_opens_only_the_rows_it_was_issued_for() -> None:
    links = DownloadLinks(KEY, "http://127.0.0.1:8080")
    every_row = links.issue(JOB, "acme", now=NOW, all_rows=True)
    assert urlsplit(every_row.url).path == f"/downloads/jobs/{JOB}/all-rows.csv"
    assert links.check(**parts(every_row.url), now=NOW, all_rows=True) == Grant(JOB, "acme", True)
    not_imported = links.issue(JOB, "acme", now=NOW)
    # The same job, tenant and expiry: only the signature tells which rows were granted.
    for url, all_rows in ((every_row.url, False), (not_imported.url, True)):
        with pytest.raises(PermissionDenied) as refused:
            links.check(**parts(url), now=NOW, all_rows=all_rows)
        assert refused.value.reason == "BAD_LINK_SIGNATURE"
