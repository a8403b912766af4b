"""The plugin's fixtures as this suite uses them: pytest-asyncio in auto mode, each test on both
asyncio's default loop and uvloop (see tests/conftest.py).

How they behave under the other modes (strict, anyio), and what loading the plugin costs, is
tested by running sample test files in pytest sessions of their own: test_pytest_plugin.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosqlite
import asyncpg
import pytest

from aiodbpool import Pool, PoolTimeout
from aiodbpool.drivers.fake import FakeClock, FakeDriver
from aiodbpool.integrations.testing import FakePool

pytestmark = pytest.mark.pool_options(max_size=3, acquire_timeout=5.0)


async def test_fake_pool_is_open_on_the_fake_driver_and_clock(
    fake_pool: FakePool, fake_driver: FakeDriver, fake_clock: FakeClock
) -> None:
    assert (fake_pool.driver, fake_pool.clock) == (fake_driver, fake_clock)
    assert fake_pool.name == "fake_pool"
    async with fake_pool.acquire() as conn:
        assert await conn.execute("SELECT 1") == "OK"
    assert fake_driver.opened == 1
    assert not fake_pool.closed


async def test_the_fake_clock_ages_the_pools_connections(fake_pool: FakePool) -> None:
    """``max_lifetime`` counts on the pool's clock: advancing it retires a connection at once."""
    async with fake_pool.acquire():
        pass
    fake_pool.clock.advance(3600)  # the default max_lifetime
    async with fake_pool.acquire():
        pass
    assert fake_pool.driver.opened == 2


async def test_pool_options_come_from_the_closest_marker_option_by_option(
    fake_pool: FakePool,
) -> None:
    stats = fake_pool.stats()
    assert stats.max_size == 3  # from the module's marker


@pytest.mark.pool_options(max_size=1, acquire_timeout=0.05)
async def test_a_tests_own_marker_overrides_the_modules(fake_pool: FakePool) -> None:
    assert fake_pool.stats().max_size == 1
    async with fake_pool.acquire():
        with pytest.raises(PoolTimeout):  # acquire_timeout from this marker: no 5 s wait
            await fake_pool.acquire()


@pytest.mark.pool_options(name="orders")
async def test_the_marker_may_name_the_pool(fake_pool: FakePool) -> None:
    assert fake_pool.name == "orders"


class TestOverridingTheFakeDriver:
    """A fixture of the same name, in a class, a module or a conftest.py, configures the fake
    database of every ``fake_pool`` in its reach."""

    @pytest.fixture
    def fake_driver(self) -> FakeDriver:
        return FakeDriver(connect_latency=0.001)

    @pytest.fixture
    def fake_clock(self) -> FakeClock:
        return FakeClock(start=1000.0)

    async def test_fake_pool_uses_the_overriding_fixtures(self, fake_pool: FakePool) -> None:
        assert fake_pool.driver.connect_latency == 0.001
        assert fake_pool.clock.now == 1000.0
        async with fake_pool.acquire() as conn:
            assert await conn.execute("SELECT 1") == "OK"


@pytest.fixture
async def opened_by_a_fixture_of_ours(fake_pool: FakePool) -> int:
    """An async fixture that uses the pool in its own set-up, as an app fixture would."""
    async with fake_pool.acquire() as conn:
        await conn.execute("SELECT 1")
    return fake_pool.driver.opened


async def test_an_async_fixture_may_build_on_fake_pool(
    opened_by_a_fixture_of_ours: int, fake_pool: FakePool
) -> None:
    assert opened_by_a_fixture_of_ours == 1
    async with fake_pool.acquire():  # the same pool, open in this test's loop
        pass


async def test_postgres_pool_is_open_on_postgres_url(
    postgres_pool: Pool[asyncpg.Connection], postgres_url: str
) -> None:
    assert postgres_pool.name == "postgres_pool"
    assert postgres_pool.stats().max_size == 3
    async with postgres_pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1
        server_port = await conn.fetchval("SELECT inet_server_port()")
    assert server_port == urlsplit(postgres_url).port


async def test_sqlite_pool_is_open_on_a_file_of_the_tests_own(
    sqlite_pool: Pool[aiosqlite.Connection], sqlite_url: str, tmp_path: Path
) -> None:
    assert sqlite_pool.name == "sqlite_pool"
    path = Path(unquote(urlsplit(sqlite_url).path)[1:])
    assert path.parent == tmp_path
    async with sqlite_pool.acquire() as conn:
        await conn.execute("CREATE TABLE notes (body TEXT)")
        await conn.execute("INSERT INTO notes VALUES ('kept')")
        await conn.commit()
    assert await asyncio.to_thread(path.is_file)


async def test_every_pool_is_open_in_the_loop_that_runs_the_test(
    fake_pool: FakePool, sqlite_pool: Pool[Any], postgres_pool: Pool[Any]
) -> None:
    """The three at once, with tasks of this test's loop borrowing from them concurrently."""

    async def borrow(pool: Pool[Any]) -> None:
        async with pool.acquire():
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as group:
        for pool in (fake_pool, sqlite_pool, postgres_pool):
            for _ in range(3):
                group.create_task(borrow(pool))
