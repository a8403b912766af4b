"""The OpenTelemetry integration: each instrument's name, type, unit and values, per pool; pools
that stop being reported; spans for slow acquires, children of the caller's span.

Metrics are read with the SDK's in-memory reader and spans with its in-memory exporter, from
providers made per test and passed explicitly: no global provider is set. Time comes from a
FakeClock where a duration is asserted exactly.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import acquire, wait_for_waiters, wait_until
from opentelemetry.metrics import Histogram as HistogramInstrument
from opentelemetry.metrics import Meter
from opentelemetry.metrics import MeterProvider as ApiMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import Attributes

from aiodbpool import Pool, PoolTimeout
from aiodbpool.drivers.fake import FakeClock, FakeConnection, FakeDriver
from aiodbpool.histogram import DURATION_BUCKETS
from aiodbpool.integrations.opentelemetry import SLOW_ACQUIRE_SPAN, instrument

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
ASYNC_COUNTERS = (
    "db.client.connection.count",
    "db.client.connection.idle.max",
    "db.client.connection.idle.min",
    "db.client.connection.max",
    "db.client.connection.pending_requests",
)
HISTOGRAMS = (
    "db.client.connection.create_time",
    "db.client.connection.wait_time",
    "db.client.connection.use_time",
)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def _pool(
    name: str = "app", clock: FakeClock | None = None, **options: Any
) -> Pool[FakeConnection]:
    settings: dict[str, Any] = {"name": name, "validate_after_idle": None, "clock": clock}
    settings.update(options)
    return Pool(FakeDriver(), **settings)


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """What one collection gives, by instrument name; every metric is aiodbpool's."""
    data = reader.get_metrics_data()
    found: dict[str, Metric] = {}
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "aiodbpool"
            assert scope_metrics.scope.version == "0.1.0"
            assert scope_metrics.schema_url == SCHEMA_URL
            for metric in scope_metrics.metrics:
                assert metric.name not in found, f"{metric.name} reported twice"
                found[metric.name] = metric
    return found


def numbers(metric: Metric) -> dict[tuple[tuple[str, Any], ...], float]:
    """A Sum's values by their attributes (sorted pairs)."""
    assert isinstance(metric.data, Sum)
    values = {}
    for point in metric.data.data_points:
        assert isinstance(point, NumberDataPoint)
        values[tuple(sorted((point.attributes or {}).items()))] = point.value
    return values


def per_pool(metric: Metric) -> dict[str, float]:
    """A Sum's values by pool, for an instrument whose only attribute is the pool's name."""
    values = {}
    for attributes, value in numbers(metric).items():
        assert [key for key, _ in attributes] == [POOL_NAME]
        values[attributes[0][1]] = value
    return values


def connection_count(metric: Metric) -> dict[tuple[str, str], float]:
    """``db.client.connection.count`` by (pool, state)."""
    values = {}
    for attributes, value in numbers(metric).items():
        named = dict(attributes)
        assert set(named) == {POOL_NAME, STATE}
        values[(named[POOL_NAME], named[STATE])] = value
    return values


def reported_pools(reported: dict[str, Metric]) -> set[str]:
    """The pools the asynchronous instruments reported in one collection."""
    return {
        str((point.attributes or {})[POOL_NAME])
        for name in ASYNC_COUNTERS
        if name in reported and isinstance(reported[name].data, Sum)
        for point in cast(Sum, reported[name].data).data_points
    }


def histogram_points(metric: Metric) -> dict[str, HistogramDataPoint]:
    """A histogram's data points by pool."""
    assert isinstance(metric.data, Histogram)
    points = {}
    for point in metric.data.data_points:
        assert dict(point.attributes or {}).keys() == {POOL_NAME}
        points[str((point.attributes or {})[POOL_NAME])] = point
    return points


def duration_ns(span: ReadableSpan) -> int:
    assert span.start_time is not None
    assert span.end_time is not None
    return span.end_time - span.start_time


async def test_every_instrument_has_its_conventional_name_type_unit_and_values(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    clock = FakeClock()
    driver = FakeDriver()
    pool = Pool(driver, name="app", min_size=1, max_size=2, clock=clock, validate_after_idle=None)
    telemetry = instrument(pool, meter_provider=meter_provider)  # before open: its connect counts
    async with pool:
        first = await pool.acquire()  # the idle connection open() made: no wait
        driver.stall_connects()
        second_task = asyncio.create_task(acquire(pool))
        await wait_until(lambda: driver.stalled == 1)
        # Collected in another thread, as the SDK's periodic reader does.
        connecting = await asyncio.to_thread(collect, reader)
        assert connection_count(connecting["db.client.connection.count"]) == {
            ("app", "idle"): 0,
            ("app", "used"): 1,  # the connection being opened is neither
        }
        assert per_pool(connecting["db.client.connection.pending_requests"]) == {"app": 1}
        clock.advance(0.25)
        driver.heal()
        second = await second_task  # waited 0.25 s for its connect
        third_task = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)

        during = collect(reader)
        assert connection_count(during["db.client.connection.count"]) == {
            ("app", "idle"): 0,
            ("app", "used"): 2,
        }
        assert per_pool(during["db.client.connection.pending_requests"]) == {"app": 1}

        clock.advance(1.0)
        await pool.release(first)  # held 1.25 s; the waiter gets it after 1.0 s
        third = await third_task
        clock.advance(0.5)
        await pool.release(second)  # held 1.5 s
        await pool.release(third)  # held 0.5 s

        after = collect(reader)

    kinds = {
        name: (type(metric.data).__name__, getattr(metric.data, "is_monotonic", None), metric.unit)
        for name, metric in after.items()
    }
    assert kinds == {
        "db.client.connection.count": ("Sum", False, "{connection}"),
        "db.client.connection.idle.max": ("Sum", False, "{connection}"),
        "db.client.connection.idle.min": ("Sum", False, "{connection}"),
        "db.client.connection.max": ("Sum", False, "{connection}"),
        "db.client.connection.pending_requests": ("Sum", False, "{request}"),
        "db.client.connection.create_time": ("Histogram", None, "s"),
        "db.client.connection.wait_time": ("Histogram", None, "s"),
        "db.client.connection.use_time": ("Histogram", None, "s"),
    }  # no timeout yet: the counter has no series (see the timeout test)
    assert all(metric.description for metric in after.values())

    assert connection_count(after["db.client.connection.count"]) == {
        ("app", "idle"): 2,
        ("app", "used"): 0,
    }
    assert per_pool(after["db.client.connection.idle.max"]) == {"app": 2}
    assert per_pool(after["db.client.connection.idle.min"]) == {"app": 1}
    assert per_pool(after["db.client.connection.max"]) == {"app": 2}
    assert per_pool(after["db.client.connection.pending_requests"]) == {"app": 0}

    durations = {
        name: (point.count, point.sum, point.min, point.max)
        for name in HISTOGRAMS
        for pool_name, point in histogram_points(after[name]).items()
        if pool_name == "app"
    }
    assert durations == {
        "db.client.connection.create_time": (2, 0.25, 0.0, 0.25),
        "db.client.connection.wait_time": (3, 1.25, 0.0, 1.0),
        "db.client.connection.use_time": (3, 3.25, 0.5, 1.5),
    }
    wait_time = histogram_points(after["db.client.connection.wait_time"])["app"]
    assert tuple(wait_time.explicit_bounds) == DURATION_BUCKETS
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    for seconds in (0.0, 0.25, 1.0):  # a bucket holds the durations up to its bound
        expected[next(i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound)] += 1
    assert list(wait_time.bucket_counts) == expected
    telemetry.close()


async def test_timeouts_are_counted(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    async with _pool(max_size=1) as pool:
        instrument(pool, meter_provider=meter_provider)
        async with pool.acquire():
            for _ in range(2):
                with pytest.raises(PoolTimeout):
                    await pool.acquire(timeout=0.001)

    timeouts = collect(reader)["db.client.connection.timeouts"]
    assert timeouts.unit == "{timeout}"
    assert isinstance(timeouts.data, Sum)
    assert timeouts.data.is_monotonic
    assert per_pool(timeouts) == {"app": 2}


async def test_two_pools_share_the_instruments_and_are_reported_apart(
    reader: InMemoryMetricReader, meter_provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    with caplog.at_level(logging.WARNING):
        async with (
            _pool("orders", clock, min_size=1, max_size=3) as orders,
            _pool("users", clock, max_size=5) as users,
        ):
            instrument(orders, meter_provider=meter_provider)
            instrument(users, meter_provider=meter_provider)
            async with users.acquire():
                clock.advance(2.0)
            reported = collect(reader)
    # The second pool made no instruments of its own (the SDK warns of a duplicate).
    assert [record.getMessage() for record in caplog.records] == []

    assert connection_count(reported["db.client.connection.count"]) == {
        ("orders", "idle"): 1,
        ("orders", "used"): 0,
        ("users", "idle"): 1,
        ("users", "used"): 0,
    }
    assert per_pool(reported["db.client.connection.max"]) == {"orders": 3, "users": 5}
    assert per_pool(reported["db.client.connection.idle.max"]) == {"orders": 3, "users": 5}
    assert per_pool(reported["db.client.connection.idle.min"]) == {"orders": 1, "users": 0}
    assert per_pool(reported["db.client.connection.pending_requests"]) == {
        "orders": 0,
        "users": 0,
    }
    use_time = histogram_points(reported["db.client.connection.use_time"])
    assert set(use_time) == {"users"}  # only users lent a connection
    assert (use_time["users"].count, use_time["users"].sum) == (1, 2.0)
    create_time = histogram_points(reported["db.client.connection.create_time"])
    assert set(create_time) == {"users"}  # orders connected at open(), before instrument()


async def test_close_stops_reporting_the_pool_and_not_the_others(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    async with _pool("a") as a, _pool("b") as b:
        telemetry_a = instrument(a, meter_provider=meter_provider)
        instrument(b, meter_provider=meter_provider)
        async with a.acquire(), b.acquire():
            pass
        telemetry_a.close()
        telemetry_a.close()  # harmless
        async with a.acquire(), b.acquire():  # a's events are no longer recorded
            pass
        reported = collect(reader)

        assert all(
            {key[0][1] for key in numbers(reported[name])} == {"b"} for name in ASYNC_COUNTERS
        )
        wait_time = histogram_points(reported["db.client.connection.wait_time"])
        assert (wait_time["a"].count, wait_time["b"].count) == (1, 2)

        instrument(a, meter_provider=meter_provider)  # may start again
        assert per_pool(collect(reader)["db.client.connection.max"]) == {"a": 10, "b": 10}


async def test_a_closed_pool_stops_being_reported_and_its_name_is_free_again(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    async with _pool("app", max_size=4) as first:
        instrument(first, meter_provider=meter_provider)
        assert per_pool(collect(reader)["db.client.connection.max"]) == {"app": 4}
    assert reported_pools(collect(reader)) == set()

    async with _pool("app", max_size=6) as second:  # the next start of an app, say
        instrument(second, meter_provider=meter_provider)
        assert per_pool(collect(reader)["db.client.connection.max"]) == {"app": 6}


async def test_a_pool_dropped_without_closing_stops_being_reported(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    pool = _pool("unopened")
    telemetry = instrument(pool, meter_provider=meter_provider)
    assert per_pool(collect(reader)["db.client.connection.max"]) == {"unopened": 10}
    assert repr(telemetry) == "<Instrumentation of pool 'unopened'>"

    del pool
    gc.collect()
    assert reported_pools(collect(reader)) == set()
    telemetry.close()  # harmless without its pool


async def test_a_pool_is_instrumented_once_per_meter_provider_and_names_are_unique(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    pool = _pool("app")
    telemetry = instrument(pool, meter_provider=meter_provider)
    with pytest.raises(ValueError, match="pool 'app' is already instrumented"):
        instrument(pool, meter_provider=meter_provider)
    with pytest.raises(ValueError, match=r"another pool named 'app'.*give each pool its own name"):
        instrument(_pool("app"), meter_provider=meter_provider)

    other_reader = InMemoryMetricReader()
    other_provider = MeterProvider(metric_readers=[other_reader])
    try:
        instrument(pool, meter_provider=other_provider)  # another provider: allowed
        assert per_pool(collect(other_reader)["db.client.connection.max"]) == {"app": 10}
    finally:
        other_provider.shutdown()
    assert per_pool(collect(reader)["db.client.connection.max"]) == {"app": 10}
    telemetry.close()


@pytest.mark.parametrize("slow_wait", [-0.1, float("nan"), float("inf"), True, "0.1"])
def test_slow_wait_must_be_seconds(slow_wait: Any, meter_provider: MeterProvider) -> None:
    with pytest.raises(ValueError, match="slow_wait must be a number of seconds"):
        instrument(_pool(), meter_provider=meter_provider, slow_wait=slow_wait)


async def test_a_closed_pool_is_refused(meter_provider: MeterProvider) -> None:
    pool = _pool("gone")
    await pool.close()
    with pytest.raises(ValueError, match="pool 'gone' is closed"):
        instrument(pool, meter_provider=meter_provider)


async def test_a_slow_acquire_makes_a_span_under_the_callers_span(
    meter_provider: MeterProvider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    clock = FakeClock()
    tracer = tracer_provider.get_tracer("the app")
    async with _pool("app", clock, max_size=1) as pool:
        instrument(
            pool, meter_provider=meter_provider, tracer_provider=tracer_provider, slow_wait=0.5
        )

        async def request(waits: float) -> None:
            with tracer.start_as_current_span("request"):
                held = await pool.acquire()  # fast: the connection is idle
                waiter = asyncio.create_task(acquire(pool))
                await wait_for_waiters(pool, 1)
                clock.advance(waits)
                await pool.release(held)
                await pool.release(await waiter)

        await request(0.25)  # under the threshold: no span
        assert [span.name for span in exporter.get_finished_spans()] == ["request"]
        exporter.clear()
        await request(0.5)  # at the threshold: a span

    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {SLOW_ACQUIRE_SPAN, "request"}
    slow, parent = spans[SLOW_ACQUIRE_SPAN], spans["request"]
    assert slow.parent is not None
    assert slow.parent.span_id == parent.context.span_id
    assert slow.context.trace_id == parent.context.trace_id
    assert duration_ns(slow) == 500_000_000
    assert slow.kind is SpanKind.INTERNAL
    assert slow.status.status_code is StatusCode.UNSET
    assert dict(slow.attributes or {}) == {POOL_NAME: "app", "aiodbpool.acquire.wait": 0.5}
    scope = slow.instrumentation_scope
    assert scope is not None
    assert (scope.name, scope.version, scope.schema_url) == ("aiodbpool", "0.1.0", SCHEMA_URL)


async def test_a_timed_out_acquire_makes_an_error_span(
    meter_provider: MeterProvider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with _pool("app", max_size=1) as pool:
        instrument(
            pool, meter_provider=meter_provider, tracer_provider=tracer_provider, slow_wait=0.0
        )
        async with pool.acquire():
            with pytest.raises(PoolTimeout):
                await pool.acquire(timeout=0.01)

    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == [SLOW_ACQUIRE_SPAN] * 2  # slow_wait=0: every acquire
    lent, timed_out = spans
    assert lent.status.status_code is StatusCode.UNSET
    assert "error.type" not in (lent.attributes or {})
    assert timed_out.status.status_code is StatusCode.ERROR
    attributes = dict(timed_out.attributes or {})
    assert attributes[POOL_NAME] == "app"
    assert attributes["error.type"] == "aiodbpool.PoolTimeout"
    waited = attributes["aiodbpool.acquire.wait"]
    assert isinstance(waited, float)
    assert waited >= 0.009  # its timeout, give or take the clock's resolution
    assert duration_ns(timed_out) == round(waited * 1e9)


async def test_without_slow_wait_there_are_no_spans(
    meter_provider: MeterProvider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    clock = FakeClock()
    async with _pool("app", clock, max_size=1) as pool:
        instrument(pool, meter_provider=meter_provider, tracer_provider=tracer_provider)
        held = await pool.acquire()
        waiter = asyncio.create_task(acquire(pool))
        await wait_for_waiters(pool, 1)
        clock.advance(60.0)
        await pool.release(held)
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.001)
        await pool.release(await waiter)
    assert exporter.get_finished_spans() == ()


async def test_with_no_sdk_configured_it_records_nothing_and_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The global providers are the API's own, since no test sets one: no-ops, until one is set.
    with caplog.at_level(logging.WARNING):
        async with _pool("app", max_size=1) as pool:
            telemetry = instrument(pool, slow_wait=0.0)
            async with pool.acquire():
                with pytest.raises(PoolTimeout):
                    await pool.acquire(timeout=0.001)
            telemetry.close()
    assert [record.getMessage() for record in caplog.records] == []


_GLOBAL_PROVIDERS_SET_LATE = """
import asyncio, json
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from aiodbpool import Pool
from aiodbpool.drivers.fake import FakeDriver
from aiodbpool.integrations.opentelemetry import instrument

async def main():
    early = Pool(FakeDriver(), name="early")
    instrument(early, slow_wait=0.0)  # before the application sets the global providers
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    late = Pool(FakeDriver(), name="late")
    instrument(late, slow_wait=0.0)
    async with early, late:
        async with early.acquire(), late.acquire():
            pass
        data = reader.get_metrics_data()
    found = {}
    for scope in data.resource_metrics[0].scope_metrics:
        for metric in scope.metrics:
            for point in metric.data.data_points:
                name = point.attributes["db.client.connection.pool.name"]
                found.setdefault(metric.name, []).append(name)
    finished = spans.get_finished_spans()
    slow = [span.attributes["db.client.connection.pool.name"] for span in finished]
    print(json.dumps({"metrics": found, "spans": slow}))

asyncio.run(main())
"""


def test_the_global_providers_are_the_default_even_if_set_after_the_first_pool(
    tmp_path: Path,
) -> None:
    # In a process of its own: setting the global providers is for the application, once.
    run = subprocess.run(
        [sys.executable, "-c", _GLOBAL_PROVIDERS_SET_LATE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # the SDK warns of instruments made twice
    reported = json.loads(run.stdout)
    assert reported["spans"] == ["early", "late"]
    assert {name: sorted(pools) for name, pools in reported["metrics"].items()} == {
        **{name: ["early", "late"] for name in ASYNC_COUNTERS[1:]},
        "db.client.connection.count": ["early", "early", "late", "late"],
        "db.client.connection.create_time": ["early", "late"],
        "db.client.connection.wait_time": ["early", "late"],
        "db.client.connection.use_time": ["early", "late"],
    }


class _MeterWithoutAdvice:
    """A meter as opentelemetry-api before 1.30 made them: histograms take no bucket advice."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._meter, name)

    def create_histogram(
        self, name: str, unit: str = "", description: str = ""
    ) -> HistogramInstrument:
        return self._meter.create_histogram(name, unit, description)


class _ProviderWithoutAdvice(ApiMeterProvider):
    def __init__(self, provider: MeterProvider) -> None:
        self._provider = provider

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> Meter:
        meter = self._provider.get_meter(name, version, schema_url, attributes)
        return cast(Meter, _MeterWithoutAdvice(meter))


async def test_histograms_fall_back_to_the_sdks_buckets_without_advice(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    async with _pool("app") as pool:
        instrument(pool, meter_provider=_ProviderWithoutAdvice(meter_provider))
        async with pool.acquire():
            pass
    point = histogram_points(collect(reader)["db.client.connection.wait_time"])["app"]
    assert point.count == 1
    assert tuple(point.explicit_bounds) != DURATION_BUCKETS  # the SDK's default bounds
