"""Prometheus metrics: OpenTelemetry's names, one label per pool, values read at scrape time."""

from __future__ import annotations

import asyncio

import pytest
from helpers import wait_for_waiters
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from aiodbpool import ConnectionReleased, Pool, PoolExhausted
from aiodbpool.drivers.fake import FakeClock, FakeDriver
from aiodbpool.integrations.prometheus import PoolCollector, render


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    samples: list[Sample] = [
        sample
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    ]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


async def test_the_metrics_follow_opentelemetry_names_and_label_each_pool() -> None:
    clock = FakeClock()
    async with (
        Pool(FakeDriver(), name="primary", max_size=2, clock=clock) as primary,
        Pool(FakeDriver(), name="replica", min_size=0, max_size=5) as replica,
    ):
        held = await primary.acquire()
        async with primary.acquire():
            clock.advance(0.3)
        second = await primary.acquire()  # both connections are in use now
        timing_out = asyncio.ensure_future(primary.acquire(timeout=0))
        await asyncio.gather(timing_out, return_exceptions=True)
        await primary.release(second)
        body, content_type = render([primary, replica])
        await primary.release(held)

    assert content_type.startswith("text/plain")
    samples = _samples(body)
    pool = (("pool_name", "primary"),)
    assert samples[("db_client_connection_count", (*pool, ("state", "idle")))] == 1
    assert samples[("db_client_connection_count", (*pool, ("state", "used")))] == 1
    assert samples[("db_client_connection_max", pool)] == 2
    assert samples[("db_client_connection_idle_min", pool)] == 0
    assert samples[("db_client_connection_pending_requests", pool)] == 0
    assert samples[("db_client_connection_timeouts_total", pool)] == 1
    assert samples[("aiodbpool_acquires_total", pool)] == 3
    assert samples[("aiodbpool_connections_created_total", pool)] == 2
    assert samples[("aiodbpool_breaker_open", pool)] == 0
    assert samples[("aiodbpool_connect_errors_in_a_row", pool)] == 0
    assert samples[("aiodbpool_breaker_rejections_total", pool)] == 0
    assert samples[("aiodbpool_exhausted_total", pool)] == 0
    assert samples[("db_client_connection_max", (("pool_name", "replica"),))] == 5
    use = "db_client_connection_use_time_seconds"
    assert samples[(f"{use}_count", pool)] == 2
    assert samples[(f"{use}_sum", pool)] == 0.3
    assert samples[(f"{use}_bucket", (("le", "0.0001"), *pool))] == 1
    assert samples[(f"{use}_bucket", (("le", "0.25"), *pool))] == 1
    assert samples[(f"{use}_bucket", (("le", "0.5"), *pool))] == 2
    assert samples[(f"{use}_bucket", (("le", "+Inf"), *pool))] == 2
    wait = "db_client_connection_wait_time_seconds"
    assert samples[(f"{wait}_count", pool)] == 3
    assert samples[("db_client_connection_create_time_seconds_count", pool)] == 2


async def test_pending_requests_are_the_queued_acquirers() -> None:
    async with Pool(FakeDriver(), name="busy", max_size=1) as pool:
        held = await pool.acquire()
        waiters = [asyncio.ensure_future(pool.acquire()) for _ in range(3)]
        await wait_for_waiters(pool, 3)
        samples = _samples(render([pool])[0])
        await pool.release(held)
        for waiter in waiters:
            await pool.release(await waiter)
    assert samples[("db_client_connection_pending_requests", (("pool_name", "busy"),))] == 3


async def test_refusals_by_max_waiting_are_counted() -> None:
    async with Pool(FakeDriver(), name="busy", max_size=1, max_waiting=1) as pool:
        held = await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire())
        await wait_for_waiters(pool, 1)
        refused = await asyncio.gather(pool.acquire(), pool.acquire(), return_exceptions=True)
        samples = _samples(render([pool])[0])
        await pool.release(held)
        await pool.release(await waiter)
    assert [type(error) for error in refused] == [PoolExhausted, PoolExhausted]
    assert samples[("aiodbpool_exhausted_total", (("pool_name", "busy"),))] == 2


async def test_refused_releases_and_uses_are_counted() -> None:
    async with Pool(FakeDriver(), name="app", max_size=1) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        for _ in range(2):
            with pytest.raises(ValueError, match="already released"):
                await pool.release(conn)
        with pytest.raises(ConnectionReleased):
            await conn.fetchval("SELECT 1")
        stats = pool.stats()
        samples = _samples(render([pool])[0])
    assert (stats.stale_releases, stats.stale_uses) == (2, 1)
    pool_label = (("pool_name", "app"),)
    assert samples[("aiodbpool_stale_releases_total", pool_label)] == 2
    assert samples[("aiodbpool_stale_uses_total", pool_label)] == 1


async def test_the_collector_works_in_an_applications_own_registry() -> None:
    registry = CollectorRegistry()
    async with Pool(FakeDriver(), name="app") as pool:
        registry.register(PoolCollector([pool]))
        async with pool.acquire():
            scraped_while_used = _samples(generate_latest(registry))
        scraped_after = _samples(generate_latest(registry))
    used = ("db_client_connection_count", (("pool_name", "app"), ("state", "used")))
    assert scraped_while_used[used] == 1
    assert scraped_after[used] == 0
    closed = ("aiodbpool_connections_closed_total", (("pool_name", "app"),))
    assert scraped_after[closed] == 0


async def test_the_breaker_shows_in_the_metrics() -> None:
    driver = FakeDriver()
    async with Pool(driver, name="down", breaker_threshold=2) as pool:
        driver.fail_connects()
        for _ in range(3):
            await asyncio.gather(pool.acquire(), return_exceptions=True)
        samples = _samples(render([pool])[0])
    pool_label = (("pool_name", "down"),)
    assert samples[("aiodbpool_breaker_open", pool_label)] == 1
    assert samples[("aiodbpool_connect_errors_in_a_row", pool_label)] == 2
    assert samples[("aiodbpool_breaker_rejections_total", pool_label)] == 1
