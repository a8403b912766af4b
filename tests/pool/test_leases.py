"""Leases: no borrower can ever act on another borrower's session.

The five sequences that a pool lending its connection objects themselves gets wrong, each step by
step with the awaits in between, on a real PostgreSQL server, a real SQLite file and the fake
driver (where they apply), under both event loops:

1. a stale second release (``except`` and ``finally``; ``release()`` inside ``async with``);
2. a statement through a released handle;
3. a transaction block that ends after its release (an async generator finalized late);
4. a release while a statement of the lend still runs;
5. an ``init`` that leaves a transaction open.

Each PostgreSQL and SQLite test uses a pool of one connection, so the next acquirer always gets
the connection the stale handle pointed to, and checks the data itself: no row may be lost or
written into another borrower's transaction.

The refusal of a release itself (twice, through a handle kept from an earlier lend, of the
driver's own connection behind a lease, of a connection the pool never lent) and what it leaves
unchanged, on the fake driver, is in ``test_release.py``; how the refusals show in the metrics,
in ``tests/fastapi/test_prometheus.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite
import asyncpg
import pytest
from helpers import MinimalConn, MinimalDriver, wait_until
from sqlite_helpers import SLOW_COUNT, Gate, raw_value, wait_for_worker_threads, worker_threads

from aiodbpool import (
    ConnectionReleased,
    Lease,
    Pool,
    PoolConnectError,
    PoolTimeout,
    SupportsLease,
    SupportsTransaction,
    SupportsTransactionStatus,
    guarded_statement,
    raw_connection,
)
from aiodbpool.drivers.fake import FakeConnection, FakeDriver
from aiodbpool.drivers.postgres import PostgresDriver, ReleasedConnectionError
from aiodbpool.drivers.sqlite import SQLiteDriver

# ------------------------------------------------------------------ the two real databases


@pytest.fixture(autouse=True)
async def _every_sqlite_thread_ends_with_its_test() -> AsyncIterator[None]:
    """A connection the pool terminated has its thread end while the test's loop still runs."""
    before = worker_threads()
    yield
    await wait_for_worker_threads(before)


@dataclass
class Database:
    """A pool of one connection on a real database, with a table ``t(x)`` and a way to read
    what was committed from outside the pool."""

    kind: str
    pool: Pool[Any]
    table: str
    committed: Callable[[], Awaitable[list[int]]]

    def insert_sql(self) -> str:
        mark = "$1" if self.kind == "postgres" else "?"
        return f"INSERT INTO {self.table} VALUES ({mark})"

    async def insert(self, conn: Any, value: int) -> None:
        if self.kind == "postgres":
            await conn.execute(self.insert_sql(), value)
        else:
            await conn.execute(self.insert_sql(), (value,))

    async def in_transaction(self, conn: Any) -> bool:
        raw = raw_connection(conn)
        return bool(raw.is_in_transaction() if self.kind == "postgres" else raw.in_transaction)


def transaction(pool: Pool[Any], conn: Any) -> AbstractAsyncContextManager[object]:
    """The driver's transaction block on ``conn``."""
    driver = pool.driver
    assert isinstance(driver, SupportsTransaction)
    return driver.transaction(conn)


@pytest.fixture(params=["postgres", "sqlite"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    table = f"t_{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_url")

        async def committed_pg() -> list[int]:
            outside = await asyncpg.connect(dsn)
            try:
                return [row[0] for row in await outside.fetch(f"SELECT x FROM {table} ORDER BY x")]
            finally:
                await outside.close()

        pg_pool: Pool[asyncpg.Connection] = Pool(PostgresDriver(dsn), max_size=1)
        async with pg_pool:
            async with pg_pool.acquire() as conn:
                await conn.execute(f"CREATE TABLE {table} (x int)")
            yield Database("postgres", pg_pool, table, committed_pg)
            async with pg_pool.acquire(timeout=10) as conn:
                await conn.execute(f"DROP TABLE {table}")
    else:
        path = tmp_path / "app.db"

        async def committed_sqlite() -> list[int]:
            raw = sqlite3.connect(path)
            try:
                return [row[0] for row in raw.execute(f"SELECT x FROM {table} ORDER BY x")]
            finally:
                raw.close()

        sqlite_pool: Pool[aiosqlite.Connection] = Pool(
            SQLiteDriver(path), max_size=1, close_driver=True
        )
        async with sqlite_pool:
            async with sqlite_pool.acquire() as sqlite_conn:
                await sqlite_conn.execute(f"CREATE TABLE {table} (x integer)")
            yield Database("sqlite", sqlite_pool, table, committed_sqlite)


# ------------------------------------------------------------------ 1. a stale second release


async def test_a_second_release_never_touches_the_next_borrower(db: Database) -> None:
    pool = db.pool
    a = await pool.acquire()
    try:
        await db.insert(a, 1)
        raise RuntimeError("the request failed")
    except RuntimeError:
        await pool.release(a)  # the release in `except` ...
        # ... and, between it and the one in `finally`, another task takes the connection.
        b = await pool.acquire()
        await b.execute("BEGIN")
        await db.insert(b, 2)
    finally:
        with pytest.raises(ValueError, match="already released"):
            await pool.release(a)  # ... the release in `finally`, through the stale handle

    # B's transaction was not rolled back half-way: its next write is inside it, and commits.
    assert await db.in_transaction(b)
    await db.insert(b, 3)
    # Nobody else was lent B's live connection meanwhile.
    with pytest.raises(PoolTimeout):
        await pool.acquire(timeout=0.05)
    await b.execute("COMMIT")
    await pool.release(b)
    assert await db.committed() == [1, 2, 3]
    assert pool.stats().stale_releases == 1


async def test_a_release_inside_async_with_makes_the_exit_refuse(db: Database) -> None:
    pool = db.pool
    holder_began = asyncio.Event()
    done = asyncio.Event()

    async def next_borrower() -> None:
        async with pool.acquire() as b, transaction(pool, b):
            await db.insert(b, 2)
            holder_began.set()
            await done.wait()
            await db.insert(b, 3)

    borrowers: list[asyncio.Task[None]] = []

    async def release_inside_async_with() -> None:
        async with pool.acquire() as a:
            await db.insert(a, 1)
            await pool.release(a)
            borrowers.append(asyncio.create_task(next_borrower()))
            await holder_began.wait()
            # leaving the block releases `a` again, while the next borrower is mid-transaction

    with pytest.raises(ValueError, match="already released"):
        await release_inside_async_with()
    done.set()
    await borrowers[0]
    assert await db.committed() == [1, 2, 3]


async def test_a_transaction_block_of_the_next_borrower_reports_the_truth(db: Database) -> None:
    """The stale release cannot turn B's block into autocommitted statements that "succeed"."""
    pool = db.pool
    a = await pool.acquire()
    await pool.release(a)

    async def two_writes_then_undo(b: Any) -> None:
        async with transaction(pool, b):
            await db.insert(b, 1)
            with pytest.raises(ValueError, match="already released"):
                await pool.release(a)
            await db.insert(b, 2)
            raise RuntimeError("undo both")

    async with pool.acquire() as b:
        with pytest.raises(RuntimeError, match="undo"):
            await two_writes_then_undo(b)
    assert await db.committed() == []


# ------------------------------------------------------------------ 2. use after release


async def test_a_statement_through_a_released_handle_runs_nowhere(db: Database) -> None:
    pool = db.pool
    a = await pool.acquire()
    insert_later = a.execute  # a method fetched before the release refuses after it too
    await pool.release(a)
    async with pool.acquire() as b:
        await b.execute("BEGIN")
        with pytest.raises(ConnectionReleased, match="released back to pool"):
            await db.insert(a, 1)
        args: tuple[object, ...] = (9,) if db.kind == "postgres" else ((9,),)
        with pytest.raises(ConnectionReleased):
            await insert_later(db.insert_sql(), *args)
        await db.insert(b, 2)
        await b.execute("COMMIT")
    # Had a stale statement run, it would have run inside B's transaction and been committed.
    assert await db.committed() == [2]
    assert pool.stats().stale_uses >= 2


async def test_the_lent_connection_is_the_drivers_type(db: Database) -> None:
    async with db.pool.acquire() as conn:
        expected = asyncpg.Connection if db.kind == "postgres" else aiosqlite.Connection
        lent: object = conn
        assert isinstance(lent, Lease)
        assert isinstance(conn, expected)
        assert type(raw_connection(conn)) is not type(conn)
        assert isinstance(raw_connection(conn), expected)
    with pytest.raises(ConnectionReleased):
        raw_connection(conn)


async def test_detach_ends_the_lease_and_gives_the_raw_connection(db: Database) -> None:
    pool = db.pool
    lease = await pool.acquire()
    raw = pool.detach(lease)
    assert not isinstance(raw, Lease)
    with pytest.raises(ConnectionReleased, match="detached"):
        await db.insert(lease, 1)
    with pytest.raises(ValueError, match="already detached"):
        await pool.release(lease)
    await db.insert(raw, 2)  # the raw connection is the caller's now
    await pool.driver.close(raw)
    assert await db.committed() == [2]


# ------------------------------------------------------------------ 3. a transaction ending late


async def test_a_transaction_finalized_after_its_release_sends_nothing(db: Database) -> None:
    """An ``async with`` transaction inside an async generator that is closed only after the
    connection went back (asyncpg issue #232)."""
    pool = db.pool

    async def rows(conn: Any) -> AsyncGenerator[int, None]:
        async with transaction(pool, conn):
            await db.insert(conn, 1)
            for value in (1, 2, 3):
                yield value

    async with pool.acquire() as a:
        generator = rows(a)
        async for _ in generator:
            break  # the generator is suspended inside its transaction block
    # `a` was released (its transaction rolled back by the reset); B takes the connection.
    async with pool.acquire() as b:
        await b.execute("BEGIN")
        await db.insert(b, 2)
        # The block's exit would send ROLLBACK into B's session; through the ended lease it
        # sends nothing (an exit by GeneratorExit is quiet, as asyncpg's own guard makes it).
        await generator.aclose()
        assert await db.in_transaction(b)
        await db.insert(b, 3)
        await b.execute("COMMIT")
    assert await db.committed() == [2, 3]


# ------------------------------------------------------------------ 4. release while running


async def test_a_release_from_another_task_while_a_statement_runs(
    db: Database, tmp_path: Path
) -> None:
    """The connection is not lent again until the statement has ended and the connection is
    clean; the next borrower never meets "another operation is in progress"."""
    pool = db.pool
    holder = await pool.acquire()
    await holder.execute("BEGIN")
    await db.insert(holder, 1)
    if db.kind == "postgres":
        statement = asyncio.create_task(holder.fetchval("SELECT pg_sleep(0.3)"))
    else:
        statement = asyncio.create_task(holder.execute(SLOW_COUNT.format(start=1)))
    await wait_until(lambda: raw_connection(holder) is not None)  # the statement has begun
    await asyncio.sleep(0.05)
    await pool.release(holder)  # from this task, through the current lease: allowed
    async with pool.acquire() as b:
        assert not await db.in_transaction(b)
        await db.insert(b, 2)
    if db.kind == "postgres":
        await statement  # it was waited for, not cut
    else:
        with pytest.raises(sqlite3.OperationalError, match="interrupt"):
            await statement  # SQLite stops it: the release interrupts the statement
    assert await db.committed() == [2]


async def test_a_borrower_that_caught_its_cancellation_releases_later(db: Database) -> None:
    pool = db.pool
    holder_ready = asyncio.Event()

    async def holder() -> None:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await db.insert(conn, 1)
        holder_ready.set()
        try:
            if db.kind == "postgres":
                await conn.fetchval("SELECT pg_sleep(30)")
            else:
                await conn.execute(SLOW_COUNT.format(start=1))
        except asyncio.CancelledError:
            pass  # caught, and the task goes on: a mistake, but a common one
        await asyncio.sleep(0)
        await pool.release(conn)

    task = asyncio.create_task(holder())
    await holder_ready.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    await task
    async with pool.acquire(timeout=10) as b:
        assert not await db.in_transaction(b)
        await db.insert(b, 2)
    assert await db.committed() == [2]


# ------------------------------------------------------------------ 5. init leaves a transaction


async def _begin(conn: Any) -> None:
    await conn.execute("BEGIN")


async def test_an_init_that_leaves_a_transaction_open_fails_the_connect(
    postgres_url: str, tmp_path: Path
) -> None:
    drivers: list[Any] = [
        PostgresDriver(postgres_url, init=_begin),
        SQLiteDriver(tmp_path / "init.db", init=_begin),
    ]
    for driver in drivers:
        async with Pool(driver, max_size=1, close_driver=True) as pool:
            with pytest.raises(PoolConnectError, match="init") as raised:
                await pool.acquire()
            assert "transaction" in str(raised.value)
            assert pool.stats().size == 0


async def test_an_init_that_leaves_no_transaction_is_fine(tmp_path: Path) -> None:
    async def init(conn: aiosqlite.Connection) -> None:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TABLE IF NOT EXISTS t (x integer)")
        await conn.execute("COMMIT")

    path = tmp_path / "ok.db"
    pool = Pool(SQLiteDriver(path, init=init), close_driver=True)
    async with pool, pool.acquire() as conn:
        await conn.execute("INSERT INTO t VALUES (1)")
    assert raw_value(f"file:{path}", "SELECT count(*) FROM t") == 1


# ------------------------------------------------------------------ PostgreSQL specifics


@pytest.fixture
async def pg_pool(postgres_url: str) -> AsyncIterator[Pool[asyncpg.Connection]]:
    pool: Pool[asyncpg.Connection] = Pool(PostgresDriver(postgres_url), max_size=1)
    async with pool:
        yield pool


def test_every_public_method_of_asyncpg_connection_is_guarded() -> None:
    lease_class = PostgresDriver.lease_class
    for name, _ in inspect.getmembers(asyncpg.Connection, inspect.isfunction):
        if not name.startswith("_"):
            assert name in vars(lease_class), f"{name} is not guarded by the lease"


async def test_objects_born_of_a_postgres_lease_refuse_after_it(
    pg_pool: Pool[asyncpg.Connection],
) -> None:
    async with pg_pool.acquire() as a:
        statement = await a.prepare("SELECT 1")
        transaction = a.transaction()
        cursor = a.cursor("SELECT generate_series(1, 3)")
    async with pg_pool.acquire() as b:
        with pytest.raises(asyncpg.InterfaceError, match="released"):
            await statement.fetchval()
        with pytest.raises(asyncpg.InterfaceError, match="released"):
            await transaction.start()
        async with b.transaction():
            with pytest.raises(asyncpg.InterfaceError, match="released"):
                await cursor
        assert await b.fetchval("SELECT 2") == 2


async def test_use_after_release_is_also_asyncpgs_interface_error(
    pg_pool: Pool[asyncpg.Connection],
) -> None:
    async with pg_pool.acquire() as a:
        pass
    with pytest.raises(asyncpg.InterfaceError) as raised:
        await a.fetchval("SELECT 1")
    assert isinstance(raised.value, ReleasedConnectionError)
    assert isinstance(raised.value, ConnectionReleased)
    assert raised.value.pool_name == pg_pool.name


async def test_listeners_of_a_lend_never_fire_for_the_next_borrower(
    pg_pool: Pool[asyncpg.Connection],
) -> None:
    heard: list[str] = []
    channel = f"ch_{uuid.uuid4().hex[:8]}"
    async with pg_pool.acquire() as a:
        await a.add_listener(channel, lambda *args: heard.append("notification"))
        a.add_log_listener(lambda *args: heard.append("log"))
        a.add_query_logger(lambda *args: heard.append("query"))
        a.add_termination_listener(lambda *args: heard.append("termination"))
        await a.execute(f"NOTIFY {channel}")
        await wait_until(lambda: "notification" in heard)
    heard.clear()
    async with pg_pool.acquire() as b:
        await b.execute(f"NOTIFY {channel}")
        await b.execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
        await b.fetchval("SELECT 1")
        listening = await b.fetchval("SELECT count(*) FROM pg_listening_channels()")
    await asyncio.sleep(0.05)
    assert heard == []
    assert listening == 0  # the lend's LISTEN ended with it


async def test_a_listener_of_a_detached_connection_stays(
    pg_pool: Pool[asyncpg.Connection],
) -> None:
    heard: asyncio.Event = asyncio.Event()
    channel = f"ch_{uuid.uuid4().hex[:8]}"
    lease = await pg_pool.acquire()
    await lease.add_listener(channel, lambda *args: heard.set())
    raw = pg_pool.detach(lease)
    try:
        await raw.execute(f"NOTIFY {channel}")
        await asyncio.wait_for(heard.wait(), 10)
    finally:
        await raw.close()


# ------------------------------------------------------------------ SQLite specifics


def test_every_public_method_of_aiosqlite_connection_runs_through_the_lease() -> None:
    lease_class = SQLiteDriver.lease_class
    for name, _ in inspect.getmembers(aiosqlite.Connection, inspect.isfunction):
        if not name.startswith("_") and name != "stop":
            assert name in vars(lease_class), f"{name} does not run through the lease"


async def test_a_cursor_born_of_a_sqlite_lease_refuses_after_it(tmp_path: Path) -> None:
    gate = Gate(closed=False)
    async with Pool(
        SQLiteDriver(tmp_path / "c.db", init=gate.install), max_size=1, close_driver=True
    ) as pool:
        async with pool.acquire() as a:
            await a.execute("CREATE TABLE t (x integer)")
            cursor = await a.execute("SELECT 1 UNION SELECT 2")
            assert cursor.connection is not None
        async with pool.acquire() as b:
            await b.execute("BEGIN")
            with pytest.raises(ConnectionReleased):
                await cursor.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(ConnectionReleased):
                await cursor.fetchall()
            await b.execute("COMMIT")
            rows = await b.execute_fetchall("SELECT count(*) FROM t")
            assert list(rows) == [(0,)]


# ------------------------------------------------------------------ the fake driver


@pytest.fixture
async def fake_pool() -> AsyncIterator[Pool[FakeConnection]]:
    async with Pool(FakeDriver(), max_size=1) as pool:
        yield pool


async def test_the_fake_waits_for_a_statement_running_at_release() -> None:
    driver = FakeDriver(query_latency=0.2)
    async with Pool(driver, max_size=1) as pool:
        holder = await pool.acquire()
        statement = asyncio.create_task(holder.execute("BEGIN"))
        await asyncio.sleep(0.01)
        await pool.release(holder)  # the BEGIN is still on its way
        await statement
        async with pool.acquire() as b:
            assert not b.in_transaction  # rolled back after the BEGIN landed
            assert b.executed[-1] == ("ROLLBACK", ())


async def test_the_fake_refuses_a_transaction_finalized_after_its_release(
    fake_pool: Pool[FakeConnection],
) -> None:
    driver = fake_pool.driver
    assert isinstance(driver, FakeDriver)

    async def rows(conn: FakeConnection) -> AsyncGenerator[int, None]:
        async with driver.transaction(conn):
            yield 1

    async with fake_pool.acquire() as a:
        generator = rows(a)
        await generator.__anext__()
    async with fake_pool.acquire() as b:
        await b.execute("BEGIN")
        await generator.aclose()
        assert b.executed[-1] == ("BEGIN", ())
        assert b.in_transaction


async def test_a_fake_transaction_block_that_outlives_its_lease_refuses_to_commit(
    fake_pool: Pool[FakeConnection],
) -> None:
    driver = fake_pool.driver
    assert isinstance(driver, FakeDriver)
    lent: list[FakeConnection] = []

    async def block_outliving_its_lease() -> None:
        async with fake_pool.acquire() as a, driver.transaction(a):
            await fake_pool.release(a)
            b = await fake_pool.acquire()
            lent.append(b)
            await b.execute("BEGIN")

    with pytest.raises(ValueError, match="already released") as raised:
        await block_outliving_its_lease()
    [b] = lent
    # The block's COMMIT was refused first; then the exit's second release.
    assert isinstance(raised.value.__context__, ConnectionReleased)
    assert b.executed[-1] == ("BEGIN", ())  # no COMMIT from the stale block reached B
    assert b.in_transaction
    await fake_pool.release(b)


async def test_a_fake_connect_that_leaves_a_transaction_fails() -> None:
    class BeginningDriver(FakeDriver):
        async def connect(self) -> FakeConnection:
            conn = await super().connect()
            await conn.execute("BEGIN")
            return conn

    driver = BeginningDriver()
    async with Pool(driver) as pool:
        with pytest.raises(PoolConnectError, match="init"):
            await pool.acquire()
    assert driver.live == 0


def test_the_built_in_drivers_have_the_lease_abilities(tmp_path: Path) -> None:
    for driver in (FakeDriver(), SQLiteDriver(tmp_path / "x.db"), PostgresDriver()):
        assert isinstance(driver, SupportsLease)
        assert isinstance(driver, SupportsTransactionStatus)


# ------------------------------------------------------------------ third-party drivers


class _GenericLeaseDriver(MinimalDriver):
    """A third-party driver that opts in with the generic lease: attribute-level guarding."""

    lease_class = Lease


async def test_a_driver_with_the_generic_lease_gets_lease_identity() -> None:
    async with Pool(_GenericLeaseDriver(), max_size=1) as pool:
        a = await pool.acquire()
        assert isinstance(a, MinimalConn)
        await pool.release(a)
        b = await pool.acquire()
        with pytest.raises(ValueError, match="already released"):
            await pool.release(a)
        with pytest.raises(ConnectionReleased):
            _ = a.number
        a_raw_number = raw_connection(b).number
        assert b.number == a_raw_number
        with pytest.raises(AttributeError):
            b.closed = True  # the generic lease forwards reads only (see guarded_attribute)
        await pool.release(b)


async def test_a_driver_without_leases_lends_its_own_objects() -> None:
    driver = MinimalDriver()
    async with Pool(driver, max_size=1) as pool:
        conn = await pool.acquire()
        assert conn is driver.opened[0]
        assert raw_connection(conn) is conn
        await pool.release(conn)
        with pytest.raises(ValueError, match="already released"):
            await pool.release(conn)  # caught while the connection is idle, at least


def test_a_lease_class_that_is_not_a_lease_is_refused_at_once() -> None:
    class Confused(MinimalDriver):
        lease_class = MinimalConn

    with pytest.raises(TypeError, match="lease_class"):
        Pool(Confused())


async def test_a_lease_cannot_be_copied(fake_pool: Pool[FakeConnection]) -> None:
    import copy

    async with fake_pool.acquire() as conn:
        with pytest.raises(TypeError, match="cannot be copied"):
            copy.copy(conn)
        assert "execute" in dir(conn)
        assert "lease of <FakeConnection 1" in repr(conn)
    assert "(released)" in repr(conn)


async def test_a_release_under_a_running_prepared_statement_waits_for_it(
    pg_pool: Pool[asyncpg.Connection],
) -> None:
    """A statement run through a prepared statement is not counted by the lease: the release
    waits until asyncpg accepts a statement again, so the next borrower gets a free connection."""
    holder = await pg_pool.acquire()
    sleep = await holder.prepare("SELECT pg_sleep(0.3)")
    running = asyncio.create_task(sleep.fetchval())
    await asyncio.sleep(0.05)
    await pg_pool.release(holder)
    async with pg_pool.acquire() as b:
        assert await b.fetchval("SELECT 7") == 7  # never "another operation is in progress"
    assert await running is None  # it ran to its end: the release waited for it
    assert pg_pool.stats().discarded == 0


async def test_a_release_during_a_commit_waits_for_it(
    pg_pool: Pool[asyncpg.Connection],
) -> None:
    """A COMMIT sent by a transaction block is not counted by the lease either; a deferred
    trigger makes it slow, and a release from another task during it must wait for it."""
    table = f"t_{uuid.uuid4().hex[:10]}"
    async with pg_pool.acquire() as setup:
        await setup.execute(
            f"""
            CREATE TABLE {table} (x int);
            CREATE FUNCTION {table}_slow() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON {table}
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {table}_slow();
            """
        )
    holder = await pg_pool.acquire()
    inserted = asyncio.Event()

    async def write() -> None:
        async with holder.transaction():
            await holder.execute(f"INSERT INTO {table} VALUES (1)")
            inserted.set()
        # the block's COMMIT, slowed down by the trigger, is on its way now

    writer = asyncio.create_task(write())
    await inserted.wait()
    await asyncio.sleep(0.1)
    await pg_pool.release(holder)  # from another task, during the COMMIT
    async with pg_pool.acquire() as b:
        assert not b.is_in_transaction()
        rows = await b.fetch(f"SELECT x FROM {table}")
        await b.execute(f"DROP TABLE {table}; DROP FUNCTION {table}_slow()")
    await writer
    assert [row[0] for row in rows] == [1]  # the COMMIT finished before anyone else came
    assert pg_pool.stats().discarded == 0


@pytest.mark.parametrize(
    "connection_class", [asyncpg.Connection, aiosqlite.Connection, FakeConnection]
)
def test_no_name_of_the_lease_itself_hides_one_of_the_connection(
    connection_class: type[object],
) -> None:
    """The lease forwards only the names it lacks: its own fields and helpers must not shadow
    (or be clobbered by) what a driver's connection has."""
    own = {name for name in dir(Lease) if name.startswith("_") and not name.startswith("__")}
    own |= set(Lease.__slots__) - {"__weakref__"}  # (every weak-referenceable object has it)
    assert not own & set(dir(connection_class))
    instance_fields = {"_connection", "_running", "_driver", "_closed", "_id", "_protocol"}
    assert not own & instance_fields


# ------------------------------------------------------------------ the hooks of a driver's lease


class _UndoingLease(Lease[FakeConnection]):
    """A third-party lease that has something to undo at each release, some of it awaited."""

    __slots__ = ()

    execute = guarded_statement("execute")
    undone: ClassVar[list[str]] = []
    fail_undo: ClassVar[bool] = False

    def remember(self, what: str) -> None:
        async def undo_later(conn: FakeConnection) -> None:
            if self.fail_undo:
                raise RuntimeError("undo failed")
            self.undone.append(f"{what} (awaited)")

        self._undo_at_release(lambda conn: self.undone.append(what))
        self._undo_at_release(undo_later)
        self._undo_at_release(undo_later)


class _UndoingDriver(FakeDriver):
    lease_class = _UndoingLease


async def test_a_lease_undoes_what_was_left_after_its_statements_ended() -> None:
    _UndoingLease.undone.clear()
    _UndoingLease.fail_undo = False
    driver = _UndoingDriver(query_latency=0.05)
    async with Pool(driver, max_size=1) as pool:
        conn = await pool.acquire()
        conn.remember("listener")  # type: ignore[attr-defined]
        running = asyncio.create_task(conn.execute("SELECT 1"))
        await asyncio.sleep(0.01)
        await pool.release(conn)  # waits for the statement, then undoes what was left
        assert running.done()
        # Newest first: the plain undo runs as it is called, the awaited ones after it.
        assert _UndoingLease.undone == ["listener", "listener (awaited)", "listener (awaited)"]
        assert pool.stats().discarded == 0


async def test_a_failed_undo_discards_the_connection_and_awaits_nothing_more() -> None:
    _UndoingLease.undone.clear()
    _UndoingLease.fail_undo = True
    try:
        async with Pool(_UndoingDriver(), max_size=1) as pool:
            conn = await pool.acquire()
            conn.remember("listener")  # type: ignore[attr-defined]
            await pool.release(conn)
            assert pool.stats().discarded == 1  # never lent with the undo half done
    finally:
        _UndoingLease.fail_undo = False


async def test_an_ended_lease_answers_probes_for_special_names_as_usual(
    fake_pool: Pool[FakeConnection],
) -> None:
    async with fake_pool.acquire() as conn:
        pass
    assert getattr(conn, "__no_such_name__", "absent") == "absent"
    half_made = Lease.__new__(Lease)
    with pytest.raises(AttributeError):
        _ = half_made.execute


async def test_a_sqlite_lease_sets_the_row_factory_while_it_lasts(tmp_path: Path) -> None:
    async with Pool(SQLiteDriver(tmp_path / "r.db"), close_driver=True) as pool:
        async with pool.acquire() as conn:
            conn.row_factory = aiosqlite.Row
            rows = list(await conn.execute_fetchall("SELECT 1 AS one"))
            assert rows[0]["one"] == 1
        with pytest.raises(ConnectionReleased):
            conn.row_factory = None
