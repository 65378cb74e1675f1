"""OpenTelemetry tracing: off unless OTEL_TRACES_EXPORTER names an exporter.

FastAPI's native telemetry makes the request spans (name "METHOD /route/template", attribute
http.route); SQLAlchemy's instrumentation adds one span per ORM query, and core/statements.py one
per named statement (those run on the driver, below SQLAlchemy's events). With tracing off
nothing is installed, so a request pays nothing for it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.typing import EventDict, WrappedLogger

from service import __version__
from service.core import statements
from service.core.config import Settings


def _exporter(settings: Settings) -> SpanExporter:
    if settings.otel_traces_exporter == "console":
        return ConsoleSpanExporter()
    # Reads the standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout) itself.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


def build_tracer_provider(settings: Settings) -> TracerProvider | None:
    if settings.otel_traces_exporter == "none":
        return None
    resource = Resource.create(
        {
            "service.name": settings.otel_service_name,
            "service.version": __version__,
            "deployment.environment.name": settings.environment.value,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    return provider


def fastapi_telemetry(provider: TracerProvider | None) -> dict[str, Any]:
    """FastAPI's own telemetry config: spans only when we have a provider; metrics stay ours."""
    if provider is None:
        return {"tracing": False, "metrics": False, "logs": False}
    return {"tracer_provider": provider, "metrics": False, "logs": False}


def instrument_database(engine: AsyncEngine, provider: TracerProvider) -> None:
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine,
        tracer_provider=provider,
        enable_commenter=False,
        # Its declared range stops below SQLAlchemy 2.1; the engine event API it uses is unchanged
        # (proven by tests/core/test_observability.py).
        skip_dep_check=True,
    )
    statements.trace_statements(provider.get_tracer("keelson.db", __version__))


def uninstrument_database() -> None:
    SQLAlchemyInstrumentor().uninstrument()
    statements.trace_statements(None)


def add_trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """structlog processor: every log line inside a span names its trace and span."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event
