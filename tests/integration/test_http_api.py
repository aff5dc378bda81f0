"""The HTTP/JSON port: every RPC over HTTP with the same auth, tenancy and errors as gRPC,
Server-Sent Events, streamed uploads and downloads, and signed download links."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import aiohttp
import asyncpg
import grpc
import pytest
import yarl
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from importd_server.http.routes import routes_of
from tests.conftest import AppFactory
from tests.integration import test_auth as grpc_auth
from tests.rpc import start_import, wait_until

# The RS256 issuer and token maker of the gRPC auth matrix, so both ports meet the same callers.
rsa_key = grpc_auth.rsa_key
signer = grpc_auth.signer

SERVICE = pb.DESCRIPTOR.services_by_name["ImportService"]
FILE = b"email\na@x.com\nnot-an-email\n"
HTTP_STATUS = {
    "OK": 200,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 400,
}
TERMINAL = {
    "JOB_STATUS_SUCCEEDED",
    "JOB_STATUS_PARTIALLY_SUCCEEDED",
    "JOB_STATUS_FAILED",
    "JOB_STATUS_CANCELLED",
}


class Http:
    """A real HTTP client of one test server."""

    def __init__(self, app: Application, session: aiohttp.ClientSession) -> None:
        self.app = app
        self.base = f"http://127.0.0.1:{app.http_port}"
        self.session = session

    async def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """The status and the JSON (or text) of one request."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("http") else self.base + path
        async with self.session.request(method, url, headers=headers, **kwargs) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(text)
            return response.status, text

    async def start(self, data: bytes = FILE, token: str | None = None, **spec: str) -> Any:
        """Starts an import by upload; returns the job JSON."""
        query = urlencode({f"spec.{k}": v for k, v in {"importType": "contacts", **spec}.items()})
        status, job = await self.call("POST", f"/v1/jobs:import?{query}", token, data=data)
        assert status == 200, job
        return job

    async def events(self, job_id: str, token: str | None = None) -> list[tuple[str, Any]]:
        """Every Server-Sent Event of a job's progress, to the end of the stream."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"{self.base}/v1/jobs/{job_id}:progress"
        async with self.session.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert response.content_type == "text/event-stream"
            return [event async for event in sse(response.content)]

    async def finished(self, token: str | None = None, **spec: str) -> Any:
        """A job started by upload, once it has ended."""
        job = await self.start(token=token, **spec)
        kind, last = (await self.events(job["id"], token))[-1]
        assert (kind, last["terminal"]) == ("", True)
        return last["job"]


async def sse(lines: aiohttp.StreamReader) -> AsyncIterator[tuple[str, Any]]:
    """(event kind, JSON data) of each event; comments skipped."""
    kind, data = "", []
    async for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "", []
        elif line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def http(make_app: AppFactory, session: aiohttp.ClientSession) -> Http:
    """The HTTP port of a server without authentication."""
    return Http(await make_app(http_port=0), session)


@pytest.fixture
async def secured_http(
    make_app: AppFactory, rsa_key: Any, tmp_path: Path, session: aiohttp.ClientSession
) -> Http:
    """The HTTP port of a server with the gRPC auth matrix's keys and tokens."""
    public = tmp_path / "issuer.pem"
    public.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    static = tmp_path / "tokens.toml"
    static.write_text(grpc_auth.STATIC_TOKENS)
    app = await make_app(
        http_port=0,
        auth_rs256_public_keys=str(public),
        auth_hs256_secrets=grpc_auth.HS_SECRET,
        auth_static_tokens=static,
        auth_issuer=grpc_auth.ISSUER,
    )
    return Http(app, session)


def reason(status: Any) -> str:
    """The ErrorInfo reason of a google.rpc.Status JSON."""
    infos = [d for d in status["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return str(infos[0]["reason"])


# Each RPC as an HTTP request: (method, path), with {id} for the job.
REQUESTS = {
    "StartImport": ("POST", "/v1/jobs:import?spec.importType=contacts"),
    "GetJob": ("GET", "/v1/jobs/{id}"),
    "ListJobs": ("GET", "/v1/jobs"),
    "StreamProgress": ("GET", "/v1/jobs/{id}:progress"),
    "ListEntries": ("GET", "/v1/jobs/{id}/entries"),
    "CancelJob": ("POST", "/v1/jobs/{id}:cancel"),
    "RetryJob": ("POST", "/v1/jobs/{id}:retry"),
    "ExportEntries": ("GET", "/v1/jobs/{id}/entries:export"),
    "ListImportTypes": ("GET", "/v1/importTypes"),
    "CreateDownloadLink": ("POST", "/v1/jobs/{id}:createDownloadLink"),
    "RevertJob": ("POST", "/v1/jobs/{id}:revert"),
}
# RevertJob's body: one request_id, so every caller allowed to revert gets the same revert.
REVERT_BODY = b'{"requestId": "http"}'


# The RPCs of issue 14 (tested over HTTP in test_events_http.py).
EVENT_ROUTES = {
    "WatchJobs": ("GET", "/v1/jobs:watch"),
    "ListWebhookDeliveries": ("GET", "/v1/jobs/{id}/webhookDeliveries"),
    "GetWebhookSecret": ("GET", "/v1/webhookSecret"),
}


def test_every_rpc_has_exactly_the_http_route_its_annotation_declares() -> None:
    routes = {r.method.name: (r.verb, r.template) for r in routes_of(SERVICE.methods)}
    declared = {name: (verb, path.split("?")[0]) for name, (verb, path) in REQUESTS.items()}
    assert routes == {**declared, **EVENT_ROUTES}


async def test_every_rpc_over_http_answers_every_kind_of_caller_as_grpc_does(
    secured_http: Http, signer: Callable[..., str]
) -> None:
    owner = signer()
    job_id = (await secured_http.finished(owner))["id"]
    mismatches = []
    for case, metadata in grpc_auth.tokens(signer).items():
        headers = dict(metadata)
        if "authorization" in headers:
            headers = {"Authorization": headers.pop("authorization")}
        want = grpc_auth.expected(case)
        # CreateDownloadLink is a read of one job, exactly as GetJob. FILE has a failed row,
        # so a caller who may retry the job starts a retry.
        retried = grpc_auth.OK if want["RetryJob"] == grpc_auth.ENDED else want["RetryJob"]
        want = {**want, "CreateDownloadLink": want["GetJob"], "RetryJob": retried}
        for rpc, (method, path) in REQUESTS.items():
            data = FILE if rpc == "StartImport" else REVERT_BODY if rpc == "RevertJob" else None
            status, body = await secured_http.call(
                method, path.format(id=job_id), headers=headers, data=data
            )
            expected_status = HTTP_STATUS[want[rpc]]
            if status != expected_status:
                mismatches.append(f"{case} / {rpc}: got {status}, want {expected_status}: {body}")
            elif status >= 400:
                code = grpc.StatusCode[want[rpc]].value[0]
                if body["code"] != code or not reason(body):
                    mismatches.append(f"{case} / {rpc}: status JSON {body}")
    assert mismatches == []


async def test_a_missing_token_is_401_with_a_status_saying_so(secured_http: Http) -> None:
    status, body = await secured_http.call("GET", "/v1/jobs")
    assert status == 401
    assert (body["code"], reason(body)) == (16, "MISSING_TOKEN")
    assert "authorization" in body["message"]


async def test_another_tenants_job_is_404_on_every_job_route(
    secured_http: Http, signer: Callable[..., str]
) -> None:
    job = await secured_http.finished(signer())
    stranger = signer(tenant="globex")
    answers = {}
    for rpc, (method, path) in REQUESTS.items():
        if "{id}" in path:
            status, body = await secured_http.call(method, path.format(id=job["id"]), stranger)
            answers[rpc] = (status, body["code"])
    assert set(answers.values()) == {(404, 5)}, answers


async def test_errors_carry_the_http_status_grpc_gateway_gives_their_code(http: Http) -> None:
    job = await http.finished()
    bad_id = await http.call("GET", "/v1/jobs/not-a-uuid")
    ended = await http.call("POST", f"/v1/jobs/{job['id']}:cancel")
    await http.start(requestId="r-1", fileName="a.csv")
    reused = await http.call(
        "POST", "/v1/jobs:import?spec.importType=contacts&spec.requestId=r-1", data=b"email\n"
    )
    bad_json = await http.call("POST", f"/v1/jobs/{job['id']}:cancel", data=b"{")
    no_route = await http.call("GET", "/v1/nothing")
    wrong_method = await http.call("DELETE", "/v1/jobs")
    got = {
        "bad id": (bad_id[0], bad_id[1]["code"]),
        "ended": (ended[0], ended[1]["code"], reason(ended[1])),
        "reused request id": (reused[0], reused[1]["code"]),
        "bad JSON body": (bad_json[0], bad_json[1]["code"]),
        "no route": (no_route[0], no_route[1]["code"]),
        "wrong method": (wrong_method[0], wrong_method[1]["code"]),
    }
    assert got == {
        "bad id": (400, 3),
        "ended": (400, 9, "JOB_ALREADY_ENDED"),
        "reused request id": (409, 6),
        "bad JSON body": (400, 3),
        "no route": (404, 5),
        "wrong method": (405, 12),
    }
    field = bad_id[1]["details"][1]
    assert field["fieldViolations"][0]["field"] == "id"


async def test_a_tenant_beyond_its_stream_limit_gets_429(
    make_app: AppFactory, session: Any
) -> None:
    http = Http(await make_app(http_port=0, workers=0, max_streams_per_tenant=1), session)
    job = await http.start()  # queued for good: no workers
    async with session.get(f"{http.base}/v1/jobs/{job['id']}:progress") as first:
        assert first.status == 200
        await first.content.readline()  # the snapshot is out: the stream is open
        status, body = await http.call("GET", f"/v1/jobs/{job['id']}:progress")
    assert (status, body["code"], reason(body)) == (429, 8, "TOO_MANY_STREAMS")


async def test_query_parameters_and_json_bodies_fill_the_request(http: Http) -> None:
    mine = await http.finished(fileName="march-contacts.csv")
    await http.finished(fileName="other.csv")
    labelled = await http.call(
        "POST",
        "/v1/jobs:import",
        headers={
            "Importd-Request": json.dumps(
                {"spec": {"importType": "contacts", "labels": {"batch": "March-7"}}}
            )
        },
        data=FILE,
    )
    by_name = await http.call("GET", "/v1/jobs?search=MARCH-CON&pageSize=10")
    by_label = await http.call("GET", "/v1/jobs?search=march-7")
    by_status = await http.call(
        "GET", "/v1/jobs?statuses=JOB_STATUS_QUEUED&statuses=JOB_STATUS_RUNNING&statuses=2"
    )
    failed = await http.call(
        "GET",
        f"/v1/jobs/{mine['id']}/entries?statuses=ENTRY_STATUS_FAILED&error_code=INVALID_EMAIL",
    )
    none = await http.call("GET", f"/v1/jobs/{mine['id']}/entries?errorCode=REQUIRED")
    assert [j["fileName"] for j in by_name[1]["jobs"]] == ["march-contacts.csv"]
    assert [j["id"] for j in by_label[1]["jobs"]] == [labelled[1]["id"]]
    assert labelled[1]["labels"] == {"batch": "March-7"}
    assert by_status[0] == 200
    assert [e["raw"] for e in failed[1]["entries"]] == [{"email": "not-an-email"}]
    assert failed[1]["totalCount"] == "1"
    assert (none[1]["entries"], none[1]["totalCount"]) == ([], "0")


async def test_progress_is_server_sent_events_from_snapshot_to_terminal_event(
    http: Http,
) -> None:
    rows = b"email\n" + b"".join(b"user%d@x.com\n" % i for i in range(40))
    job = await http.start(rows)
    events = await http.events(job["id"])
    assert {kind for kind, _ in events} == {""}
    processed = [int(e["job"]["processedRows"]) for _, e in events]
    assert processed == sorted(processed)
    assert [e["terminal"] for _, e in events] == [False] * (len(events) - 1) + [True]
    last = events[-1][1]["job"]
    assert (last["status"], last["processedRows"], last["createdCount"]) == (
        "JOB_STATUS_SUCCEEDED",
        "40",
        "40",
    )


async def test_cancelling_a_running_job_ends_its_event_stream(
    make_app: AppFactory, session: Any
) -> None:
    http = Http(await make_app(http_port=0, workers=0), session)
    job = await http.start()
    async with session.get(f"{http.base}/v1/jobs/{job['id']}:progress") as stream:
        events = aiter(sse(stream.content))
        assert (await anext(events))[1]["job"]["status"] == "JOB_STATUS_QUEUED"
        status, cancelled = await http.call("POST", f"/v1/jobs/{job['id']}:cancel")
        assert (status, cancelled["status"]) == (200, "JOB_STATUS_CANCELLED")
        rest = [event async for event in events]
    assert rest[-1][1]["terminal"] is True
    assert rest[-1][1]["job"]["status"] == "JOB_STATUS_CANCELLED"


async def test_an_upload_larger_than_the_grpc_message_limit_streams_through(
    make_app: AppFactory, session: Any
) -> None:
    limit = 64 * 1024
    app = await make_app(http_port=0, workers=0, max_message_bytes=limit)
    http = Http(app, session)
    data = b"email\n" + b"".join(b"someone-%06d@example.com\n" % i for i in range(20_000))
    assert len(data) > 6 * limit

    async def body() -> AsyncIterator[bytes]:  # chunked: no Content-Length either
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    job = await http.start(body())  # type: ignore[arg-type]
    assert (job["fileSizeBytes"], job["totalRows"]) == (str(len(data)), "20000")
    # The limit is real: the same file as one gRPC message is refused.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start_import(pb_grpc.ImportServiceStub(channel), data, piece=len(data))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_export_is_a_streamed_csv_download(http: Http) -> None:
    job = await http.finished()
    async with http.session.get(f"{http.base}/v1/jobs/{job['id']}/entries:export") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert "Content-Length" not in response.headers  # streamed, not buffered
        text = await response.text()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["email", "importd_row", "importd_status", "importd_errors"]
    assert [r[:3] for r in rows[1:]] == [["not-an-email", "2", "FAILED"]]


async def test_the_page_and_its_assets_are_served_from_the_port_itself(http: Http) -> None:
    async with http.session.get(f"{http.base}/") as response:
        assert response.status == 200
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
    for asset in ("/static/app.js", "/static/app.css"):
        assert asset in page
        status, _ = await http.call("GET", asset)
        assert status == 200


async def link_of(http: Http, job_id: str, token: str | None = None) -> Any:
    status, link = await http.call("POST", f"/v1/jobs/{job_id}:createDownloadLink", token)
    assert status == 200, link
    return link


async def test_a_signed_link_downloads_the_not_imported_rows_without_a_token(
    secured_http: Http, signer: Callable[..., str]
) -> None:
    owner = signer()
    job = await secured_http.finished(owner)
    link = await link_of(secured_http, job["id"], owner)
    expire_time = datetime.fromisoformat(link["expireTime"])
    assert timedelta(minutes=59) < expire_time - datetime.now(UTC) <= timedelta(minutes=60)
    _, exported = await secured_http.call("GET", f"/v1/jobs/{job['id']}/entries:export", owner)
    async with secured_http.session.get(link["url"]) as response:  # no token
        assert response.status == 200
        assert "attachment" in response.headers["Content-Disposition"]
        assert await response.text() == exported
    again = await link_of(secured_http, job["id"], owner)  # re-issued on demand
    status, _ = await secured_http.call("GET", again["url"])
    assert status == 200


async def test_every_row_exports_over_http_and_through_an_all_rows_link(http: Http) -> None:
    job = await http.finished()
    assert job["errorSummary"] == [{"code": "INVALID_EMAIL", "field": "email", "count": "1"}]
    status, exported = await http.call("GET", f"/v1/jobs/{job['id']}/entries:export?allRows=true")
    assert status == 200
    rows = list(csv.reader(io.StringIO(exported)))
    assert [r[1:3] for r in rows[1:]] == [["1", "CREATED"], ["2", "FAILED"]]
    status, link = await http.call(
        "POST", f"/v1/jobs/{job['id']}:createDownloadLink", json={"allRows": True}
    )
    assert status == 200, link
    assert "/all-rows.csv?" in link["url"]
    async with http.session.get(link["url"]) as response:
        assert response.status == 200
        assert 'filename="all-rows.csv"' in response.headers["Content-Disposition"]
        assert await response.text() == exported
    # The link's rows are part of what it signs: the same link cannot open the other file.
    status, refused = await http.call("GET", link["url"].replace("all-rows", "not-imported"))
    assert (status, reason(refused)) == (403, "BAD_LINK_SIGNATURE")


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


async def test_a_link_that_was_altered_or_expired_is_refused(http: Http) -> None:
    job = await http.finished()
    other = await http.finished()
    url = (await link_of(http, job["id"]))["url"]
    signature = dict(parse_qsl(urlsplit(url).query))["signature"]
    expires = int(dict(parse_qsl(urlsplit(url).query))["expires"])
    assert http.app.download_links is not None
    expired = http.app.download_links.issue(
        uuid.UUID(job["id"]), "default", now=datetime.now(UTC) - timedelta(minutes=61)
    )
    cases = {
        "signature changed": with_query(url, signature=signature[:-2] + "AA"),
        "expiry moved": with_query(url, expires=str(expires + 3600)),
        "other tenant": with_query(url, tenant="globex"),
        "other job": url.replace(job["id"], other["id"]),
        "no signature": url.split("?")[0],
        "expired": expired.url,
    }
    answers = {}
    for case, altered in cases.items():
        status, body = await http.call("GET", altered)
        answers[case] = (status, reason(body))
    assert answers == {
        "signature changed": (403, "BAD_LINK_SIGNATURE"),
        "expiry moved": (403, "BAD_LINK_SIGNATURE"),
        "other tenant": (403, "BAD_LINK_SIGNATURE"),
        "other job": (403, "BAD_LINK_SIGNATURE"),
        "no signature": (403, "BAD_LINK_SIGNATURE"),
        "expired": (410, "LINK_EXPIRED"),
    }


async def test_download_links_need_the_http_port(stub: pb_grpc.ImportServiceStub) -> None:
    job = await start_import(stub, FILE)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateDownloadLink(pb.CreateDownloadLinkRequest(id=job.id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# Path and query values of any shape, already percent-encoded (invalid UTF-8 included),
# against every route: never a 5xx, always Status JSON.
encoded = st.text(st.characters(codec="utf-8"), max_size=60).map(
    lambda text: quote(text, safe="")
) | st.binary(max_size=20).map(lambda raw: "".join(f"%{byte:02X}" for byte in raw))
parameters = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "id",
                "pageSize",
                "page_size",
                "pageToken",
                "statuses",
                "offset",
                "errorCode",
                "search",
                "importType",
                "spec.importType",
                "spec.mode",
                "spec.csv.header",
                "spec.labels",
                "spec.maxErrors",
                "spec",
                "tenant",
                "expires",
                "signature",
            ]
        )
        | encoded,
        encoded,
    ),
    max_size=4,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    request=st.sampled_from([*REQUESTS.values(), ("GET", "/downloads/jobs/{id}/not-imported.csv")]),
    segment=encoded,
    query=parameters,
)
async def test_no_path_or_query_value_yields_a_server_error(
    http: Http, request: tuple[str, str], segment: str, query: list[tuple[str, str]]
) -> None:
    method, path = request
    url = http.base + path.split("?")[0].format(id=segment)
    if query:
        url += "?" + "&".join(f"{name}={value}" for name, value in query)
    data = b"email\n" if method == "POST" else None
    async with http.session.request(method, yarl.URL(url, encoded=True), data=data) as response:
        text = await response.text()
        assert response.status < 500, text
        if response.status >= 400:
            assert isinstance(json.loads(text)["code"], int), text


async def test_a_watcher_that_leaves_frees_its_progress_stream(
    make_app: AppFactory, session: Any
) -> None:
    http = Http(await make_app(http_port=0, workers=0, max_streams_per_tenant=1), session)
    job = await http.start()
    url = f"{http.base}/v1/jobs/{job['id']}:progress"
    async with aiohttp.ClientSession() as watcher, watcher.get(url) as first:
        await first.content.readline()
    # The watcher's connection is closed: its RPC ends and the tenant's stream is free again.
    async with asyncio.timeout(10):
        while True:
            async with session.get(url) as again:
                if again.status == 200:
                    break
                assert again.status == 429
            await asyncio.sleep(0.05)


def finished_calls(app: Application, rpc: str) -> float:
    """How many calls of `rpc` the server has finished, whatever their end."""
    assert app.metrics is not None
    return sum(
        sample.value
        for metric in app.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "importd_rpc_duration_seconds_count"
        and sample.labels["method"].endswith(rpc)
    )


async def test_an_upload_the_client_abandons_ends_its_job_failed_with_no_rows(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = await make_app(http_port=0, workers=0)
    body = b"email\n" + b"someone@example.com\n" * 50_000
    _reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
    writer.write(
        b"POST /v1/jobs:import?spec.importType=contacts HTTP/1.1\r\nHost: importd\r\n"
        b"Content-Length: %d\r\n\r\n" % (2 * len(body))
    )
    writer.write(body)  # half of what was announced
    await writer.drain()
    async with asyncio.timeout(30):  # the job exists from the file's first byte
        while not await db.fetchval("SELECT count(*) FROM import_jobs"):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    writer.close()
    await wait_until(lambda: finished_calls(app, "StartImport") == 1)
    job = await db.fetchrow("SELECT status, error_reason FROM import_jobs")
    assert (job["status"], job["error_reason"]) == ("FAILED", "UPLOAD_ABORTED")
    assert await db.fetchval("SELECT count(*) FROM import_entries") == 0


async def test_retry_and_the_jobs_filter_over_http(http: Http) -> None:
    parent = await http.finished()  # FILE has a failed row
    status, retry = await http.call(
        "POST",
        f"/v1/jobs/{parent['id']}:retry",
        json={"statuses": ["ENTRY_STATUS_FAILED"], "requestId": "r-http"},
    )
    assert status == 200, retry
    assert (retry["retryOf"], retry["totalRows"]) == (parent["id"], "1")
    query = urlencode({"filter": f'retry_of = "{parent["id"]}"'})
    status, listed = await http.call("GET", f"/v1/jobs?{query}")
    assert (status, [j["id"] for j in listed["jobs"]]) == (200, [retry["id"]])
    status, refused = await http.call("GET", "/v1/jobs?" + urlencode({"filter": "status >"}))
    assert (status, refused["code"], reason(refused)) == (400, 3, "INVALID_ARGUMENT")
    await http.events(retry["id"])  # to its end: the bad e-mail fails again
    status, latest = await http.call(
        "GET", f"/v1/jobs/{parent['id']}/entries?acrossRetries=true&statuses=ENTRY_STATUS_FAILED"
    )
    assert status == 200, latest
    assert [(e["rowNumber"], e["jobId"]) for e in latest["entries"]] == [("2", retry["id"])]
