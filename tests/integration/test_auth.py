"""Who may do what: every RPC against every kind of caller, tenant limits, and TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_client import AsyncClient
from tests.conftest import AppFactory
from tests.rpc import read_to_end, rich_error

ISSUER = "https://issuer.test"
HS_SECRET = "hs256-shared-secret-for-tests-only"
FILE = b"email\na@x.com\n"
STATIC_TOKENS = """
[[tokens]]
token = "dev-read-only"
tenant = "acme"
scopes = ["imports:read"]
live = true
"""

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def signer(rsa_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """Makes RS256 JWTs; claims default to a live acme token with every scope."""

    def sign(key: Any = None, algorithm: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": "importd",
            "sub": "svc-crm",
            "tenant": "acme",
            "scope": "imports:read imports:write",
            "live": True,
            "iat": now,
            "exp": now + 600,
        }
        payload.update(claims)
        return jwt.encode(payload, key if key is not None else rsa_key, algorithm=algorithm)

    return sign


@pytest.fixture
async def secured(
    make_app: AppFactory, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> pb_grpc.ImportServiceStub:
    public = tmp_path / "issuer.pem"
    public.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    static = tmp_path / "tokens.toml"
    static.write_text(STATIC_TOKENS)
    app = await make_app(
        auth_rs256_public_keys=str(public),
        auth_hs256_secrets=HS_SECRET,
        auth_static_tokens=static,
        auth_issuer=ISSUER,
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return pb_grpc.ImportServiceStub(channel)


async def start(stub: pb_grpc.ImportServiceStub, metadata: Metadata, **spec: Any) -> pb.Job:
    async def requests() -> Any:
        yield pb.StartImportRequest(spec=pb.ImportSpec(import_type="contacts", **spec))
        yield pb.StartImportRequest(chunk=FILE)

    job: pb.Job = await stub.StartImport(requests(), metadata=metadata)
    return job


async def finished_job(stub: pb_grpc.ImportServiceStub, metadata: Metadata) -> str:
    job = await start(stub, metadata)
    async for event in stub.StreamProgress(pb.StreamProgressRequest(id=job.id), metadata=metadata):
        if event.terminal:
            break
    return job.id


async def drain(call: Any) -> None:
    async for _ in call:
        pass


RPCS: dict[str, Callable[[pb_grpc.ImportServiceStub, Metadata, str], Awaitable[Any]]] = {
    "StartImport": lambda s, m, j: start(s, m),
    "GetJob": lambda s, m, j: s.GetJob(pb.GetJobRequest(id=j), metadata=m),
    "ListJobs": lambda s, m, j: s.ListJobs(pb.ListJobsRequest(), metadata=m),
    "StreamProgress": lambda s, m, j: drain(
        s.StreamProgress(pb.StreamProgressRequest(id=j), metadata=m)
    ),
    "ListEntries": lambda s, m, j: s.ListEntries(pb.ListEntriesRequest(id=j), metadata=m),
    "CancelJob": lambda s, m, j: s.CancelJob(pb.CancelJobRequest(id=j), metadata=m),
    "RetryJob": lambda s, m, j: s.RetryJob(pb.RetryJobRequest(id=j), metadata=m),
    # One request_id: every caller allowed to revert gets the same revert job.
    "RevertJob": lambda s, m, j: s.RevertJob(
        pb.RevertJobRequest(id=j, request_id="auth"), metadata=m
    ),
    "ExportEntries": lambda s, m, j: drain(
        s.ExportEntries(pb.ExportEntriesRequest(id=j), metadata=m)
    ),
    "ListImportTypes": lambda s, m, j: s.ListImportTypes(pb.ListImportTypesRequest(), metadata=m),
}

OK = "OK"
UNAUTHENTICATED = "UNAUTHENTICATED"
DENIED = "PERMISSION_DENIED"
NOT_FOUND = "NOT_FOUND"
# Cancelling a finished job, or retrying one every row of which went in, once access is
# granted.
ENDED = "FAILED_PRECONDITION"
READS = ("GetJob", "ListJobs", "StreamProgress", "ListEntries", "ExportEntries", "ListImportTypes")


def expected(case: str) -> dict[str, str]:
    """The exact status of every RPC for one kind of caller (the job is acme's, live, done)."""
    if case in (
        "no token",
        "not bearer",
        "garbage",
        "expired",
        "not yet valid",
        "wrong signature",
        "wrong audience",
        "wrong issuer",
        "unknown algorithm",
    ):
        return dict.fromkeys(RPCS, UNAUTHENTICATED)
    if case in ("owner (RS256)", "owner (HS256)"):
        return {**dict.fromkeys(RPCS, OK), "CancelJob": ENDED, "RetryJob": ENDED}
    if case == "other tenant":
        return {
            **dict.fromkeys(RPCS, NOT_FOUND),
            "StartImport": OK,
            "ListJobs": OK,
            "ListImportTypes": OK,
        }
    if case == "read scope only (static)":
        return {
            **dict.fromkeys(READS, OK),
            "StartImport": DENIED,
            "CancelJob": DENIED,
            "RetryJob": DENIED,
            "RevertJob": DENIED,
        }
    if case == "write scope only":
        return {
            **dict.fromkeys(READS, DENIED),
            "StartImport": OK,
            "CancelJob": ENDED,
            "RetryJob": ENDED,
            "RevertJob": OK,
        }
    if case == "test token":
        return {
            **dict.fromkeys(RPCS, DENIED),
            "ListJobs": OK,
            "ListImportTypes": OK,
        }
    raise AssertionError(case)


def tokens(signer: Callable[..., str]) -> dict[str, Metadata]:
    now = int(time.time())
    return {
        "no token": (),
        "not bearer": (("authorization", "Basic YWxhZGRpbjpvcGVu"),),
        "garbage": bearer("not-a-token"),
        "expired": bearer(signer(exp=now - 10)),
        "not yet valid": bearer(signer(nbf=now + 600)),
        "wrong signature": bearer(
            signer(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        ),
        "wrong audience": bearer(signer(aud="someone-else")),
        "wrong issuer": bearer(signer(iss="https://evil.test")),
        "unknown algorithm": bearer(signer(key=b"k" * 64, algorithm="HS512")),
        "owner (RS256)": bearer(signer()),
        "owner (HS256)": bearer(signer(key=HS_SECRET, algorithm="HS256")),
        "other tenant": bearer(signer(tenant="globex")),
        "read scope only (static)": bearer("dev-read-only"),
        "write scope only": bearer(signer(scope="imports:write")),
        "test token": bearer(signer(live=False)),
    }


async def outcome(call: Awaitable[Any]) -> tuple[str, grpc.aio.AioRpcError | None]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code().name, error
    return OK, None


async def test_every_rpc_answers_every_kind_of_caller_exactly(
    secured: pb_grpc.ImportServiceStub, signer: Callable[..., str]
) -> None:
    job_id = await finished_job(secured, bearer(signer()))
    mismatches = []
    for case, metadata in tokens(signer).items():
        for rpc, call in RPCS.items():
            got, error = await outcome(call(secured, metadata, job_id))
            want = expected(case)[rpc]
            if got != want:
                mismatches.append(
                    f"{case} / {rpc}: got {got}, want {want}: {error and error.details()}"
                )
    assert mismatches == []


async def test_refusals_carry_a_reason_and_the_missing_scope(
    secured: pb_grpc.ImportServiceStub, signer: Callable[..., str]
) -> None:
    job_id = await finished_job(secured, bearer(signer()))
    cases = [
        (RPCS["GetJob"](secured, (), job_id), "MISSING_TOKEN", {}),
        (
            RPCS["GetJob"](secured, bearer(signer(exp=int(time.time()) - 5)), job_id),
            "TOKEN_EXPIRED",
            {},
        ),
        (RPCS["GetJob"](secured, bearer(signer(aud="x")), job_id), "WRONG_AUDIENCE", {}),
        (
            RPCS["StartImport"](secured, bearer("dev-read-only"), job_id),
            "MISSING_SCOPE",
            {"scope": "imports:write"},
        ),
        (
            RPCS["GetJob"](secured, bearer(signer(scope="imports:write")), job_id),
            "MISSING_SCOPE",
            {"scope": "imports:read"},
        ),
        (
            RPCS["GetJob"](secured, bearer(signer(live=False)), job_id),
            "TEST_TOKEN_ON_LIVE_JOB",
            {"id": job_id},
        ),
        (
            RPCS["StartImport"](secured, bearer(signer(live=False)), job_id),
            "TEST_TOKEN_LIVE_IMPORT",
            {},
        ),
    ]
    for call, reason, metadata in cases:
        _, error = await outcome(call)
        assert error is not None
        details = rich_error(error)
        assert (details.reason, details.metadata) == (reason, metadata)


async def test_test_tokens_run_dry_runs_and_see_only_test_jobs(
    secured: pb_grpc.ImportServiceStub, signer: Callable[..., str]
) -> None:
    live, test = bearer(signer()), bearer(signer(live=False))
    live_job = await finished_job(secured, live)
    dry = await start(secured, test, dry_run=True)
    assert dry.dry_run
    seen_by_test = await secured.ListJobs(pb.ListJobsRequest(), metadata=test)
    assert [j.id for j in seen_by_test.jobs] == [dry.id]
    seen_by_live = await secured.ListJobs(pb.ListJobsRequest(), metadata=live)
    assert {j.id for j in seen_by_live.jobs} == {dry.id, live_job}
    assert (await secured.GetJob(pb.GetJobRequest(id=dry.id), metadata=test)).id == dry.id


async def test_a_tenant_at_its_limits_is_refused_while_another_imports_normally(
    make_app: AppFactory, tmp_path: Path
) -> None:
    static = tmp_path / "tokens.toml"
    static.write_text(
        '[[tokens]]\ntoken = "acme"\ntenant = "acme"\nlive = true\n'
        '[[tokens]]\ntoken = "globex"\ntenant = "globex"\nlive = true\n'
    )
    api = await make_app(
        auth_static_tokens=static, workers=0, max_active_jobs_per_tenant=1, max_streams_per_tenant=2
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        acme, globex = bearer("acme"), bearer("globex")
        first = await start(stub, acme)
        _, error = await outcome(start(stub, acme))
        assert error is not None and rich_error(error).reason == "TOO_MANY_ACTIVE_JOBS"
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        streams = [
            stub.StreamProgress(pb.StreamProgressRequest(id=first.id), metadata=acme)
            for _ in range(2)
        ]
        for stream in streams:
            await stream.read()
        third = stub.StreamProgress(pb.StreamProgressRequest(id=first.id), metadata=acme)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await third.read()
        assert rich_error(refused.value).reason == "TOO_MANY_STREAMS"

        # globex is untouched by acme's limits: it starts, watches, and finishes.
        other = await start(stub, globex)
        watching = stub.StreamProgress(pb.StreamProgressRequest(id=other.id), metadata=globex)
        assert (await watching.read()).job.id == other.id
        await make_app(auth_static_tokens=static, workers=2)  # workers for everyone
        events = await read_to_end(watching)
        assert events[-1].terminal and events[-1].job.status == pb.JOB_STATUS_SUCCEEDED
        for stream in streams:
            stream.cancel()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_on_the_server_port_and_in_the_client(
    make_app: AppFactory, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    app = await make_app(tls_cert=cert, tls_key=key)
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    async with AsyncClient(f"127.0.0.1:{app.port}", credentials=credentials) as client:
        assert [t.name for t in await client.list_import_types()] == ["contacts", "transactions"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(
                pb_grpc.ImportServiceStub(plain).ListImportTypes(
                    pb.ListImportTypesRequest(), timeout=3
                ),
                10,
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tenants_never_see_or_overwrite_each_others_target_rows(
    make_app: AppFactory, tmp_path: Path, db: Any
) -> None:
    static = tmp_path / "tokens.toml"
    static.write_text(
        '[[tokens]]\ntoken = "acme"\ntenant = "acme"\nlive = true\n'
        '[[tokens]]\ntoken = "globex"\ntenant = "globex"\nlive = true\n'
    )
    app = await make_app(auth_static_tokens=static)
    async with (
        AsyncClient(f"127.0.0.1:{app.port}", token="acme") as acme,
        AsyncClient(f"127.0.0.1:{app.port}", token="globex") as globex,
    ):
        for client, name in ((acme, b"Acme"), (globex, b"Globex")):
            job = await client.start_import(
                b"email,first_name\na@x.com," + name + b"\n", import_type="contacts"
            )
            assert (await job.wait(timeout=30)).created_count == 1
        deleted = await globex.start_import(
            b"email\na@x.com\n", import_type="contacts", mode="delete"
        )
        assert (await deleted.wait(timeout=30)).deleted_count == 1
    rows = await db.fetch("SELECT tenant, email, first_name FROM contacts ORDER BY tenant")
    assert [tuple(r) for r in rows] == [("acme", "a@x.com", "Acme")]


def test_a_token_source_that_yields_nothing_refuses_to_start(tmp_path: Path) -> None:
    from importd_server.auth import Authenticator
    from importd_server.config import Settings

    empty = tmp_path / "tokens.toml"
    empty.write_text("tokens = []\n")  # a typo such as [[token]] is refused by name before
    with pytest.raises(ValueError, match="yields no token, secret or key"):
        Authenticator.from_settings(Settings(auth_static_tokens=empty))
    with pytest.raises(ValueError, match="yields no token, secret or key"):
        Authenticator.from_settings(Settings(auth_hs256_secrets=" , "))


async def test_a_jwt_with_a_malformed_header_is_unauthenticated(
    secured: pb_grpc.ImportServiceStub, signer: Callable[..., str], rsa_key: rsa.RSAPrivateKey
) -> None:
    import base64
    import json

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    token = f"{part({'alg': 'RS256', 'kid': 7})}.{part({'tenant': 'acme'})}.c2ln"
    _, error = await outcome(RPCS["ListImportTypes"](secured, bearer(token), ""))
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_request_ids_neither_leak_live_jobs_to_test_tokens_nor_hit_the_job_limit(
    make_app: AppFactory, signer: Callable[..., str], rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    static = tmp_path / "tokens.toml"
    static.write_text(
        '[[tokens]]\ntoken = "live"\ntenant = "acme"\nlive = true\n'
        '[[tokens]]\ntoken = "test"\ntenant = "acme"\nlive = false\n'
    )
    app = await make_app(auth_static_tokens=static, workers=0, max_active_jobs_per_tenant=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        first = await start(stub, bearer("live"), dry_run=True, request_id="r")
        retried = await start(stub, bearer("live"), dry_run=True, request_id="r")
        assert retried.id == first.id  # not TOO_MANY_ACTIVE_JOBS: it is the same start
        _, error = await outcome(start(stub, bearer("test"), dry_run=True, request_id="r"))
    assert error is not None
    assert rich_error(error).reason == "TEST_TOKEN_ON_LIVE_JOB"
    assert first.id not in (error.details() or "")
