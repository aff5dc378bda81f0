"""Tracing: OpenTelemetry spans for each RPC, a job's staging, each chunk and each webhook
attempt, all in the job's one trace whichever replica runs them. Off unless IMPORTD_OTEL=on.

Each Application has its own TracerProvider (none when off): no global provider is set, so
two servers in one process trace apart. A job keeps the W3C traceparent of the span that
created it (`import_jobs.trace_parent`); work on the job anywhere starts from it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from importd_server.config import Settings

TRACER_NAME = "importd"
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """The replica's tracer: a real one exporting spans, or a no-op one when tracing is off."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self.tracer: trace.Tracer = (
            provider.get_tracer(TRACER_NAME) if provider is not None else trace.NoOpTracer()
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing:
        """Off, or exporting over OTLP/gRPC as the standard OTEL_EXPORTER_OTLP_* variables
        say (OTEL_EXPORTER_OTLP_ENDPOINT, by default http://localhost:4317)."""
        if settings.otel == "off":
            return cls()
        # Imported only when on: the exporter loads its own gRPC stubs.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return cls.exporting(BatchSpanProcessor(OTLPSpanExporter()))

    @classmethod
    def exporting(cls, processor: SpanProcessor) -> Tracing:
        """Tracing on, each finished span handed to `processor` (tests use an in-memory one)."""
        # The standard OTEL_SERVICE_NAME wins; "importd" rather than "unknown_service".
        service = os.environ.get("OTEL_SERVICE_NAME") or "importd"
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
        provider.add_span_processor(processor)
        return cls(provider)

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded."""
        return self._provider is not None

    def interceptors(self) -> tuple[grpc.aio.ServerInterceptor, ...]:
        """The gRPC interceptor that makes a span per RPC (continuing the caller's trace when
        its metadata carries a traceparent); none when off. Health checks go untraced."""
        if self._provider is None:
            return ()
        untraced = filters.negate(filters.service_prefix("grpc."))
        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self._provider, filter_=untraced
        )
        return (interceptor,)

    def trace_parent(self) -> str | None:
        """The W3C traceparent of the current span, to store with a job; None when no span is
        being recorded (tracing off)."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent")

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        trace_parent: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Iterator[trace.Span]:
        """A span made current for the block: a child of `trace_parent` (a job's stored
        context, from any replica) when given, else of the current span."""
        parent = _PROPAGATOR.extract({"traceparent": trace_parent}) if trace_parent else None
        with self.tracer.start_as_current_span(
            name, context=parent, attributes=attributes
        ) as current:
            yield current

    def shutdown(self) -> None:
        """Exports what is left and stops."""
        if self._provider is not None:
            self._provider.shutdown()
