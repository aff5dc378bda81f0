"""Tracing and webhook settings refused when wrong, and the log processor that puts trace
and span ids on each line."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from importd_server.config import Settings
from importd_server.logs import add_trace_ids
from importd_server.tracing import Tracing


def test_log_lines_inside_a_span_carry_its_ids_and_others_none() -> None:
    tracing = Tracing.exporting(SimpleSpanProcessor(InMemorySpanExporter()))
    with tracing.span("importd.chunk") as span:
        inside = add_trace_ids(None, "info", {"event": "chunk done"})
    context = span.get_span_context()
    assert inside == {
        "event": "chunk done",
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }
    assert add_trace_ids(None, "info", {"event": "idle"}) == {"event": "idle"}


def test_with_tracing_off_there_is_no_span_and_no_trace_parent() -> None:
    tracing = Tracing.from_settings(Settings())
    assert not tracing.enabled
    assert tracing.interceptors() == ()
    with tracing.span("importd.staging"):
        assert tracing.trace_parent() is None
        assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}


def test_a_span_continues_a_stored_trace_parent() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing.exporting(SimpleSpanProcessor(exporter))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.span("importd.chunk", parent):
        assert tracing.trace_parent() is not None
    [span] = exporter.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.parent.span_id == 0xB7AD6B7169203331


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"otel": "yes"}, "otel must be on or off"),
        ({"webhook_key": "short"}, "webhook_key must have at least 32 characters"),
        ({"webhook_deliverers": -1}, "webhook_deliverers must not be negative"),
        ({"webhook_retry_seconds": 0}, "webhook_retry_seconds must be more than 0"),
        (
            {"webhook_timeout_seconds": 30, "webhook_lease_seconds": 30},
            "webhook_lease_seconds must be more than webhook_timeout_seconds",
        ),
    ],
    ids=["otel", "key", "deliverers", "retry", "lease"],
)
def test_wrong_settings_stop_the_start_up(overrides: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings(**overrides)  # type: ignore[arg-type]


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"IMPORTD_OTEL": "on", "IMPORTD_WEBHOOK_RETRY_SECONDS": "60"})
    assert (settings.otel, settings.webhook_retry_seconds) == ("on", 60.0)
