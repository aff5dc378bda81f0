"""`importd serve` with IMPORTD_OTEL=on exports its spans over OTLP to the standard
OTEL_EXPORTER_OTLP_ENDPOINT (here a collector on 127.0.0.1 made of the OTLP protos), and
its log lines carry the trace id of the span they were written in."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.acceptance.processes import serve
from tests.rpc import start_import, wait_for_job

CONTACTS = b"email\n" + b"".join(b"p%d@x.com\n" % i for i in range(12))


class Collector(otlp_grpc.TraceServiceServicer):
    """Keeps every span exported to it."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    async def Export(
        self, request: otlp.ExportTraceServiceRequest, context: Any
    ) -> otlp.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return otlp.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    server = grpc.aio.server()
    kept = Collector()
    otlp_grpc.add_TraceServiceServicer_to_server(kept, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield kept, port
    await server.stop(0)


async def test_spans_go_to_the_otlp_endpoint_and_log_lines_carry_their_trace(
    collector: tuple[Collector, int],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept, port = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # milliseconds
    with serve(tmp_path, database_url, otel="on", workers="2", chunk_size="4") as (
        served_port,
        process,
    ):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served_port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            job = await start_import(stub, CONTACTS)
            await wait_for_job(stub, job.id)
        process.send_signal(signal.SIGTERM)  # a clean stop exports what is left
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert process.stderr is not None
        lines = [json.loads(line) for line in process.stderr.read().decode().splitlines()]

    by_name: dict[str, list[Span]] = {}
    for span in kept.spans:
        by_name.setdefault(span.name, []).append(span)
    [staging] = by_name["importd.staging"]
    chunks = by_name["importd.chunk"]
    [start] = by_name["/importd.v1.ImportService/StartImport"]
    assert len(chunks) == 3
    assert {s.trace_id for s in [start, staging, *chunks]} == {staging.trace_id}
    [received] = [line for line in lines if line.get("event") == "file received"]
    assert received["trace_id"] == staging.trace_id.hex()
    assert received["span_id"] == staging.span_id.hex()
    assert received["job_id"] == job.id
