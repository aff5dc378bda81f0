"""Tracing against real servers: one job's spans (its RPC, staging, chunks and webhook) share
one trace whichever replica runs them, a caller's trace is continued, and tracing off
records nothing."""

from __future__ import annotations

import asyncpg
import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.tracing import Tracing
from tests.conftest import AppFactory
from tests.rpc import start_import, wait_for_job, wait_until
from tests.webhook_receiver import Receiver

CONTACTS = b"email\n" + b"".join(b"p%d@x.com\n" % i for i in range(12))
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_PARENT = f"00-{CALLER_TRACE}-b7ad6b7169203331-01"


def exporting() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing.exporting(SimpleSpanProcessor(exporter)), exporter


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def test_spans_of_one_job_from_two_replicas_share_one_trace(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    receiver = await Receiver().start()
    api_tracing, api_spans = exporting()
    worker_tracing, worker_spans = exporting()
    api = await make_app(
        tracing=api_tracing, workers=0, webhook_deliverers=0, remote_allow_hosts="127.0.0.1"
    )
    await make_app(
        tracing=worker_tracing,
        workers=2,
        remote_allow_hosts="127.0.0.1",
        webhook_poll_seconds=0.05,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{api.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            receiver.secret = (await stub.GetWebhookSecret(pb.GetWebhookSecretRequest())).secret
            job = await start_import(stub, CONTACTS, webhook_url=receiver.url())
            await wait_for_job(stub, job.id)
            await wait_until(
                lambda: bool(named(worker_spans.get_finished_spans(), "importd.webhook"))
            )
    finally:
        await receiver.stop()

    api_finished = api_spans.get_finished_spans()
    [rpc] = named(api_finished, "/importd.v1.ImportService/StartImport")
    [staging] = named(api_finished, "importd.staging")
    worker_finished = worker_spans.get_finished_spans()
    chunks = named(worker_finished, "importd.chunk")
    [webhook] = named(worker_finished, "importd.webhook")
    assert len(chunks) == 3  # 12 rows in chunks of 4, all on the other replica
    assert {trace_id(s) for s in [rpc, staging, *chunks, webhook]} == {trace_id(rpc)}
    assert staging.parent is not None and rpc.context is not None
    assert staging.parent.span_id == rpc.context.span_id
    assert staging.context is not None
    for span in [*chunks, webhook]:
        assert span.parent is not None and span.parent.span_id == staging.context.span_id
        assert span.attributes is not None and span.attributes["importd.job_id"] == job.id
    assert staging.attributes is not None and staging.attributes["importd.job_id"] == job.id
    stored = await db.fetchval("SELECT trace_parent FROM import_jobs WHERE id = $1", job.id)
    assert stored.startswith(f"00-{trace_id(staging)}-{staging.context.span_id:016x}-")


async def test_a_callers_traceparent_is_continued(make_app: AppFactory) -> None:
    tracing, spans = exporting()
    app = await make_app(tracing=tracing, workers=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        job = await start_import(stub, CONTACTS)
        await wait_for_job(stub, job.id)
        await stub.GetJob(pb.GetJobRequest(id=job.id), metadata=(("traceparent", CALLER_PARENT),))
    get_jobs = named(spans.get_finished_spans(), "/importd.v1.ImportService/GetJob")
    [continued] = [s for s in get_jobs if trace_id(s) == CALLER_TRACE]
    assert continued.parent is not None and continued.parent.is_remote
    assert continued.parent.span_id == 0xB7AD6B7169203331


async def test_with_tracing_off_nothing_is_stored_with_the_job(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    job = await start_import(stub, CONTACTS)
    await wait_for_job(stub, job.id)
    assert await db.fetchval("SELECT trace_parent FROM import_jobs WHERE id = $1", job.id) is None
