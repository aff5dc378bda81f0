"""Metrics in the Prometheus text format on an HTTP port: rows processed, jobs by status,
RPC latency. One registry per Application (no global state), served by prometheus_client."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The service's metrics, and the HTTP endpoint that serves them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rows = Counter(
            "importd_rows_processed",
            "Rows whose outcome this replica decided, by import type and outcome.",
            ["import_type", "outcome"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "importd_jobs", "Jobs in the database by status.", ["status"], registry=self.registry
        )
        self.rpc_seconds = Histogram(
            "importd_rpc_duration_seconds",
            "Time to answer an RPC (to the end of the stream for streaming RPCs).",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.port: int | None = None
        self._server: Any = None

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics endpoint (in a thread); returns its port."""
        self._server, _ = start_http_server(port, host, registry=self.registry)
        self.port = int(self._server.server_port)
        return self.port

    def stop(self) -> None:
        """Stops the endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def count_rows(self, import_type: str, outcomes: Mapping[str, int]) -> None:
        """Adds outcomes this replica decided: a chunk's, or a file's rows that failed or were
        superseded at staging."""
        for outcome, rows in outcomes.items():
            self.rows.labels(import_type, outcome).inc(rows)

    def set_jobs(self, by_status: Mapping[str, int], statuses: tuple[str, ...]) -> None:
        """Sets the job gauge (statuses with no job read 0)."""
        for status in statuses:
            self.jobs.labels(status).set(by_status.get(status, 0))


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times every unary and server-streaming RPC (streams to their end), by method and
    status code, and client-streaming ones (StartImport) likewise."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = str(handler_call_details.method).rsplit("/", 1)[-1]
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._timed_call(method, handler.unary_unary), **serializers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._timed_call(method, handler.stream_unary), **serializers
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._timed_stream(method, handler.unary_stream), **serializers
            )
        return handler  # other shapes (reflection's bidirectional stream) go untimed

    def _timed_call(self, method: str, behavior: Any) -> Any:
        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            try:
                return await behavior(request, context)
            finally:
                self._observe(method, context, started)

        return timed

    def _timed_stream(self, method: str, behavior: Any) -> Any:
        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            finished = False
            try:
                async for message in behavior(request, context):
                    yield message
                finished = True
            finally:
                # A stream closed before its end was cancelled by the caller.
                self._observe(method, context, started, None if finished else "CANCELLED")

        return timed

    def _observe(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        started: float,
        unfinished: str | None = None,
    ) -> None:
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            name = code.name
        else:
            name = unfinished or ("OK" if not code else str(code))
        self._metrics.rpc_seconds.labels(method, name).observe(time.perf_counter() - started)
