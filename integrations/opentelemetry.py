"""OpenTelemetry metrics for pools, after the semantic conventions' ``db.client.connection.*``,
and spans for acquires that waited long.

Install the ``otel`` extra (``opentelemetry-api``); the application installs and configures the
OpenTelemetry SDK and its exporters as it does for everything else. This module uses the API
only: with no SDK configured, it records nothing and costs next to nothing.

    from aiodbpool.integrations.opentelemetry import instrument

    telemetry = instrument(pool)  # the global meter provider; instrument each pool once
    ...
    telemetry.close()  # stop reporting the pool (a pool that closes stops by itself)

The instruments follow the OpenTelemetry semantic conventions for database client metrics,
**version 1.44.0** (schema URL ``https://opentelemetry.io/schemas/1.44.0``, set on the meter).
They have the status *Development* there, so a later version may change them; their names,
types and units have stayed the same since version 1.26.0, which renamed
``db.client.connections.*`` to ``db.client.connection.*``. Every measurement carries
``db.client.connection.pool.name``, the pool's name:

| instrument | type | unit | from |
| --- | --- | --- | --- |
| ``db.client.connection.count`` | async UpDownCounter | ``{connection}`` | ``idle``, ``in_use`` |
| ``db.client.connection.idle.max`` | async UpDownCounter | ``{connection}`` | ``max_size`` |
| ``db.client.connection.idle.min`` | async UpDownCounter | ``{connection}`` | ``min_size`` |
| ``db.client.connection.max`` | async UpDownCounter | ``{connection}`` | ``max_size`` |
| ``db.client.connection.pending_requests`` | async UpDownCounter | ``{request}`` | ``waiting`` |
| ``db.client.connection.timeouts`` | Counter | ``{timeout}`` | ``TimedOut`` events |
| ``db.client.connection.create_time`` | Histogram | ``s`` | ``Connected.duration`` |
| ``db.client.connection.wait_time`` | Histogram | ``s`` | ``Acquired.wait`` |
| ``db.client.connection.use_time`` | Histogram | ``s`` | ``Released.held`` |

``db.client.connection.count`` has two series per pool, by ``db.client.connection.state``:
``idle`` (``stats().idle``) and ``used`` (``stats().in_use``, lent). The pool has no limit of
its own on idle connections, so ``idle.max`` is ``max_size``. ``wait_time`` counts every
acquire, those that found an idle connection ready as ``0.0``.

The asynchronous instruments read ``pool.stats()`` when the SDK collects (its periodic reader
does so in a thread of its own; each number is right, though two numbers of one collection may
be a moment apart). The others record the pool's events (``aiodbpool.events``) as they happen,
through a listener that adds a histogram or counter update to each acquire and release. The
histograms advise the bucket bounds of ``aiodbpool.histogram.DURATION_BUCKETS``, 0.1 ms to 10 s,
rather than the SDK's default, which is made for milliseconds (opentelemetry-api 1.30 or later
passes the advice on; a ``View`` of the application's overrides it).

The meter and the tracer are named ``aiodbpool``, with the package's version. Connections being
opened or closed are neither ``idle`` nor ``used``, so the two states may add up to less than
``stats().size``. Spans, for acquires that waited long, are made only on request: see
``instrument``'s ``slow_wait``.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from importlib.metadata import version
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.metrics import (
    CallbackOptions,
    Histogram,
    Meter,
    MeterProvider,
    Observation,
)
from opentelemetry.trace import Status, StatusCode, Tracer, TracerProvider

from aiodbpool import Pool, PoolStats, PoolTimeout
from aiodbpool.events import Acquired, Connected, PoolEvent, Released, TimedOut
from aiodbpool.histogram import DURATION_BUCKETS

__all__ = ["SLOW_ACQUIRE_SPAN", "Instrumentation", "instrument"]

SLOW_ACQUIRE_SPAN: Final = "aiodbpool acquire"
"""The name of the span made for an acquire that waited at least ``slow_wait`` seconds."""

_SCOPE: Final = "aiodbpool"
_VERSION: Final = version("aiodbpool")
_SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"
_POOL_NAME: Final = "db.client.connection.pool.name"
_STATE: Final = "db.client.connection.state"
_WAIT: Final = "aiodbpool.acquire.wait"
_ERROR_TYPE: Final = "error.type"
_TIMEOUT_TYPE: Final = f"{PoolTimeout.__module__}.{PoolTimeout.__qualname__}"

_Callback = Callable[[CallbackOptions], Iterable[Observation]]


def instrument(
    pool: Pool[Any],
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    slow_wait: float | None = None,
) -> Instrumentation:
    """Report ``pool``'s metrics through ``meter_provider`` until the pool closes or the
    returned ``Instrumentation`` is closed.

    Instrument a pool before or after opening it, once per meter provider. Several pools share
    one set of instruments per meter provider, each pool's measurements told apart by its name,
    so pools instrumented together need distinct names.

    Args:
        pool: The pool to report; not closed.
        meter_provider: Where the metrics go; ``None``: the global one
            (``opentelemetry.metrics.get_meter_provider()``), which may be set after the first
            pool is instrumented.
        tracer_provider: Where the spans of slow acquires go, with ``slow_wait``; ``None``: the
            global one (``opentelemetry.trace.get_tracer_provider()``).
        slow_wait: Make a span (``SLOW_ACQUIRE_SPAN``) for each acquire that waited at least
            this many seconds, a child of the span current in the acquiring task; a timed-out
            acquire's span has an error status. ``None``: no spans.

    Raises:
        ValueError: ``slow_wait`` is not a number of seconds, the pool is closed, or it (or
            another pool of the same name) is already instrumented with this meter provider.
    """
    if slow_wait is not None and not (
        isinstance(slow_wait, int | float)
        and not isinstance(slow_wait, bool)
        and 0 <= slow_wait < math.inf
    ):
        raise ValueError(
            f"slow_wait must be a number of seconds, 0 or more, or None for no spans; got "
            f"{slow_wait!r}"
        )
    if pool.closed:
        raise ValueError(
            f"pool {pool.name!r} is closed, so there is nothing to report: instrument a pool "
            "before or while it is open"
        )
    tracer = None
    if slow_wait is not None:
        if tracer_provider is None:
            tracer_provider = trace.get_tracer_provider()
        tracer = tracer_provider.get_tracer(_SCOPE, _VERSION, schema_url=_SCHEMA_URL)
    if meter_provider is None:
        meter_provider = _global_meter_provider()
    instruments = _instruments_of(meter_provider)
    instrumentation = Instrumentation(pool, instruments, tracer, slow_wait)
    instruments.report(instrumentation)
    pool.add_listener(instrumentation._record)
    return instrumentation


class Instrumentation:
    """One pool's reporting to one meter provider, as ``instrument`` starts it; ``close()``
    stops it."""

    def __init__(
        self,
        pool: Pool[Any],
        instruments: _Instruments,
        tracer: Tracer | None,
        slow_wait: float | None,
    ) -> None:
        # Weakly: a pool that is dropped without close() is collected, and stops being reported.
        self._pool = weakref.ref(pool)
        self._name = pool.name
        self._attributes: Final = {_POOL_NAME: pool.name}
        self._instruments = instruments
        self._tracer = tracer
        self._slow_wait = math.inf if slow_wait is None else slow_wait

    def close(self) -> None:
        """Stop reporting the pool: its events are no longer recorded, and the asynchronous
        instruments leave it out from the next collection. Closing twice is harmless.

        What the histograms and the counter already hold stays in the SDK's cumulative totals
        (an SDK reports the series of a synchronous instrument as long as it lives).
        """
        pool = self._pool()
        if pool is not None:
            pool.remove_listener(self._record)
        self._instruments.forget(self)

    def __repr__(self) -> str:
        return f"<Instrumentation of pool {self._name!r}>"

    def _reported_pool(self) -> Pool[Any] | None:
        """The pool, if it is still to be reported: alive and not closed."""
        pool = self._pool()
        return None if pool is None or pool.closed else pool

    def _record(self, event: PoolEvent) -> None:
        """The pool's listener: record one event. It runs in the task that caused the event,
        so a span it starts is a child of that task's current span."""
        instruments = self._instruments
        match event:
            case Acquired(wait=wait):
                instruments.wait_time.record(wait, self._attributes)
                if wait >= self._slow_wait:
                    self._slow_acquire(wait, timed_out=False)
            case Released(held=held):
                instruments.use_time.record(held, self._attributes)
            case Connected(duration=duration):
                instruments.create_time.record(duration, self._attributes)
            case TimedOut(waited=waited):
                instruments.timeouts.add(1, self._attributes)
                if waited >= self._slow_wait:
                    self._slow_acquire(waited, timed_out=True)
            case _:
                pass

    def _slow_acquire(self, wait: float, *, timed_out: bool) -> None:
        """A span for an acquire that just ended after ``wait`` seconds: from the wall-clock
        time its wait began until now."""
        assert self._tracer is not None  # a finite slow_wait comes with a tracer
        end = time.time_ns()
        attributes: dict[str, str | float] = {**self._attributes, _WAIT: wait}
        if timed_out:
            attributes[_ERROR_TYPE] = _TIMEOUT_TYPE
        span = self._tracer.start_span(
            SLOW_ACQUIRE_SPAN, attributes=attributes, start_time=end - round(wait * 1e9)
        )
        if timed_out:
            span.set_status(Status(StatusCode.ERROR, f"no connection within {wait:g}s"))
        span.end(end_time=end)


class _Instruments:
    """The instruments of one meter provider, and the pools they report.

    The asynchronous instruments' callbacks run in the SDK's collecting thread while pools are
    instrumented and closed in event loops: the list of pools is changed and read under a lock.
    """

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._reported: list[Instrumentation] = []
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            callbacks=[self._observe_count],
            unit="{connection}",
            description=(
                "The number of connections that are currently in state described by the "
                "`state` attribute."
            ),
        )
        for name, unit, description, value in _LIMITS:
            meter.create_observable_up_down_counter(
                name, callbacks=[self._observer(value)], unit=unit, description=description
            )
        self.timeouts: Final = meter.create_counter(
            "db.client.connection.timeouts",
            unit="{timeout}",
            description=(
                "The number of connection timeouts that have occurred trying to obtain a "
                "connection from the pool."
            ),
        )
        self.create_time: Final = _histogram(
            meter,
            "db.client.connection.create_time",
            "The time it took to create a new connection.",
        )
        self.wait_time: Final = _histogram(
            meter,
            "db.client.connection.wait_time",
            "The time it took to obtain an open connection from the pool.",
        )
        self.use_time: Final = _histogram(
            meter,
            "db.client.connection.use_time",
            "The time between borrowing a connection and returning it to the pool.",
        )

    def report(self, instrumentation: Instrumentation) -> None:
        """Add a pool to those reported, unless a pool of its name already is."""
        pool = instrumentation._reported_pool()
        assert pool is not None  # instrument() holds it, open
        with self._lock:
            for other in self._reported:
                present = other._reported_pool()
                if present is pool:
                    raise ValueError(
                        f"pool {pool.name!r} is already instrumented with this meter provider: "
                        "instrument a pool once (close() the first Instrumentation to start "
                        "again)"
                    )
                if present is not None and present.name == pool.name:
                    raise ValueError(
                        f"another pool named {pool.name!r} is already instrumented with this "
                        "meter provider, and the metrics could not tell them apart: give each "
                        "pool its own name (Pool(name=...) or create_pool(..., name=...))"
                    )
            self._reported.append(instrumentation)

    def forget(self, instrumentation: Instrumentation) -> None:
        with self._lock:
            self._reported = [other for other in self._reported if other is not instrumentation]

    def _snapshots(self) -> list[tuple[dict[str, str], PoolStats]]:
        """The attributes and stats of every pool still reported; the others are forgotten."""
        with self._lock:
            live = [(other, other._reported_pool()) for other in self._reported]
            self._reported = [other for other, pool in live if pool is not None]
        return [(other._attributes, pool.stats()) for other, pool in live if pool is not None]

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for attributes, stats in self._snapshots():
            observations.append(Observation(stats.idle, {**attributes, _STATE: "idle"}))
            observations.append(Observation(stats.in_use, {**attributes, _STATE: "used"}))
        return observations

    def _observer(self, value: Callable[[PoolStats], int]) -> _Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value(stats), attributes) for attributes, stats in self._snapshots()
            ]

        return observe


_LIMITS: Final[tuple[tuple[str, str, str, Callable[[PoolStats], int]], ...]] = (
    (
        "db.client.connection.idle.max",
        "{connection}",
        "The maximum number of idle open connections allowed.",
        lambda stats: stats.max_size,
    ),
    (
        "db.client.connection.idle.min",
        "{connection}",
        "The minimum number of idle open connections allowed.",
        lambda stats: stats.min_size,
    ),
    (
        "db.client.connection.max",
        "{connection}",
        "The maximum number of open connections allowed.",
        lambda stats: stats.max_size,
    ),
    (
        "db.client.connection.pending_requests",
        "{request}",
        "The number of current pending requests for an open connection.",
        lambda stats: stats.waiting,
    ),
)
"""The asynchronous instruments of one number per pool: name, unit, description, the number."""


def _histogram(meter: Meter, name: str, description: str) -> Histogram:
    """A histogram of seconds, advising the pool's own bucket bounds."""
    try:
        return meter.create_histogram(
            name,
            unit="s",
            description=description,
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
    except TypeError:  # opentelemetry-api before 1.30 takes no advice: the SDK's buckets apply
        return meter.create_histogram(name, unit="s", description=description)


_SHARED: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = weakref.WeakKeyDictionary()
"""The instruments of each meter provider, made with its first pool; they go with it."""
_SHARED_LOCK: Final = threading.Lock()


_global: MeterProvider | None = None
"""The global meter provider, as ``instrument`` first found it."""


def _global_meter_provider() -> MeterProvider:
    """The global meter provider, as first found here. Before the application sets one, that is
    the API's proxy, whose instruments forward to the provider set later: asking that provider
    for the same instruments again would make its SDK keep the proxy's and ignore the new ones'
    callbacks, and the pools instrumented afterwards would go unreported."""
    global _global
    with _SHARED_LOCK:
        if _global is None:
            _global = metrics.get_meter_provider()
        return _global


def _instruments_of(meter_provider: MeterProvider) -> _Instruments:
    with _SHARED_LOCK:
        instruments = _SHARED.get(meter_provider)
        if instruments is None:
            meter = meter_provider.get_meter(_SCOPE, _VERSION, schema_url=_SCHEMA_URL)
            instruments = _SHARED[meter_provider] = _Instruments(meter)
        return instruments
