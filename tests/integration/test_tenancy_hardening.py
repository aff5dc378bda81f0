"""Who may do what, against a hostile caller: tenant claims outside the grammar, a static
table with wrong types, concurrent starts at the active-jobs limit, forged page tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from importd_server.auth import StaticTokensError
from tests.conftest import AppFactory
from tests.rpc import import_and_wait, rich_error

SECRET = "hs256-secret-for-the-tenancy-hardening-tests"
FILE = b"email\na@x.com\n"


def bearer(tenant: Any) -> tuple[tuple[str, str], ...]:
    claims = {
        "aud": "importd",
        "exp": int(time.time()) + 600,
        "tenant": tenant,
        "scope": "imports:read imports:write",
        "live": True,
    }
    return (("authorization", f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"),)


def stub_of(app: Application) -> pb_grpc.ImportServiceStub:
    return pb_grpc.ImportServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{app.port}"))


async def start(
    stub: pb_grpc.ImportServiceStub,
    metadata: tuple[tuple[str, str], ...] = (),
    after_first_byte: asyncio.Event | None = None,
    **spec: Any,
) -> pb.Job:
    """Starts a contacts import of FILE (or of spec's source_uri); waits for
    `after_first_byte` after the file's first byte, holding the upload open."""

    async def requests() -> AsyncIterator[pb.StartImportRequest]:
        yield pb.StartImportRequest(spec=pb.ImportSpec(import_type="contacts", **spec))
        if "source_uri" not in spec:
            yield pb.StartImportRequest(chunk=FILE[:1])
            if after_first_byte is not None:
                await after_first_byte.wait()
            yield pb.StartImportRequest(chunk=FILE[1:])

    job: pb.Job = await stub.StartImport(requests(), metadata=metadata)
    return job


HOSTILE_TENANTS = {
    "dot-dot": "..",
    "dot-dot-slash": "../",
    "slash": "/",
    "empty": "",
    "number": 7,
    "list": ["acme"],
    "object": {"name": "acme"},
    "boolean": True,
    "null": None,
    "3600-characters": "a" * 3600,
    "upper-case": "Acme",
    "trailing-newline": "acme\n",
    "path": "acme/../globex",
}


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS.values(), ids=HOSTILE_TENANTS.keys())
async def test_a_tenant_claim_outside_the_grammar_is_unauthenticated_with_its_reason(
    make_app: AppFactory, tenant: Any
) -> None:
    stub = stub_of(await make_app(auth_hs256_secrets=SECRET))
    calls = {
        "StartImport": start(stub, bearer(tenant)),
        "ListJobs": stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(tenant)),
        "ListImportTypes": stub.ListImportTypes(
            pb.ListImportTypesRequest(), metadata=bearer(tenant)
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        error = rich_error(refused.value)
        assert (name, error.code, error.reason) == (
            name,
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_TENANT_CLAIM",
        )
        assert len(refused.value.details() or "") < 200


@pytest.mark.parametrize(
    ("tenant", "target"),
    [("..", "sources/globex/secret.csv"), ("/", "secret.csv"), ("../..", "secret.csv")],
    ids=["other-tenant", "root", "above-the-sources"],
)
async def test_a_tenant_claim_cannot_lead_source_uri_out_of_its_folder(
    make_app: AppFactory, tmp_path: Path, db: asyncpg.Connection, tenant: str, target: str
) -> None:
    for secret in (tmp_path / "sources" / "globex" / "secret.csv", tmp_path / "secret.csv"):
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_bytes(b"email\nsecret@globex.com\n")
    stub = stub_of(await make_app(auth_hs256_secrets=SECRET))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await start(stub, bearer(tenant), source_uri=(tmp_path / target).as_uri())
    assert rich_error(refused.value).reason == "INVALID_TENANT_CLAIM"
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 0


async def test_the_number_7_and_the_string_7_are_not_one_tenant(make_app: AppFactory) -> None:
    stub = stub_of(await make_app(auth_hs256_secrets=SECRET))
    job = await start(stub, bearer("7"))
    listed = await stub.ListJobs(pb.ListJobsRequest(), metadata=bearer("7"))
    assert [j.id for j in listed.jobs] == [job.id]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(7))
    assert rich_error(refused.value).reason == "INVALID_TENANT_CLAIM"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('live = "false"', "field live: must be true or false, not the string 'false'"),
        ('scopes = ["imports:read", 7]', "field scopes: must be a list of scopes"),
        ('tenant = ".."', "field tenant: must start with a-z or 0-9, not '.'"),
        ("expires = 2027-01-01", "field 'expires': unknown"),
    ],
    ids=["live-as-string", "scope-as-number", "dot-dot-tenant", "unknown-key"],
)
async def test_a_server_with_a_bad_static_table_refuses_to_start(
    make_app: AppFactory, tmp_path: Path, entry: str, problem: str
) -> None:
    table = tmp_path / "tokens.toml"
    fields = {"token": '"dev-acme"', "tenant": '"acme"'}
    key = entry.partition(" = ")[0]
    fields[key] = entry.partition(" = ")[2]
    table.write_text("[[tokens]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()))
    with pytest.raises(StaticTokensError) as refused:
        await make_app(auth_static_tokens=table)
    assert str(refused.value).startswith(f"{table}: [[tokens]] entry 1, {problem}")


@pytest.mark.parametrize("replicas", [1, 2], ids=["one-replica", "two-replicas"])
async def test_the_active_jobs_limit_holds_exactly_for_starts_released_together(
    make_app: AppFactory, db: asyncpg.Connection, replicas: int
) -> None:
    starts, limit = 20, 3
    # No workers: every accepted job stays QUEUED, so it counts until the end of the test.
    apps = [
        await make_app(workers=0, max_active_jobs_per_tenant=limit, max_uploads=starts)
        for _ in range(replicas)
    ]
    stubs = [stub_of(app) for app in apps]
    released = asyncio.Event()
    # Each start sends its file's first byte at once (its job is inserted and admitted, or
    # refused, right then) and holds the rest of its upload open until released.
    calls = [
        asyncio.ensure_future(start(stubs[i % replicas], after_first_byte=released))
        for i in range(starts)
    ]
    # The accepted jobs are receiving (they count as active); the others were refused.
    async with asyncio.timeout(60):
        while sum(c.done() for c in calls) < starts - limit:  # noqa: ASYNC110 (other tasks)
            await asyncio.sleep(0.05)
    receiving = await db.fetchval("SELECT count(*) FROM import_jobs WHERE stage = 'RECEIVING'")
    released.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    assert receiving == limit
    accepted = [o for o in outcomes if isinstance(o, pb.Job)]
    refused = [rich_error(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(accepted) == limit
    assert [(e.code, e.reason) for e in refused] == [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_ACTIVE_JOBS")
    ] * (starts - limit)
    rows = await db.fetch("SELECT id, status FROM import_jobs")
    assert sorted((str(r["id"]), r["status"]) for r in rows) == sorted(
        (j.id, "QUEUED") for j in accepted
    )
    # Refused starts left nothing behind: no job, no entry.
    assert await db.fetchval("SELECT count(*) FROM import_entries") == limit


def unsigned_token(position: dict[str, Any], filters: str) -> str:
    """A token as the service issued them before they were signed: anyone could write one."""
    payload = json.dumps({"p": position, "f": filters}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


async def test_forged_page_tokens_are_invalid_argument_never_internal(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, b"email\n" + b"".join(b"r%d@x.com\n" % i for i in range(6)))

    def fingerprint(*filters: Any) -> str:  # as computable by anyone from the old code
        canonical = json.dumps(filters, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    entries = fingerprint("ListEntries", job.id, [])
    jobs = fingerprint("ListJobs", "default", [], None, True)
    forged = {
        "row beyond int64": pb.ListEntriesRequest(
            id=job.id, page_token=unsigned_token({"r": 2**64}, entries)
        ),
        "row as boolean": pb.ListEntriesRequest(
            id=job.id, page_token=unsigned_token({"r": True}, entries)
        ),
        "skipping rows": pb.ListEntriesRequest(
            id=job.id, page_token=unsigned_token({"r": 3}, entries)
        ),
        "time as number": pb.ListJobsRequest(page_token=unsigned_token({"t": 1, "i": 2}, jobs)),
    }
    for name, request in forged.items():
        call = (
            stub.ListEntries(request)
            if isinstance(request, pb.ListEntriesRequest)
            else stub.ListJobs(request)
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        error = rich_error(refused.value)
        assert (name, error.code, error.field_violations) == (
            name,
            grpc.StatusCode.INVALID_ARGUMENT,
            {"page_token": "is not a valid page token"},
        )


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


async def test_every_one_character_change_of_a_page_token_is_refused(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, b"email\n" + b"".join(b"r%d@x.com\n" % i for i in range(6)))
    token = (await stub.ListEntries(pb.ListEntriesRequest(id=job.id, page_size=2))).next_page_token
    changed = [
        token[:i] + B64URL[(B64URL.find(c) + 1) % len(B64URL)] + token[i + 1 :]
        for i, c in enumerate(token)
        if c != "."
    ]
    accepted = []
    for candidate in changed:
        try:
            await stub.ListEntries(pb.ListEntriesRequest(id=job.id, page_token=candidate))
            accepted.append(candidate)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert accepted == []
    page = await stub.ListEntries(pb.ListEntriesRequest(id=job.id, page_token=token))
    assert [e.row_number for e in page.entries] == [3, 4, 5, 6]


async def test_replicas_share_the_page_token_key_unless_one_is_configured(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    first, second = await make_app(), await make_app()
    job = await import_and_wait(
        stub_of(first), b"email\n" + b"".join(b"r%d@x.com\n" % i for i in range(4))
    )

    async def next_page(app: Application, token: str) -> list[int]:
        request = pb.ListEntriesRequest(id=job.id, page_size=2, page_token=token)
        return [e.row_number for e in (await stub_of(app).ListEntries(request)).entries]

    token = (
        await stub_of(first).ListEntries(pb.ListEntriesRequest(id=job.id, page_size=2))
    ).next_page_token
    assert await next_page(second, token) == [3, 4]  # no configuration: one key in the database
    assert (
        await db.fetchval("SELECT count(*) FROM importd_secrets WHERE name = 'page_token_key'") == 1
    )

    configured = [await make_app(page_token_key="k" * 32) for _ in range(2)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await next_page(configured[0], token)
    assert rich_error(refused.value).code == grpc.StatusCode.INVALID_ARGUMENT
    token = (
        await stub_of(configured[0]).ListEntries(pb.ListEntriesRequest(id=job.id, page_size=2))
    ).next_page_token
    assert await next_page(configured[1], token) == [3, 4]
