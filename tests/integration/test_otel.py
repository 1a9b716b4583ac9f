"""oban.telemetry.otel: producer/consumer spans and trace propagation through the database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, worker
from oban.telemetry import otel
from tests.helpers import eventually

# One provider for the whole module, never installed globally: instrument() gets it passed.
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("tests.integration.test_otel")

QUEUE = "otel"


@pytest.fixture(autouse=True)
def _instrumented() -> Iterator[None]:
    EXPORTER.clear()
    otel.instrument(tracer_provider=PROVIDER)
    try:
        yield
    finally:
        otel.uninstrument()
        EXPORTER.clear()


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


@worker(queue=QUEUE)
class OtelAsyncTracedWorker:
    async def process(self, job: Job) -> Any:
        with TRACER.start_as_current_span("otel-async-work"):
            return None


@worker(queue=QUEUE)
class OtelSyncTracedWorker:
    def process(self, job: Job) -> Any:
        with TRACER.start_as_current_span("otel-sync-work"):
            return None


@worker(queue=QUEUE)
class OtelFailingWorker:
    async def process(self, job: Job) -> Any:
        raise ValueError(f"otel-boom-{job.id}")


@worker(queue=QUEUE)
class OtelPlainWorker:
    async def process(self, job: Job) -> Any:
        return None


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _spans(kind: SpanKind | None = None, name: str | None = None) -> list[ReadableSpan]:
    return [
        span
        for span in EXPORTER.get_finished_spans()
        if (kind is None or span.kind == kind) and (name is None or span.name == name)
    ]


def _context(span: ReadableSpan) -> SpanContext:
    ctx = span.get_span_context()
    assert ctx is not None  # ReadableSpan types its context as optional
    return ctx


def _traceparent(span: ReadableSpan) -> str:
    ctx = _context(span)
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def _state_is(oban: Oban, job_id: int | None, state: str) -> Job | None:
    assert job_id is not None
    found = await oban.get_job(job_id)
    return found if found is not None and found.state == state else None


async def _stored_meta(sql: Callable[..., Any], job_id: int | None) -> dict[str, Any]:
    assert job_id is not None
    ((meta,),) = await sql("SELECT meta FROM oban_jobs WHERE id = %s", (job_id,))
    return dict(meta)


async def _run_one(
    make_oban: Callable[..., Oban], enqueue: Callable[[], Any], state: str = "completed"
) -> tuple[Job, ReadableSpan]:
    """Enqueue inside an application span, run the job; return it and the app span."""
    oban = make_oban(queues={QUEUE: 5})
    async with oban:
        with TRACER.start_as_current_span("app-request"):
            job = await enqueue()
        await eventually(lambda: _state_is(oban, job.id, state), message=f"job {state}")
        await eventually(lambda: _spans(SpanKind.CONSUMER), message="consumer span ended")
    [app] = _spans(name="app-request")
    return job, app


# ---------------------------------------------------------------------------------------------
# Enqueueing
# ---------------------------------------------------------------------------------------------


async def test_enqueue_records_a_producer_span_under_the_application_span(oban: Oban) -> None:
    with TRACER.start_as_current_span("app-request"):
        job = await oban.enqueue(OtelPlainWorker.new({"n": 1}))

    [app] = _spans(name="app-request")
    [producer] = _spans(SpanKind.PRODUCER)
    assert producer.name == f"send {QUEUE}"
    assert producer.parent is not None
    assert producer.parent.span_id == _context(app).span_id
    assert _context(producer).trace_id == _context(app).trace_id
    attributes = dict(producer.attributes or {})
    assert attributes["messaging.system"] == "oban"
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.operation"] == "publish"
    assert attributes["messaging.destination.name"] == QUEUE
    assert attributes["messaging.message.id"] == str(job.id)
    assert attributes["oban.job.worker"] == OtelPlainWorker._worker_name
    assert "messaging.batch.message_count" not in attributes
    assert producer.status.status_code == StatusCode.UNSET


async def test_the_producer_context_is_stored_in_the_job_meta(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with TRACER.start_as_current_span("app-request"):
        job = await oban.enqueue(OtelPlainWorker.new({}, meta={"keep": "me"}))

    [producer] = _spans(SpanKind.PRODUCER)
    stored = await _stored_meta(sql, job.id)
    assert stored["keep"] == "me"
    assert stored[otel.META_KEY]["traceparent"] == _traceparent(producer)
    assert job.meta[otel.META_KEY]["traceparent"] == _traceparent(producer)


async def test_enqueue_does_not_mutate_a_meta_dict_shared_by_the_caller(oban: Oban) -> None:
    shared = {"tenant": "acme"}
    await oban.enqueue(Job(OtelPlainWorker._worker_name, queue=QUEUE, meta=shared))

    assert shared == {"tenant": "acme"}


async def test_enqueue_many_records_one_producer_span_with_the_batch_count(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with TRACER.start_as_current_span("app-request"):
        jobs = await oban.enqueue_many([OtelPlainWorker.new({"n": n}) for n in range(3)])

    [producer] = _spans(SpanKind.PRODUCER)
    assert producer.name == f"send {QUEUE}"
    attributes = dict(producer.attributes or {})
    assert attributes["messaging.batch.message_count"] == 3
    assert attributes["messaging.destination.name"] == QUEUE
    assert attributes["messaging.operation.type"] == "send"
    for job in jobs:
        stored = await _stored_meta(sql, job.id)
        assert stored[otel.META_KEY]["traceparent"] == _traceparent(producer)


async def test_a_batch_across_queues_is_one_send_span_without_a_destination(oban: Oban) -> None:
    await oban.enqueue_many(
        OtelPlainWorker.new({}, queue="otel_a"), OtelPlainWorker.new({}, queue="otel_b")
    )

    [producer] = _spans(SpanKind.PRODUCER)
    assert producer.name == "send"
    attributes = dict(producer.attributes or {})
    assert attributes["messaging.batch.message_count"] == 2
    assert "messaging.destination.name" not in attributes


async def test_a_failed_insert_ends_the_producer_span_with_an_error(
    oban: Oban, pool: AsyncConnectionPool[Any]
) -> None:
    async with pool.connection() as conn:
        with pytest.raises(Exception, match="division by zero"):
            await conn.execute("SELECT 1/0")
        # The transaction is aborted: the insert fails in the database.
        with pytest.raises(Exception, match="aborted"):
            await oban.enqueue(OtelPlainWorker.new({}), conn=conn)
        await conn.rollback()

    [producer] = _spans(SpanKind.PRODUCER)
    assert producer.status.status_code == StatusCode.ERROR
    [event] = [e for e in producer.events if e.name == "exception"]
    assert "aborted" in str((event.attributes or {})["exception.message"])


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


async def test_execution_records_a_consumer_span_linked_to_the_producer(
    make_oban: Callable[..., Oban],
) -> None:
    job, _app = await _run_one(make_oban, lambda: OtelAsyncTracedWorker.enqueue({}))

    [producer] = _spans(SpanKind.PRODUCER)
    [consumer] = _spans(SpanKind.CONSUMER)
    assert consumer.name == f"process {QUEUE}"
    [link] = consumer.links
    assert link.context.trace_id == _context(producer).trace_id
    assert link.context.span_id == _context(producer).span_id
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.system"] == "oban"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.operation"] == "process"
    assert attributes["messaging.destination.name"] == QUEUE
    assert attributes["messaging.message.id"] == str(job.id)
    assert attributes["oban.job.worker"] == OtelAsyncTracedWorker._worker_name
    assert attributes["oban.job.attempt"] == 1
    assert attributes["oban.job.state"] == "completed"
    assert consumer.status.status_code != StatusCode.ERROR
    # The queue was started outside any span: the execution is a trace of its own, linked.
    assert consumer.parent is None


async def test_spans_of_an_async_worker_are_children_of_the_consumer_span(
    make_oban: Callable[..., Oban],
) -> None:
    await _run_one(make_oban, lambda: OtelAsyncTracedWorker.enqueue({}))

    [consumer] = _spans(SpanKind.CONSUMER)
    [work] = _spans(name="otel-async-work")
    assert work.parent is not None
    assert work.parent.span_id == _context(consumer).span_id
    assert _context(work).trace_id == _context(consumer).trace_id


async def test_spans_of_a_sync_worker_are_children_of_the_consumer_span(
    make_oban: Callable[..., Oban],
) -> None:
    await _run_one(make_oban, lambda: OtelSyncTracedWorker.enqueue({}))

    [consumer] = _spans(SpanKind.CONSUMER)
    [work] = _spans(name="otel-sync-work")
    assert work.parent is not None
    assert work.parent.span_id == _context(consumer).span_id
    assert _context(work).trace_id == _context(consumer).trace_id


async def test_a_failing_job_has_an_error_consumer_span_with_an_exception_event(
    make_oban: Callable[..., Oban],
) -> None:
    job, _app = await _run_one(make_oban, lambda: OtelFailingWorker.enqueue({}), state="retryable")

    [consumer] = _spans(SpanKind.CONSUMER)
    assert consumer.status.status_code == StatusCode.ERROR
    assert dict(consumer.attributes or {})["oban.job.state"] == "retryable"
    [event] = [e for e in consumer.events if e.name == "exception"]
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == f"otel-boom-{job.id}"


async def test_a_discarded_job_has_an_error_consumer_span(
    make_oban: Callable[..., Oban],
) -> None:
    await _run_one(
        make_oban, lambda: OtelFailingWorker.enqueue({}, max_attempts=1), state="discarded"
    )

    [consumer] = _spans(SpanKind.CONSUMER)
    assert consumer.status.status_code == StatusCode.ERROR
    assert dict(consumer.attributes or {})["oban.job.state"] == "discarded"


async def test_a_job_without_trace_context_gets_an_unlinked_consumer_span(
    make_oban: Callable[..., Oban],
) -> None:
    otel.uninstrument()
    oban = make_oban(queues={QUEUE: 5})
    async with oban:
        job = await OtelPlainWorker.enqueue({})
        assert otel.META_KEY not in job.meta
        otel.instrument(tracer_provider=PROVIDER)
        await eventually(lambda: _state_is(oban, job.id, "completed"), message="completed")
        await eventually(lambda: _spans(SpanKind.CONSUMER), message="consumer span ended")

    assert _spans(SpanKind.PRODUCER) == []
    [consumer] = _spans(SpanKind.CONSUMER)
    assert list(consumer.links) == []
    assert dict(consumer.attributes or {})["messaging.message.id"] == str(job.id)


async def test_a_top_level_traceparent_from_elixir_is_linked(
    make_oban: Callable[..., Oban],
) -> None:
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    otel.uninstrument()
    oban = make_oban(queues={QUEUE: 5})
    async with oban:
        traceparent = f"00-{trace_id:032x}-{span_id:016x}-01"
        job = await OtelPlainWorker.enqueue({}, meta={"traceparent": traceparent})
        otel.instrument(tracer_provider=PROVIDER)
        await eventually(lambda: _state_is(oban, job.id, "completed"), message="completed")
        await eventually(lambda: _spans(SpanKind.CONSUMER), message="consumer span ended")

    [consumer] = _spans(SpanKind.CONSUMER)
    [link] = consumer.links
    assert (link.context.trace_id, link.context.span_id) == (trace_id, span_id)


# ---------------------------------------------------------------------------------------------
# Uninstrument
# ---------------------------------------------------------------------------------------------


async def test_uninstrument_stops_producing_spans(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    otel.uninstrument()

    oban = make_oban(queues={QUEUE: 5})
    async with oban:
        with TRACER.start_as_current_span("app-request"):
            job = await OtelAsyncTracedWorker.enqueue({})
        await eventually(lambda: _state_is(oban, job.id, "completed"), message="completed")

    assert _spans(SpanKind.PRODUCER) == []
    assert _spans(SpanKind.CONSUMER) == []
    assert otel.META_KEY not in await _stored_meta(sql, job.id)
    # The worker's own span still exists, as a root: nothing oban-made around it.
    [work] = _spans(name="otel-async-work")
    assert work.parent is None
