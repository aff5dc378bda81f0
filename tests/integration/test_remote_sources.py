"""https:// and http:// sources end to end: a real server on 127.0.0.1 that the test settings
allow explicitly, the SSRF guard without that allowance, and every way a fetch can fail."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.config import Settings
from importd_server.engine.remote import RemoteLimits, RemoteSources
from importd_server.errors import PermissionDenied
from importd_server.net.guard import AddressGuard, GuardedResolver
from tests.conftest import AppFactory
from tests.http_files import FileServer
from tests.rpc import counts, entries_of, rich_error, start_import, wait_for_job

CONTACTS = b"email,first_name\na@x.com,Ann\nb@x.com,Bob\nnot-an-email,Cy\n"
# As signed URLs spell it: escapes that a normalizing client would rewrite.
SECRET = "X-Amz-Credential=AK%2F20261126%2Fus-east-1&X-Amz-Signature=0123abcd%2B%3D&y=%7E"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test server may fetch from 127.0.0.1 (where the test's file server runs) only."""
    return replace(
        settings,
        remote_allow_hosts="127.0.0.1",
        remote_read_seconds=0.5,
        remote_total_seconds=10,
    )


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    server = await FileServer({"contacts.csv": CONTACTS}).start()
    yield server
    await server.stop()


@pytest.fixture
async def guarded_stub(make_app: AppFactory) -> AsyncIterator[pb_grpc.ImportServiceStub]:
    """A stub on a server with the default guard: no allow-list."""
    app = await make_app(remote_allow_hosts=None)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield pb_grpc.ImportServiceStub(channel)


def error_reason(job: pb.Job) -> str:
    """The ErrorInfo reason of a job's error."""
    info = error_details_pb2.ErrorInfo()
    assert job.error.details[0].Unpack(info)
    return info.reason


async def failed_job(stub: pb_grpc.ImportServiceStub, uri: str) -> pb.Job:
    """The job a start from `uri` made, which must have FAILED."""
    job = await wait_for_job(stub, (await start_import(stub, source_uri=uri)).id)
    assert job.status == pb.JOB_STATUS_FAILED, job
    return job


async def test_an_allowed_server_s_file_imports_end_to_end_and_its_signature_is_kept_nowhere(
    stub: pb_grpc.ImportServiceStub, files: FileServer, db: asyncpg.Connection
) -> None:
    job = await start_import(stub, source_uri=files.url(f"/files/contacts.csv?{SECRET}"))
    job = await wait_for_job(stub, job.id)

    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert counts(job) == {"created": 2, "failed": 1}
    assert [e.raw["email"] for e in await entries_of(stub, job.id)] == [
        "a@x.com",
        "b@x.com",
        "not-an-email",
    ]
    assert job.file_name == "contacts.csv"
    assert (job.file_size_bytes, job.sha256) == (
        len(CONTACTS),
        hashlib.sha256(CONTACTS).hexdigest(),
    )
    assert files.paths == [f"/files/contacts.csv?{SECRET}"]  # sent byte for byte
    row = await db.fetchrow("SELECT options, file_name FROM import_jobs")
    assert SECRET not in str(dict(row))
    assert "/files/contacts.csv" in str(row["options"])


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("localhost", "loopback"),  # a name that resolves to a refused address
        ("169.254.169.254", "cloud metadata"),
        ("[fd00:ec2::254]", "cloud metadata"),
        ("10.0.0.1", "private"),
        ("[::ffff:127.0.0.1]", "loopback"),
    ],
)
async def test_without_the_allowance_non_public_addresses_are_refused_before_any_job(
    guarded_stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
    files: FileServer,
    host: str,
    kind: str,
) -> None:
    uri = f"https://{host}:{files.port}/files/contacts.csv?{SECRET}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(guarded_stub, source_uri=uri)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert (error.reason, error.metadata["kind"]) == ("ADDRESS_REFUSED", kind)
    assert f"a {kind} address" in error.message and SECRET not in error.message
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 0
    assert files.requests == []


async def test_metadata_addresses_stay_refused_even_inside_an_allowed_network(
    make_app: AppFactory,
) -> None:
    app = await make_app(remote_allow_hosts="169.254.0.0/16, 0.0.0.0/0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await start_import(
                pb_grpc.ImportServiceStub(channel),
                source_uri="http://169.254.169.254/latest/meta-data/iam/x.csv",
            )
    error = rich_error(caught.value)
    assert (error.code, error.metadata["kind"]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "cloud metadata",
    )


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.2:{port}/files/contacts.csv",  # loopback, outside the allowed /32
        "http://169.254.169.254/latest/meta-data/",
        "https://[::1]:{port}/files/contacts.csv",
    ],
)
async def test_a_redirect_to_a_refused_address_is_refused(
    stub: pb_grpc.ImportServiceStub, files: FileServer, db: asyncpg.Connection, location: str
) -> None:
    target = location.format(port=files.port)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(stub, source_uri=files.url(f"/to?location={target}"))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADDRESS_REFUSED")
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 0


async def test_plain_http_is_only_for_allow_listed_hosts(
    stub: pb_grpc.ImportServiceStub, files: FileServer
) -> None:
    for uri in ("http://example.com/contacts.csv", files.url("/to?location=http://example.com/")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await start_import(stub, source_uri=uri)
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PLAIN_HTTP_REFUSED",
        )


async def test_a_redirect_to_another_scheme_or_nowhere_fails_the_job(
    stub: pb_grpc.ImportServiceStub, files: FileServer
) -> None:
    job = await failed_job(stub, files.url("/to?location=file:///etc/passwd"))
    assert error_reason(job) == "SOURCE_BAD_REDIRECT"
    assert job.error.message == (
        f"{files.url('/to')} redirected to file:///etc/passwd (scheme 'file' is not https)"
    )
    job = await failed_job(stub, files.url("/to"))
    assert job.error.message == f"{files.url('/to')} redirected without a Location"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://user:hunter2@example.com/contacts.csv", "CREDENTIALS_IN_URL"),
        ("https://token@example.com/contacts.csv", "CREDENTIALS_IN_URL"),
        ("https://0x7f.1/contacts.csv", "ODD_IP_ADDRESS"),
        ("https://2130706433/contacts.csv", "ODD_IP_ADDRESS"),
        ("https://127.1/contacts.csv", "ODD_IP_ADDRESS"),
        ("https://017700000001/contacts.csv", "ODD_IP_ADDRESS"),
        ("https:///contacts.csv", "INVALID_ARGUMENT"),
        ("https://exa mple.com/contacts.csv", "INVALID_ARGUMENT"),
        ("https://example.com:99999/contacts.csv", "INVALID_ARGUMENT"),
        ("gopher://example.com/contacts.csv", "INVALID_ARGUMENT"),
    ],
)
async def test_credentials_odd_ip_spellings_and_malformed_urls_are_invalid(
    guarded_stub: pb_grpc.ImportServiceStub, uri: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(guarded_stub, source_uri=uri)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert list(error.field_violations) == ["spec.source_uri"]
    assert "hunter2" not in error.message


@pytest.mark.parametrize(
    ("code", "reason", "words"),
    [
        (404, "SOURCE_NOT_FOUND", "404 Not Found"),
        (410, "SOURCE_NOT_FOUND", "410 Gone"),
        (403, "SOURCE_ACCESS_DENIED", "403 Forbidden"),
        (401, "SOURCE_ACCESS_DENIED", "401 Unauthorized"),
        (500, "SOURCE_HTTP_ERROR", "500 Internal Server Error"),
        (299, "SOURCE_HTTP_ERROR", "299"),
    ],
)
async def test_an_http_error_fails_the_job_naming_the_status_without_the_query(
    stub: pb_grpc.ImportServiceStub, files: FileServer, code: int, reason: str, words: str
) -> None:
    job = await failed_job(stub, files.url(f"/status/{code}?{SECRET}"))
    assert job.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert job.error.message == f"{files.url(f'/status/{code}')} answered {words}"
    assert error_reason(job) == reason
    assert job.file_name == str(code)


async def test_five_redirects_are_followed_and_a_sixth_fails_the_job(
    stub: pb_grpc.ImportServiceStub, files: FileServer
) -> None:
    job = await wait_for_job(
        stub, (await start_import(stub, source_uri=files.url("/hops/4/contacts.csv"))).id
    )
    assert counts(job) == {"created": 2, "failed": 1}

    job = await failed_job(stub, files.url("/hops/5/contacts.csv"))
    assert "redirected more than 5 times" in job.error.message


async def test_a_dropped_connection_resumes_with_a_range_request(
    stub: pb_grpc.ImportServiceStub, files: FileServer
) -> None:
    files.drops, files.drop_after = 2, 10
    job = await wait_for_job(
        stub, (await start_import(stub, source_uri=files.url("/files/contacts.csv"))).id
    )

    assert counts(job) == {"created": 2, "failed": 1}
    assert job.sha256 == hashlib.sha256(CONTACTS).hexdigest()
    ranges = [(r.get("Range"), r.get("If-Range")) for r in files.requests]
    etag = f'"{hashlib.sha256(CONTACTS).hexdigest()[:16]}"'
    assert ranges == [(None, None), ("bytes=10-", etag), ("bytes=20-", etag)]


async def test_a_connection_that_keeps_dropping_fails_the_job_after_three_retries(
    stub: pb_grpc.ImportServiceStub, files: FileServer
) -> None:
    files.drops, files.drop_after = 10, 5
    job = await failed_job(stub, files.url("/files/contacts.csv"))
    assert "the connection was lost mid-file, 4 times (20 bytes received)" in job.error.message
    assert len(files.requests) == 4


async def test_a_download_without_a_validator_is_not_resumed(
    stub: pb_grpc.ImportServiceStub, files: FileServer
) -> None:
    files.drops, files.drop_after, files.etags = 1, 10, False
    job = await failed_job(stub, files.url("/files/contacts.csv"))
    assert job.error.message.endswith(
        "the connection was lost mid-file after 10 bytes, and the server gave no ETag or"
        " Last-Modified to resume it safely"
    )


async def test_a_file_that_changes_mid_download_fails_instead_of_mixing_two_versions(
    stub: pb_grpc.ImportServiceStub, files: FileServer
) -> None:
    files.drops, files.drop_after = 1, 10
    files.on_drop = lambda: files.files.update({"contacts.csv": CONTACTS.replace(b"Ann", b"Eve")})
    job = await failed_job(stub, files.url("/files/contacts.csv"))
    assert "sent the whole file again instead of the rest" in job.error.message


async def test_a_stalled_download_is_retried_then_fails_with_the_read_timeout(
    stub: pb_grpc.ImportServiceStub, files: FileServer
) -> None:
    job = await failed_job(stub, files.url("/stall"))
    assert "no data within the read timeout, 4 times" in job.error.message


async def test_a_download_slower_than_the_total_timeout_fails(
    make_app: AppFactory, files: FileServer
) -> None:
    app = await make_app(remote_total_seconds=0.5)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        job = await failed_job(pb_grpc.ImportServiceStub(channel), files.url("/trickle"))
    assert job.error.message.startswith(f"{files.url('/trickle')} took longer than 0.5 s")


async def test_an_announced_length_over_the_limit_fails_before_the_body(
    make_app: AppFactory, files: FileServer
) -> None:
    app = await make_app(max_file_bytes=1000)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        job = await failed_job(pb_grpc.ImportServiceStub(channel), files.url("/announces/1001"))
    assert job.error.message == (
        f"the file is larger than 1000 bytes ({files.url('/announces/1001')} announces 1001)"
    )


async def test_bytes_over_the_limit_stop_the_download_early(
    make_app: AppFactory, files: FileServer
) -> None:
    size = 64 * 1024 * 1024
    app = await make_app(max_file_bytes=100_000)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        job = await failed_job(
            pb_grpc.ImportServiceStub(channel), files.url(f"/generated/{size}?chunked")
        )
    assert job.error.message == "the file is larger than 100000 bytes"
    assert files.sent < size // 4  # the server was cut off, not read to the end


class _Rebinding(AbstractResolver):
    """A name server whose answer changes after the first lookup (DNS rebinding)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


async def test_a_name_that_rebinds_to_a_refused_address_is_refused_at_the_next_connection(
    files: FileServer,
) -> None:
    # A check made once, before connecting, would let the second connection through.
    guard = AddressGuard.from_allow_list("127.0.0.1")
    resolver = GuardedResolver(guard, _Rebinding("127.0.0.1", "127.0.0.2"))
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://files.test:{files.port}/files/contacts.csv") as response:
            assert await response.read() == CONTACTS
        with pytest.raises(PermissionDenied) as caught:
            await session.get(f"http://files.test:{files.port}/files/contacts.csv")
    assert caught.value.message.startswith(
        "files.test resolves to 127.0.0.2, which is a loopback address"
    )
    assert len(files.requests) == 1


async def test_every_connection_of_a_download_resolves_and_is_checked_afresh(
    files: FileServer,
) -> None:
    files.drops, files.drop_after = 1, 10
    answers = _Rebinding("127.0.0.1")
    sources = RemoteSources(
        AddressGuard.from_allow_list("files.test"),
        RemoteLimits(max_file_bytes=10**6, connect_seconds=1, read_seconds=1, total_seconds=10),
        resolver=lambda: answers,
    )
    pieces = sources.open(f"http://files.test:{files.port}/files/contacts.csv", "default")
    assert b"".join([piece async for piece in pieces]) == CONTACTS
    assert answers.lookups == len(files.requests) == 2


def _reset_peak_rss() -> int:
    """Starts the peak RSS (VmHWM) again from the current RSS, which it returns."""
    Path("/proc/self/clear_refs").write_text("5")
    return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


async def test_a_large_remote_file_streams_in_bounded_pieces(files: FileServer) -> None:
    size = 200 * 1024 * 1024
    sources = RemoteSources(
        AddressGuard.from_allow_list("127.0.0.1"),
        RemoteLimits(max_file_bytes=size, connect_seconds=5, read_seconds=5, total_seconds=120),
    )
    before = _reset_peak_rss()
    total = largest = 0
    async for piece in sources.open(files.url(f"/generated/{size}"), "default"):
        total += len(piece)
        largest = max(largest, len(piece))
    assert total == size
    assert largest <= 1024 * 1024
    # Server and client share this process: both together stay far below the file's size.
    assert _peak_rss_bytes() - before < 64 * 1024 * 1024


URL_HOSTS = st.sampled_from(
    [
        "127.0.0.1",
        "[::1]",
        "localhost",
        "169.254.169.254",
        "10.1.2.3",
        "[fe80::1]",
        "0.0.0.0",
        "[::]",
        "0x7f.1",
        "2130706433",
        "127.1",
        "[::ffff:10.0.0.1]",
        "[fd00:ec2::254]",
        "100.64.0.1",
        "224.0.0.1",
        "",
        "user:pw@127.0.0.1",
        "@localhost",
        "[::1",
        "localhost:0",
        "localhost:99999",
    ]
)
URL_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@given(
    scheme=st.sampled_from(["https", "http", "HTTPS", "s3", "ftp", "file", "", "https:"]),
    host=URL_HOSTS,
    path=URL_TEXT,
    query=URL_TEXT,
)
@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_no_url_shape_gives_internal_or_echoes_its_query(
    guarded_stub: pb_grpc.ImportServiceStub, scheme: str, host: str, path: str, query: str
) -> None:
    uri = f"{scheme}://{host}/{path}?secret={query}Q"
    try:
        job = await start_import(guarded_stub, source_uri=uri)
    except grpc.aio.AioRpcError as error:
        assert error.code() in {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.FAILED_PRECONDITION,
        }, error
        assert f"secret={query}Q" not in (error.details() or "")
    else:  # e.g. file://: a job that failed on its own file
        assert job.status == pb.JOB_STATUS_FAILED and "secret=" not in job.error.message
