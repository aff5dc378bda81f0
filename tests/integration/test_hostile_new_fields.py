"""This session's new request fields against a hostile caller, on a real server: RetryJob,
RevertJob, ImportSpec.retry_of and .revertible, ListJobs' filter, ListEntries' across_retries,
and all_rows of ExportEntries and CreateDownloadLink. Empty, huge, NUL-bearing and odd values,
enum numbers no enum has, and ids that only look like ids each get a precise, short answer:
never INTERNAL or UNKNOWN."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.api.status import MAX_MESSAGE_BYTES
from tests.conftest import AppFactory
from tests.rpc import import_and_wait, insert_job, rich_error, start_import

FILE = b"email\na@x.com\n"
# What a hostile request may be told.
PRECISE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
HUGE = "x" * 100_000
# A well-formed id no job has (fixed: test ids must be the same in every xdist worker).
NO_JOB = "0b7a2f5e-3c1d-4e8f-9a6b-5d4c3b2a1f0e"
# Valid Unicode without lone surrogates, but odd: a BOM, right-to-left override, zero-width
# joiner, a combining mark alone, a noncharacter, an emoji, a C1 control, a line separator.
ODD = ["\ufeff", "\u202e", "\u200d", "\u0301", "\ufdd0", "\U0001f600", "\x85", "\u2028"]
STRINGS = ["", HUGE, "a\x00b", "\x00", *ODD, "é" * 200]


def short(value: object) -> str:
    """A test id: the start of the value's repr."""
    return repr(value)[:60]


SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def outcome(call: Any) -> grpc.StatusCode:
    """OK, or the code of a refusal, which must be precise and short."""
    try:
        result = await call if not hasattr(call, "__aiter__") else [r async for r in call]
        del result
    except grpc.aio.AioRpcError as error:
        code = rich_error(error).code
        assert code in PRECISE, (code, (error.details() or "")[:300])
        assert len((error.details() or "").encode()) <= MAX_MESSAGE_BYTES
        return code
    return grpc.StatusCode.OK


@pytest.fixture
async def job_id(roomy_stub: pb_grpc.ImportServiceStub) -> str:
    """A finished import with a failed row (something to retry)."""
    job = await import_and_wait(roomy_stub, b"email\na@x.com\nbad@\n")
    return job.id


# --- ListJobs.filter -------------------------------------------------------------------

fields = st.sampled_from(
    [
        "status", "import_type", "request_id", "retry_of", "create_time", "labels.batch",
        "labels.", "labels", "labels.a.b", "nope", "Status", "labels.batch.x", "AND", "OR",
    ]
)  # fmt: skip
operators = st.sampled_from(["=", "<", "<=", ">", ">=", "!=", "==", "=<", ":", ""])
# Quoted values with nested and escaped quotes, and bare words.
quoted = st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
raw_quoted = st.sampled_from(['"a"b"', '"\\"', '"\\x"', '""""', "'a'", '"\'"', '"""a"""', '"'])
words = st.sampled_from(
    [
        "SUCCEEDED", "succeeded", "FAILED", "99", "-1", "2026-11-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-11-01",
        "2026-13-01T00:00:00Z", NO_JOB, "+" + "0" * 31, "0" * 28 + "_001",
        "{" + "0" * 32 + "}", "urn:uuid:" + NO_JOB, "x",
    ]
)  # fmt: skip
values = st.one_of(quoted, raw_quoted, words, st.sampled_from(STRINGS[1:]))
clause = st.builds(lambda f, o, v: f"{f} {o} {v}", fields, operators, values)
joiners = st.sampled_from([" AND ", " AND AND ", " OR ", " and ", " ", "AND", "\tAND\t", "\x00"])
filters = st.one_of(
    st.builds(
        lambda first, rest: first + "".join(j + c for j, c in rest),
        clause,
        st.lists(st.tuples(joiners, clause), max_size=4),
    ),
    st.text(max_size=60),
    st.sampled_from(STRINGS),
    # Repeated ANDs, under gRPC's 4 MB message limit (beyond it the transport refuses the
    # request with RESOURCE_EXHAUSTED before the server sees it).
    st.builds(
        lambda c, n: " AND ".join([c] * n),
        clause.filter(lambda c: len(c) <= 1_000),
        st.integers(1, 400),
    ),
)


@SETTINGS
@given(text=filters)
async def test_any_filter_is_taken_or_refused_on_the_filter_field(
    roomy_stub: pb_grpc.ImportServiceStub, text: str
) -> None:
    try:
        await roomy_stub.ListJobs(pb.ListJobsRequest(filter=text))
    except grpc.aio.AioRpcError as error:
        details = rich_error(error)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT, (text[:200], error.details())
        assert list(details.field_violations) == ["filter"]
        assert len((error.details() or "").encode()) <= MAX_MESSAGE_BYTES


# --- ids -------------------------------------------------------------------------------

# Ids that look like UUIDs but are not the job's (or not UUIDs at all).
uuidish = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: "urn:uuid:" + str(u)),
    st.uuids().map(lambda u: str(u)[:-1]),
    st.uuids().map(lambda u: str(u) + "0"),
    st.uuids().map(lambda u: str(u).replace("-", "_")),
    st.uuids().map(lambda u: "+" + u.hex[1:]),
    st.uuids().map(lambda u: "\u0660" + u.hex[1:]),  # an Arabic-Indic zero
    st.uuids().map(lambda u: str(u) + "\x00"),
    st.sampled_from(STRINGS),
    st.text(max_size=40),
)


async def id_call(stub: pb_grpc.ImportServiceStub, rpc: str, value: str) -> Any:
    """The call of an RPC whose new field names a job by id, with that id set to value."""
    if rpc == "StartImport.retry_of":
        return start_import(stub, FILE, retry_of=value, revertible=False)
    if rpc == "RetryJob":
        return stub.RetryJob(pb.RetryJobRequest(id=value))
    if rpc == "RevertJob":
        return stub.RevertJob(pb.RevertJobRequest(id=value))
    if rpc == "ListEntries":
        return stub.ListEntries(pb.ListEntriesRequest(id=value, across_retries=True))
    if rpc == "ExportEntries":
        return stub.ExportEntries(pb.ExportEntriesRequest(id=value, all_rows=True))
    assert rpc == "CreateDownloadLink"
    return stub.CreateDownloadLink(pb.CreateDownloadLinkRequest(id=value, all_rows=True))


ID_RPCS = [
    "StartImport.retry_of",
    "RetryJob",
    "RevertJob",
    "ListEntries",
    "ExportEntries",
    "CreateDownloadLink",
]


@SETTINGS
@given(rpc=st.sampled_from(ID_RPCS), value=uuidish)
async def test_an_id_that_names_no_job_is_refused_precisely(
    roomy_stub: pb_grpc.ImportServiceStub, rpc: str, value: str
) -> None:
    code = await outcome(await id_call(roomy_stub, rpc, value))
    if rpc == "StartImport.retry_of" and not value:
        assert code == grpc.StatusCode.OK  # an empty retry_of is unset: a new import
    else:
        assert code in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, (rpc, value)


@pytest.mark.parametrize("rpc", ID_RPCS)
async def test_a_job_of_another_tenant_is_not_found(
    roomy_stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection, rpc: str
) -> None:
    other = await insert_job(db, tenant="someone-else", status="SUCCEEDED")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call = await id_call(roomy_stub, rpc, str(other))
        await call if not hasattr(call, "__aiter__") else [r async for r in call]
    assert rich_error(caught.value).code == grpc.StatusCode.NOT_FOUND
    assert str(other) in (caught.value.details() or "")


# --- enums and request ids ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"statuses": [pb.ENTRY_STATUS_PENDING, 99]},
        {"statuses": [99]},
        {"statuses": [-1]},
        {"statuses": [0]},
        {"statuses": [pb.ENTRY_STATUS_PENDING]},
        {"statuses": [pb.ENTRY_STATUS_CREATED, pb.ENTRY_STATUS_DELETED]},
        {"statuses": [pb.ENTRY_STATUS_FAILED] * 1000},
        {"mode": 99},
        {"mode": -1},
        {"mode": 2**31 - 1},
        *({"request_id": value} for value in STRINGS[1:]),
    ],
    ids=short,
)
async def test_retry_job_with_bad_fields_is_an_invalid_argument(
    roomy_stub: pb_grpc.ImportServiceStub, job_id: str, fields: dict[str, Any]
) -> None:
    code = await outcome(roomy_stub.RetryJob(pb.RetryJobRequest(id=job_id, **fields)))
    # Repeated FAILED is a valid request; everything else here is not.
    if fields.get("statuses") == [pb.ENTRY_STATUS_FAILED] * 1000:
        assert code == grpc.StatusCode.OK
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("request_id", STRINGS[1:], ids=short)
async def test_revert_job_with_a_bad_request_id_is_an_invalid_argument(
    roomy_stub: pb_grpc.ImportServiceStub, job_id: str, request_id: str
) -> None:
    code = await outcome(
        roomy_stub.RevertJob(pb.RevertJobRequest(id=job_id, request_id=request_id))
    )
    # Each is too long, or not printable ASCII (a request id is a token).
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("statuses", [[99], [-1], [0], [pb.ENTRY_STATUS_FAILED]], ids=short)
async def test_export_all_rows_with_statuses_is_an_invalid_argument(
    roomy_stub: pb_grpc.ImportServiceStub, job_id: str, statuses: list[int]
) -> None:
    request = pb.ExportEntriesRequest(id=job_id, all_rows=True, statuses=statuses)
    code = await outcome(roomy_stub.ExportEntries(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "entries_request",
    [
        pb.ListEntriesRequest(across_retries=True, error_code="X"),
        pb.ListEntriesRequest(across_retries=True, statuses=[99]),
        pb.ListEntriesRequest(across_retries=True, page_token=HUGE),
        pb.ListEntriesRequest(across_retries=True, page_token="a\x00"),
        pb.ListEntriesRequest(across_retries=True, page_token="bm90IGEgdG9rZW4"),
    ],
    ids=short,
)
async def test_across_retries_with_bad_fields_is_an_invalid_argument(
    roomy_stub: pb_grpc.ImportServiceStub, job_id: str, entries_request: pb.ListEntriesRequest
) -> None:
    entries_request.id = job_id
    assert (
        await outcome(roomy_stub.ListEntries(entries_request)) == grpc.StatusCode.INVALID_ARGUMENT
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"retry_of": "not-a-uuid"},
        {"retry_of": HUGE},
        {"retry_of": "\x00"},
        {"retry_of": NO_JOB, "revertible": True, "dry_run": True},
        {"retry_of": NO_JOB, "import_type": "nope"},
        {"mode": 99},
        {"mode": -1},
    ],
    ids=short,
)
async def test_start_import_with_bad_new_spec_fields_is_refused_precisely(
    roomy_stub: pb_grpc.ImportServiceStub, spec: dict[str, Any]
) -> None:
    code = await outcome(start_import(roomy_stub, FILE, **spec))
    assert code in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


# Each was 500 INTERNAL: a body that is not UTF-8 (read outside the JSON check), and a key
# with a lone surrogate (valid JSON, "\ud800"), on which protobuf's ParseDict raises
# SystemError.
NOT_TEXT_BODIES = [b'{"requestId": "\xff"}', b'{"\\ud800": 1}']


@pytest.mark.parametrize("body", NOT_TEXT_BODIES, ids=short)
@pytest.mark.parametrize("action", ["retry", "revert"])
async def test_a_body_of_no_text_is_an_invalid_argument_over_http(
    make_app: AppFactory, action: str, body: bytes
) -> None:
    app = await make_app(http_port=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        job = await import_and_wait(pb_grpc.ImportServiceStub(channel), FILE)
    url = f"http://127.0.0.1:{app.http_port}/v1/jobs/{job.id}:{action}"
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/json"}
        async with session.post(url, data=body, headers=headers) as response:
            answer = await response.json()
    assert (response.status, answer["code"]) == (400, grpc.StatusCode.INVALID_ARGUMENT.value[0])


async def test_a_lone_surrogate_key_in_the_upload_header_is_an_invalid_argument(
    make_app: AppFactory,
) -> None:
    app = await make_app(http_port=0)
    url = f"http://127.0.0.1:{app.http_port}/v1/jobs:import"
    headers = {"Importd-Request": '{"spec": {"importType": "contacts", "\\ud800": 1}}'}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=FILE, headers=headers) as response,
    ):
        answer = await response.json()
    assert (response.status, answer["code"]) == (400, grpc.StatusCode.INVALID_ARGUMENT.value[0])
