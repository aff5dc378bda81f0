"""Bad input gets a precise answer, never INTERNAL (issue 9, items 5 and 6), against a real
server: every string field of every request within its documented limits, a NUL in a row
failing that row alone, and statuses that fit in gRPC's metadata whatever they say."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.api.limits import FIELDS, Labels, Text
from importd_server.api.status import MAX_MESSAGE_BYTES, maps_errors
from importd_server.errors import FieldViolation, InvalidArgument
from tests.rpc import entries_of, import_and_wait, rich_error, start_import

FILE = b"email\na@x.com\n"
# What a bad request may be told; never INTERNAL, UNKNOWN, or RESOURCE_EXHAUSTED (which
# is also what a client sees when a status overflows gRPC's metadata limit).
PRECISE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
# C0 control characters but the tab: no string field of any request takes one.
CONTROLS = {chr(c) for c in range(32)} - {"\t"}


def string_fields(message: Descriptor, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(request path, "Message.field") of each string field, labels' keys and values apart."""
    for field in message.fields:
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield f"{path}.key", f"{message.name}.{field.name}"
            yield f"{path}.value", f"{message.name}.{field.name}"
        elif field.message_type is not None:
            yield from string_fields(field.message_type, f"{path}.")
        elif field.type == FieldDescriptor.TYPE_STRING:
            yield path, f"{message.name}.{field.name}"


METHODS = pb.DESCRIPTOR.services_by_name["ImportService"].methods_by_name
# (RPC, request path, "Message.field"), e.g. ("StartImport", "spec.csv.quote", "CsvOptions.quote").
CASES = sorted(
    (name, path, rule)
    for name, method in METHODS.items()
    for path, rule in string_fields(method.input_type)
)


def max_chars(case: tuple[str, str, str]) -> int:
    """The documented limit of a case's field."""
    _, path, name = case
    rule = FIELDS[name]
    if isinstance(rule, Labels):
        return (rule.key if path.endswith(".key") else rule.value).max_chars
    assert isinstance(rule, Text)
    return rule.max_chars


def request(method: str, path: str, value: str, job_id: str) -> Message:
    """The method's request for an existing job (a dry-run import), one field set to value."""
    message: Any = getattr(pb, METHODS[method].input_type.name)()
    if method == "StartImport":
        message.spec.import_type = "contacts"
        message.spec.dry_run = True
    elif "id" in METHODS[method].input_type.fields_by_name:
        message.id = job_id
    *parents, leaf = path.split(".")
    target = message
    for parent in parents:
        target = getattr(target, parent)
    if parents[-1:] in (["labels"], ["column_map"]):
        if leaf == "key":
            target[value] = "email" if parents[-1] == "column_map" else "v"
        else:
            target["k"] = value
        return message
    setattr(target, leaf, value)
    return message


async def call(stub: pb_grpc.ImportServiceStub, method: str, message: Message) -> None:
    """Calls the RPC to its end: a stream is read through, an upload carries a small file."""
    if method == "StartImport":
        assert isinstance(message, pb.StartImportRequest)

        async def upload() -> AsyncIterator[pb.StartImportRequest]:
            yield message
            if not message.spec.source_uri:
                yield pb.StartImportRequest(chunk=FILE)

        await stub.StartImport(upload())
    elif method == "WatchJobs":
        # A stream without an end: its answer is the snapshot, or the refusal.
        stream = stub.WatchJobs(message)
        async for response in stream:
            if response.snapshot_complete:
                break
        stream.cancel()
    elif METHODS[method].server_streaming:
        async for _ in getattr(stub, method)(message):
            pass
    else:
        await getattr(stub, method)(message)


def refusal(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, dict[str, str]]:
    details = rich_error(error)
    return details.code, details.field_violations


@pytest.fixture
async def job_id(roomy_stub: pb_grpc.ImportServiceStub) -> str:
    """A finished job, for the RPCs about one job."""
    job = await import_and_wait(roomy_stub, FILE, dry_run=True)
    return job.id


# Strings of every class: any script, controls and NUL, and far beyond any limit (made by
# repetition, so a 200,000-character value costs Hypothesis one draw).
characters = st.characters(exclude_categories=("Cs",))
values = st.one_of(
    st.text(characters, max_size=40),
    st.text(st.sampled_from(sorted(CONTROLS)) | characters, min_size=1, max_size=10),
    st.builds(
        lambda piece, times: piece * times,
        st.text(characters, min_size=1, max_size=3),
        st.integers(1, 200_000),
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=st.sampled_from(CASES), value=values)
async def test_any_string_in_any_request_field_gets_a_precise_bounded_answer(
    roomy_stub: pb_grpc.ImportServiceStub, job_id: str, case: tuple[str, str, str], value: str
) -> None:
    method, path, _ = case
    try:
        await call(roomy_stub, method, request(method, path, value, job_id))
        error = None
    except grpc.aio.AioRpcError as caught:
        error = caught
    must_refuse = len(value) > max_chars(case) or not CONTROLS.isdisjoint(value)
    if error is None:
        assert not must_refuse, f"{method} took {path} = {value[:50]!r}"
        return
    code, violations = refusal(error)
    assert code in PRECISE, (method, path, error.details())
    assert len((error.details() or "").encode()) <= MAX_MESSAGE_BYTES
    if must_refuse:
        field = path.removesuffix(".key").removesuffix(".value")
        assert (code, field in violations) == (grpc.StatusCode.INVALID_ARGUMENT, True)


@pytest.mark.parametrize("rpc", ["StartImport", "ListJobs"])
async def test_a_100000_character_import_type_is_a_short_invalid_argument(
    stub: pb_grpc.ImportServiceStub, rpc: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if rpc == "StartImport":
            await start_import(stub, FILE, import_type="x" * 100_000)
        else:
            await stub.ListJobs(pb.ListJobsRequest(import_type="x" * 100_000))
    field = "spec.import_type" if rpc == "StartImport" else "import_type"
    assert refusal(caught.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        {field: "is longer than 63 characters (100000)"},
    )


@pytest.mark.parametrize(
    ("spec", "field", "description"),
    [
        (
            {"labels": {"te\x00am": "crm"}},
            "spec.labels",
            "key 'te\\x00am' has U+0000 at character 3;",
        ),
        (
            {"labels": {"team": "c\x00rm"}},
            "spec.labels",
            "value of 'team' has U+0000 at character 2;",
        ),
        ({"request_id": "r\x00"}, "spec.request_id", "has U+0000 at character 2;"),
        (
            {"request_id": "r" * 300_000},
            "spec.request_id",
            "is longer than 128 characters (300000)",
        ),
        ({"file_name": "a\x00.csv"}, "spec.file_name", "has U+0000 at character 2;"),
        ({"file_name": "a\n.csv"}, "spec.file_name", "has U+000A at character 2;"),
        (
            {"labels": {f"k{i}": "v" for i in range(65)}},
            "spec.labels",
            "has 65 labels, more than 64",
        ),
        (
            {"csv": pb.CsvOptions(delimiter="\x00")},
            "spec.csv.delimiter",
            "has U+0000 at character 1;",
        ),
        (
            {"csv": pb.CsvOptions(delimiter=";", quote=";")},
            "spec.csv.quote",
            "must differ from the delimiter",
        ),
    ],
    ids=[
        "nul-in-label-key",
        "nul-in-label-value",
        "nul-in-request-id",
        "huge-request-id",
        "nul-in-file-name",
        "newline-in-file-name",
        "too-many-labels",
        "nul-delimiter",
        "quote-equal-to-delimiter",
    ],
)
async def test_a_bad_spec_string_is_invalid_argument_naming_the_field_and_stores_nothing(
    stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
    spec: dict[str, Any],
    field: str,
    description: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(stub, FILE, **spec)
    code, violations = refusal(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations) == [field]
    assert violations[field].startswith(description)
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 0


def csv_file(bad: bytes) -> bytes:
    return b"email,first_name\na@x.com,Ann\n" + bad + b"\nc@x.com,Cy\n"


def jsonl_file(bad: bytes) -> bytes:
    return b'{"email": "a@x.com", "first_name": "Ann"}\n' + bad + b'\n{"email": "c@x.com"}\n'


@pytest.mark.parametrize(
    ("data", "file_format", "error"),
    [
        (
            csv_file(b"b@x.com,B\x00b"),
            pb.FILE_FORMAT_CSV,
            ("INVALID_CHARACTER", "first_name", "B\ufffdb", "contains a NUL character"),
        ),
        (
            jsonl_file(b'{"email": "b@x.com", "first_name": "B\\u0000b"}'),
            pb.FILE_FORMAT_JSONL,
            ("INVALID_CHARACTER", "first_name", "B\ufffdb", "contains a NUL character"),
        ),
        (
            jsonl_file(b'{"email": "b@x.com", "first_name": "B\\ud800b"}'),
            pb.FILE_FORMAT_JSONL,
            ("INVALID_CHARACTER", "first_name", "B\ufffdb", "contains a lone surrogate"),
        ),
        (
            jsonl_file(b'{"email": "b@x.com", "first\\u0000name": "Bob"}'),
            pb.FILE_FORMAT_JSONL,
            (
                "INVALID_CHARACTER",
                "",
                '{"email": "b@x.com", "first\\u0000name": "Bob"}',
                "a key contains a NUL character",
            ),
        ),
        (
            jsonl_file(b'{"email": "b@x.com", "first_name": "B\x00b"}'),
            pb.FILE_FORMAT_JSONL,
            (
                "INVALID_JSON",
                "",
                '{"email": "b@x.com", "first_name": "B\ufffdb"}',
                "not valid JSON",
            ),
        ),
    ],
    ids=[
        "csv-nul-byte",
        "jsonl-nul-escape",
        "jsonl-lone-surrogate",
        "jsonl-nul-in-key",
        "jsonl-raw-nul",
    ],
)
async def test_a_nul_in_a_row_fails_that_row_alone_and_the_rest_imports(
    stub: pb_grpc.ImportServiceStub,
    data: bytes,
    file_format: int,
    error: tuple[str, str, str, str],
) -> None:
    job = await import_and_wait(stub, data, format=file_format)
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert (job.total_rows, job.created_count, job.failed_count) == (3, 2, 1)
    [failed] = await entries_of(stub, job.id, pb.ENTRY_STATUS_FAILED)
    assert failed.row_number == 2
    [row_error] = failed.errors
    code, field, value, message = error
    assert (row_error.code, row_error.field, row_error.value) == (code, field, value)
    assert row_error.message.startswith(message)
    exported = b"".join(
        [piece.chunk async for piece in stub.ExportEntries(pb.ExportEntriesRequest(id=job.id))]
    )
    assert exported.count(b"\n") == 2  # the header and the failed row


class Refuser(pb_grpc.ImportServiceServicer):
    """Answers GetJob with whatever error a test sets, through the real error mapping."""

    error: InvalidArgument = InvalidArgument("unset")

    @maps_errors
    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:
        raise self.error


@pytest.fixture
async def refuser() -> AsyncIterator[tuple[Refuser, pb_grpc.ImportServiceStub]]:
    """A real gRPC server on a free port serving a Refuser, and a stub on it."""
    servicer = Refuser()
    server = grpc.aio.server()
    pb_grpc.add_ImportServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield servicer, pb_grpc.ImportServiceStub(channel)
    await server.stop(None)


# Long texts cheaply: a short piece of any script, repeated up to 20,000 times.
long_texts = st.builds(
    lambda piece, times: piece * times,
    st.text(characters, min_size=1, max_size=4),
    st.integers(1, 20_000),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    message=long_texts,
    violations=st.lists(st.tuples(long_texts, long_texts), max_size=200),
    metadata=st.dictionaries(st.text(characters, min_size=1, max_size=10), long_texts, max_size=50),
)
async def test_a_status_too_big_for_grpc_metadata_is_cut_not_lost(
    refuser: tuple[Refuser, pb_grpc.ImportServiceStub],
    message: str,
    violations: list[tuple[str, str]],
    metadata: dict[str, str],
) -> None:
    servicer, stub = refuser
    servicer.error = InvalidArgument(
        message,
        reason="HUGE",
        field_violations=tuple(FieldViolation(f, d) for f, d in violations),
        metadata=metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJob(pb.GetJobRequest(id=str(uuid.uuid4())))
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert message.startswith(cut(status.message))
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    assert info.reason == "HUGE"
    for key, value in info.metadata.items():  # whichever entries are left, each one cut
        assert any(k.startswith(cut(key)) and metadata[k].startswith(cut(value)) for k in metadata)
    shown = []
    if len(status.details) > 1:
        assert status.details[1].Unpack(bad_request)
        shown = [(v.field, v.description) for v in bad_request.field_violations]
    assert len(shown) <= len(violations)
    for (field, description), (sent_field, sent_description) in zip(
        shown, violations, strict=False
    ):
        assert sent_field.startswith(cut(field))  # the first ones, in order
        assert sent_description.startswith(cut(description))


def cut(text: str) -> str:
    """What a cut text still holds of the original."""
    return text.removesuffix("...")
