"""Prometheus metrics for pools, named after OpenTelemetry's ``db.client.connection.*`` conventions.

Install the ``metrics`` extra (``prometheus-client``). Nothing is recorded twice: a
``PoolCollector`` reads each pool's ``stats`` when Prometheus scrapes, so metrics cost nothing
between scrapes. Register it in your own registry (or in ``prometheus_client.REGISTRY``):

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from aiodbpool import create_pool
>>> registry = CollectorRegistry()
>>> registry.register(PoolCollector([create_pool("fake://", name="app", max_size=4)]))
>>> b'db_client_connection_max{pool_name="app"} 4.0' in generate_latest(registry)
True

or let ``render`` produce a scrape response (the FastAPI integration's ``/metrics`` route
does). Every metric is labelled with ``pool_name``.

OpenTelemetry's names, as Prometheus spells them (dots become underscores, units a suffix):

| metric | type | what |
| --- | --- | --- |
| ``db_client_connection_count{state=...}`` | gauge | open connections, "idle" or "used" |
| ``db_client_connection_idle_min`` | gauge | ``min_size`` |
| ``db_client_connection_max`` | gauge | ``max_size`` |
| ``db_client_connection_pending_requests`` | gauge | acquirers waiting |
| ``db_client_connection_timeouts_total`` | counter | acquires that timed out |
| ``db_client_connection_create_time_seconds`` | histogram | connect durations |
| ``db_client_connection_wait_time_seconds`` | histogram | acquire durations |
| ``db_client_connection_use_time_seconds`` | histogram | hand-out to release |

and the pool's own counters, under ``aiodbpool_``: connections opening and closing,
``aiodbpool_connections_created_total``, ``..._closed_total``, ``..._discarded_total``,
``aiodbpool_connect_errors_total``, ``aiodbpool_validation_failures_total``, the circuit
breaker's ``aiodbpool_breaker_open``, ``aiodbpool_connect_errors_in_a_row`` and
``aiodbpool_breaker_rejections_total``, ``aiodbpool_exhausted_total`` (refusals by
``max_waiting``), ``aiodbpool_stale_releases_total``, ``aiodbpool_stale_uses_total`` and
``aiodbpool_reclaimed_total`` (a second release, a use after release, a connection dropped
without a release: bugs in the calling code),
``aiodbpool_evictions_total{reason="idle"|"lifetime"}`` and ``aiodbpool_acquires_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import DurationHistogram, Pool, PoolStats

__all__ = ["PoolCollector", "render"]

_POOL = ["pool_name"]


class PoolCollector(Collector):
    """A Prometheus collector that reports the given pools at each scrape."""

    def __init__(self, pools: Iterable[Pool[Any]]) -> None:
        self._pools = list(pools)

    def collect(self) -> Iterator[Metric]:
        # A name that is not valid UTF-8 (a lone surrogate) is escaped: the text format is UTF-8,
        # and one such label would otherwise fail the whole scrape.
        snapshots = [_utf8_safe(pool.stats()) for pool in self._pools]
        yield from _gauges(snapshots)
        yield from _counters(snapshots)
        yield from _histograms(snapshots)


def _utf8_safe(stats: PoolStats) -> PoolStats:
    name = stats.name.encode("utf-8", "backslashreplace").decode("utf-8")
    return stats if name == stats.name else replace(stats, name=name)


def render(pools: Iterable[Pool[Any]]) -> tuple[bytes, str]:
    """A scrape response for ``pools``: the body in Prometheus' text format, and its content type.

    It holds only the pools' metrics (a registry of its own, not the process-wide one).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(pools))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _gauges(snapshots: list[PoolStats]) -> Iterator[Metric]:
    count = GaugeMetricFamily(
        "db_client_connection_count",
        "Open connections, by state: idle in the pool or used by a caller.",
        labels=[*_POOL, "state"],
    )
    for stats in snapshots:
        count.add_metric([stats.name, "idle"], stats.idle)
        count.add_metric([stats.name, "used"], stats.in_use)
    yield count
    yield _per_pool(
        GaugeMetricFamily,
        "db_client_connection_idle_min",
        "The minimum number of connections the pool keeps open (min_size).",
        snapshots,
        lambda stats: stats.min_size,
    )
    yield _per_pool(
        GaugeMetricFamily,
        "db_client_connection_max",
        "The maximum number of connections the pool allows (max_size).",
        snapshots,
        lambda stats: stats.max_size,
    )
    yield _per_pool(
        GaugeMetricFamily,
        "db_client_connection_pending_requests",
        "Acquirers waiting for a connection.",
        snapshots,
        lambda stats: stats.waiting,
    )
    yield _per_pool(
        GaugeMetricFamily,
        "aiodbpool_connections_opening",
        "Connections being opened right now.",
        snapshots,
        lambda stats: stats.opening,
    )
    yield _per_pool(
        GaugeMetricFamily,
        "aiodbpool_connections_closing",
        "Connections being closed right now.",
        snapshots,
        lambda stats: stats.closing,
    )
    yield _per_pool(
        GaugeMetricFamily,
        "aiodbpool_breaker_open",
        "1 while the circuit breaker is open (acquirers needing a new connection fail at once).",
        snapshots,
        lambda stats: int(stats.breaker_open),
    )
    yield _per_pool(
        GaugeMetricFamily,
        "aiodbpool_connect_errors_in_a_row",
        "Connects that failed since the last one that succeeded.",
        snapshots,
        lambda stats: stats.connect_errors_in_a_row,
    )


def _counters(snapshots: list[PoolStats]) -> Iterator[Metric]:
    # prometheus_client appends "_total" to counter names.
    yield _per_pool(
        CounterMetricFamily,
        "db_client_connection_timeouts",
        "Acquires that timed out waiting for a connection.",
        snapshots,
        lambda stats: stats.timeouts,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_acquires",
        "Connections handed out.",
        snapshots,
        lambda stats: stats.acquired,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_connections_created",
        "Connections opened successfully.",
        snapshots,
        lambda stats: stats.created,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_connections_closed",
        "Connections closed, for any reason.",
        snapshots,
        lambda stats: stats.closed,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_connections_discarded",
        "Connections thrown away as broken (closed, failed reset or ping).",
        snapshots,
        lambda stats: stats.discarded,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_connect_errors",
        "Attempts to open a connection that failed or timed out.",
        snapshots,
        lambda stats: stats.connect_errors,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_exhausted",
        "Acquires refused at once because max_waiting acquirers already waited.",
        snapshots,
        lambda stats: stats.exhausted,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_breaker_rejections",
        "Acquires that failed at once because the circuit breaker was open.",
        snapshots,
        lambda stats: stats.breaker_rejections,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_stale_releases",
        "Releases refused because the connection had already been given back (a bug to fix).",
        snapshots,
        lambda stats: stats.stale_releases,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_stale_uses",
        "Uses of a connection after its release, refused before reaching the database.",
        snapshots,
        lambda stats: stats.stale_uses,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_reclaimed",
        "Connections dropped by their holder without a release, closed by the pool (a bug to fix).",
        snapshots,
        lambda stats: stats.reclaimed,
    )
    yield _per_pool(
        CounterMetricFamily,
        "aiodbpool_validation_failures",
        "Idle connections that failed their ping before being handed out.",
        snapshots,
        lambda stats: stats.validation_failures,
    )
    evictions = CounterMetricFamily(
        "aiodbpool_evictions",
        "Connections closed for staying idle too long, or retired for age, use count or expire().",
        labels=[*_POOL, "reason"],
    )
    for stats in snapshots:
        evictions.add_metric([stats.name, "idle"], stats.evicted_idle)
        evictions.add_metric([stats.name, "lifetime"], stats.evicted_lifetime)
    yield evictions


def _histograms(snapshots: list[PoolStats]) -> Iterator[Metric]:
    families = {
        "create_time": HistogramMetricFamily(
            "db_client_connection_create_time_seconds",
            "The time it took to open a new connection.",
            labels=_POOL,
        ),
        "wait_time": HistogramMetricFamily(
            "db_client_connection_wait_time_seconds",
            "The time it took to obtain a connection from the pool.",
            labels=_POOL,
        ),
        "use_time": HistogramMetricFamily(
            "db_client_connection_use_time_seconds",
            "The time between handing a connection out and getting it back.",
            labels=_POOL,
        ),
    }
    for stats in snapshots:
        for field, family in families.items():
            histogram: DurationHistogram = getattr(stats, field)
            buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
            family.add_metric([stats.name], buckets, sum_value=histogram.total)
    yield from families.values()


def _per_pool(
    family: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    documentation: str,
    snapshots: list[PoolStats],
    value: Callable[[PoolStats], float],
) -> Metric:
    metric = family(name, documentation, labels=_POOL)
    for stats in snapshots:
        metric.add_metric([stats.name], value(stats))
    return metric


def _bound(seconds: float) -> str:
    """A bucket bound as Prometheus writes it: ``+Inf`` for infinity."""
    return "+Inf" if seconds == float("inf") else repr(seconds)
