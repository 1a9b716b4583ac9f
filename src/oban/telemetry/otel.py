"""OpenTelemetry tracing for oban, following the messaging semantic conventions.

Requires ``opentelemetry-api`` (``pip install 'oban[otel]'``) and an SDK configured by the
application.

>>> from oban.telemetry import otel
>>> otel.instrument()      # doctest: +SKIP
>>> otel.uninstrument()    # doctest: +SKIP

Enqueueing (``Oban.enqueue``/``enqueue_many``) records one PRODUCER span per call, named
``send <queue>`` (or ``send`` when the jobs go to several queues), a child of the current
span. Its context is injected with the text map propagator into each job's
``meta["otel"]`` (``{"traceparent": ..., "tracestate": ...}``), so it is stored with the
job.

Executing a job records a CONSUMER span ``process <queue>``: a child of the current
context (if any) with a link to the producer span found in ``meta["otel"]`` (or in the
top-level ``traceparent`` that Elixir's ``opentelemetry_oban`` writes). The span is the
current span while the worker runs, so spans the worker creates, in async and sync
workers alike, are its children. Failed attempts (retryable or discarded) get an error
status and an ``exception`` event.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

try:
    from opentelemetry import baggage, trace
    from opentelemetry import context as otel_context
    from opentelemetry.context import Context
    from opentelemetry.propagate import get_global_textmap
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
except ImportError as error:  # pragma: no cover - exercised without opentelemetry installed
    raise ImportError(
        "oban.telemetry.otel needs OpenTelemetry; install it with: pip install 'oban[otel]'"
    ) from error

from .. import __version__
from ..job import Job, JobState
from . import core

__all__ = ["HANDLER_ID", "META_KEY", "instrument", "uninstrument"]

#: The id the handlers are attached under.
HANDLER_ID = "oban.telemetry.otel"
#: The key of ``job.meta`` that holds the propagated trace context.
META_KEY = "otel"

_SYSTEM = "oban"
_SPAN_KEY = "otel_span"
_TOKEN_KEY = "otel_token"  # noqa: S105 - a dict key, not a secret
_FAILED = frozenset({JobState.RETRYABLE, JobState.DISCARDED})

_ENQUEUE_EVENTS = ["oban.enqueue.start", "oban.enqueue.stop", "oban.enqueue.exception"]
_JOB_EVENTS = ["oban.job.start", "oban.job.stop", "oban.job.exception"]

# The enqueue in progress in this context: (its jobs list, its span).
_sending: ContextVar[tuple[list[Job], Span] | None] = ContextVar("oban_otel_send", default=None)


def instrument(
    tracer_provider: trace.TracerProvider | None = None,
    propagator: TextMapPropagator | None = None,
) -> None:
    """Trace enqueueing and job execution.

    Args:
        tracer_provider: where spans go; the global tracer provider by default.
        propagator: how trace context is written to and read from job meta; the global
            text map propagator (W3C trace context and baggage by default) if not given.

    Calling it again replaces the previous instrumentation.
    """
    tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
    bridge = _Bridge(tracer, propagator)
    core.attach(HANDLER_ID, _ENQUEUE_EVENTS + _JOB_EVENTS, bridge.handle)


def uninstrument() -> None:
    """Stop tracing (no error if not instrumented). Spans in progress are not ended."""
    core.detach(HANDLER_ID)


class _Bridge:
    def __init__(self, tracer: Tracer, propagator: TextMapPropagator | None) -> None:
        self._tracer = tracer
        self._propagator = propagator

    @property
    def propagator(self) -> TextMapPropagator:
        return self._propagator if self._propagator is not None else get_global_textmap()

    def handle(self, name: str, meta: dict[str, Any]) -> None:
        if name == "oban.job.start":
            self._job_start(meta)
        elif name in ("oban.job.stop", "oban.job.exception"):
            self._job_stop(meta)
        elif name == "oban.enqueue.start":
            self._send_start(meta)
        else:
            self._send_stop(name, meta)

    # Enqueueing

    def _send_start(self, meta: dict[str, Any]) -> None:
        jobs: list[Job] = meta["jobs"]
        queues = {job.queue for job in jobs}
        workers = {job.worker for job in jobs}
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.operation": "publish",
        }
        if len(queues) == 1:
            (queue,) = queues
            attributes["messaging.destination.name"] = queue
            span_name = f"send {queue}"
        else:
            span_name = "send"
        if len(jobs) > 1:
            attributes["messaging.batch.message_count"] = len(jobs)
        if len(workers) == 1:
            attributes["oban.job.worker"] = next(iter(workers))
        span = self._tracer.start_span(span_name, kind=SpanKind.PRODUCER, attributes=attributes)
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        if carrier:
            for job in jobs:
                # A new dict: the caller's meta dict may be shared between jobs.
                job.meta = {**job.meta, META_KEY: dict(carrier)}
        _sending.set((jobs, span))

    def _send_stop(self, name: str, meta: dict[str, Any]) -> None:
        sending = _sending.get()
        if sending is None or sending[0] is not meta.get("jobs"):
            return
        _sending.set(None)
        jobs, span = sending
        if len(jobs) == 1 and jobs[0].id is not None:
            span.set_attribute("messaging.message.id", str(jobs[0].id))
        if name == "oban.enqueue.exception":
            _record_error(span, meta)
        span.end()

    # Execution

    def _job_start(self, meta: dict[str, Any]) -> None:
        job: Job = meta["job"]
        parent = otel_context.get_current()
        links = []
        carrier = job.meta.get(META_KEY)
        if not isinstance(carrier, dict) and isinstance(job.meta.get("traceparent"), str):
            carrier = job.meta  # written by Elixir's opentelemetry_oban
        if isinstance(carrier, dict):
            strings = {k: v for k, v in carrier.items() if isinstance(v, str)}
            created = self.propagator.extract(strings, context=Context())
            producer = trace.get_current_span(created).get_span_context()
            if producer.is_valid:
                links.append(Link(producer))
            for key, value in baggage.get_all(created).items():
                parent = baggage.set_baggage(key, value, context=parent)
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.operation": "process",
            "messaging.destination.name": job.queue,
            "oban.job.worker": job.worker,
            "oban.job.attempt": job.attempt,
            "oban.job.max_attempts": job.max_attempts,
            "oban.job.priority": job.priority,
        }
        if job.id is not None:
            attributes["messaging.message.id"] = str(job.id)
        if job.tags:
            attributes["oban.job.tags"] = list(job.tags)
        span = self._tracer.start_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        job.extra[_SPAN_KEY] = span
        job.extra[_TOKEN_KEY] = otel_context.attach(trace.set_span_in_context(span, parent))

    def _job_stop(self, meta: dict[str, Any]) -> None:
        job: Job = meta["job"]
        span = job.extra.pop(_SPAN_KEY, None)
        token = job.extra.pop(_TOKEN_KEY, None)
        if token is not None:
            otel_context.detach(token)
        if not isinstance(span, Span):
            return
        state = meta.get("state")
        if state is not None:
            span.set_attribute("oban.job.state", str(state))
        if state in _FAILED or "error_type" in meta:
            _record_error(span, meta)
        span.end()


def _record_error(span: Span, meta: dict[str, Any]) -> None:
    """Mark ``span`` failed with the error described in ``meta`` (we have no exception)."""
    error_type = str(meta.get("error_type") or "Error")
    message = str(meta.get("error_message") or "")
    event: dict[str, Any] = {"exception.type": error_type, "exception.message": message}
    if meta.get("traceback"):
        event["exception.stacktrace"] = str(meta["traceback"])
    span.add_event("exception", event)
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}" if message else error_type))
