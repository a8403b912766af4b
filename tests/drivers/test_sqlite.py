"""The SQLite driver against real SQLite databases: files under ``tmp_path``, and memory ones.

Each test reaches the database as a user would, through ``create_pool("sqlite:///...")`` or a
``Pool(SQLiteDriver(...))``, or calls the driver directly where the contract itself is tested.
Statements that must be caught in the middle tell the test when they started (see
``sqlite_helpers``), so no test sleeps to let something happen. After every test, every
connection's worker thread must have ended: a thread left behind would be a leaked connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from helpers import finishes_at_once, wait_until
from sqlite_helpers import (
    NUMBERS,
    SLOW_COUNT,
    Gate,
    StatementStarted,
    fetch_value,
    raw_value,
    wait_for_worker_threads,
    worker_threads,
)

from aiodbpool import (
    Driver,
    Pool,
    PoolConnectError,
    SupportsTerminate,
    SupportsTransaction,
    raw_connection,
)
from aiodbpool import create_pool as _create_pool
from aiodbpool.drivers.sqlite import MEMORY, SQLiteDriver, from_url

WRITERS = 200
"""Concurrent writing tasks in the load tests."""


def create_pool(url: str, **options: Any) -> Pool[aiosqlite.Connection]:
    """``aiodbpool.create_pool``, typed for this driver's connections."""
    pool: Pool[aiosqlite.Connection] = _create_pool(url, **options)
    return pool


def driver_of(pool: Pool[aiosqlite.Connection]) -> SQLiteDriver:
    driver = pool.driver
    assert isinstance(driver, SQLiteDriver)
    return driver


def _in_transaction(conn: aiosqlite.Connection) -> bool:
    """``conn.in_transaction``, read through a call so type checkers do not narrow it."""
    return conn.in_transaction


@pytest.fixture(autouse=True)
async def _every_connection_is_closed_in_the_end() -> AsyncIterator[None]:
    before = worker_threads()
    yield
    await wait_for_worker_threads(before)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The URL of a fresh database file: ``sqlite:///`` followed by an absolute path."""
    return f"sqlite:///{tmp_path / 'app.db'}"


# ------------------------------------------------------------------ the contract


def test_satisfies_the_driver_protocols(tmp_path: Path) -> None:
    driver: Driver[aiosqlite.Connection] = SQLiteDriver(tmp_path / "app.db")
    terminate: SupportsTerminate[aiosqlite.Connection] = SQLiteDriver(MEMORY)
    transaction: SupportsTransaction[aiosqlite.Connection] = SQLiteDriver(MEMORY)
    assert isinstance(driver, Driver)
    assert isinstance(terminate, SupportsTerminate)
    assert isinstance(transaction, SupportsTransaction)


def test_create_pool_finds_the_driver_by_its_scheme(db_url: str) -> None:
    pool = create_pool(db_url, max_size=3)
    assert isinstance(pool.driver, SQLiteDriver)
    assert pool.stats().max_size == 3


async def test_connections_are_aiosqlite_connections(db_url: str) -> None:
    async with create_pool(db_url) as pool, pool.acquire() as conn:
        assert isinstance(conn, aiosqlite.Connection)
        assert await fetch_value(conn, "SELECT 40 + 2") == 42


# ------------------------------------------------------------------ URLs


async def test_a_relative_path_is_resolved_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    pool = create_pool("sqlite:///data/app.db")
    monkeypatch.chdir("/")  # the database stays where it was when the pool was made
    assert driver_of(pool).database == str(tmp_path / "data" / "app.db")
    async with pool, pool.acquire() as conn:
        await conn.execute("CREATE TABLE t (x)")
    assert (tmp_path / "data" / "app.db").is_file()


async def test_an_absolute_path_has_four_slashes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'abs.db'}"
    assert url.startswith("sqlite:////")
    async with create_pool(url) as pool, pool.acquire() as conn:
        await conn.execute("CREATE TABLE t (x)")
    assert driver_of(pool).database == str(tmp_path / "abs.db")
    assert raw_value(driver_of(pool).uri, "SELECT count(*) FROM t") == 0


async def test_a_percent_encoded_path_names_the_decoded_file(tmp_path: Path) -> None:
    pool = create_pool(f"sqlite:///{tmp_path}/my%20data%3F%23.db")
    async with pool, pool.acquire() as conn:
        await conn.execute("CREATE TABLE t (x)")
    assert (tmp_path / "my data?#.db").is_file()


def test_the_memory_url_names_the_shared_memory_database() -> None:
    driver = driver_of(create_pool("sqlite:///:memory:"))
    assert driver.database == MEMORY
    assert "vfs=memdb" in driver.uri
    assert repr(driver) == "<SQLiteDriver ':memory:'>"


def test_repr_shows_the_database_path_and_a_read_only_mode(tmp_path: Path) -> None:
    assert repr(SQLiteDriver(tmp_path / "app.db")) == f"<SQLiteDriver '{tmp_path / 'app.db'}'>"
    read_only = SQLiteDriver(tmp_path / "app.db", mode="ro")
    assert repr(read_only) == f"<SQLiteDriver '{tmp_path / 'app.db'}' mode=ro>"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqlite://host/app.db", "names a host ('host')"),
        ("sqlite://localhost/app.db", "names a host ('localhost')"),
        ("sqlite://user:secret@/app.db", "names a host ('user:***@')"),
        ("sqlite://", "names no database"),
        ("sqlite:///", "names no database"),
        ("sqlite:app.db", "names no database"),
        ("sqlite:///app.db#main", "has a #fragment"),
    ],
)
def test_a_malformed_url_says_what_is_wrong_and_what_is_expected(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="sqlite URL") as raised:
        from_url(url)
    message = str(raised.value)
    assert problem in message
    assert (
        "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:" in message
    )
    assert "secret" not in message


def test_create_pool_rejects_a_malformed_sqlite_url() -> None:
    with pytest.raises(ValueError, match="names a host"):
        create_pool("sqlite://db.example.com/app.db")


def test_from_url_refuses_another_scheme() -> None:
    with pytest.raises(ValueError, match="not a sqlite:// URL"):
        from_url("postgresql://localhost/app")


async def test_url_parameters_set_options(tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path / 'app.db'}?journal_mode=DELETE&synchronous=full"
        "&busy_timeout=0.25&foreign_keys=off&transaction_mode=exclusive&mode=rwc"
    )
    async with create_pool(url) as pool, pool.acquire() as conn:
        assert await fetch_value(conn, "PRAGMA journal_mode") == "delete"
        assert await fetch_value(conn, "PRAGMA synchronous") == 2
        assert await fetch_value(conn, "PRAGMA busy_timeout") == 250
        assert await fetch_value(conn, "PRAGMA foreign_keys") == 0


async def test_keyword_options_override_url_parameters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}?busy_timeout=1"
    pool = create_pool(url, busy_timeout=2, foreign_keys=False)
    async with pool, pool.acquire() as conn:
        assert await fetch_value(conn, "PRAGMA busy_timeout") == 2000
        assert await fetch_value(conn, "PRAGMA foreign_keys") == 0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("color=blue", "unknown sqlite:// URL parameter 'color'; known: mode, journal_mode"),
        ("busy_timeout=soon", "busy_timeout='soon' is not valid"),
        ("foreign_keys=maybe", "foreign_keys='maybe' is not valid"),
        ("busy_timeout=1&busy_timeout=2", "'busy_timeout' is given more than once"),
        ("mode=readonly", "mode must be one of rwc, rw, ro; got 'readonly'"),
    ],
)
def test_a_bad_url_parameter_is_named(tmp_path: Path, query: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        from_url(f"sqlite:///{tmp_path / 'app.db'}?{query}")


@pytest.mark.parametrize("flag", ["1", "true", "On", "yes"])
def test_boolean_url_parameters_accept_the_usual_words(tmp_path: Path, flag: str) -> None:
    from_url(f"sqlite:///{tmp_path / 'app.db'}?foreign_keys={flag}")


def test_an_unknown_option_is_named(db_url: str) -> None:
    with pytest.raises(TypeError, match=r"unknown option 'max_sise'.*neither an option of"):
        create_pool(db_url, max_sise=4)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"database": ""}, ValueError, "got an empty string"),
        ({"database": b"app.db"}, TypeError, "database must be a path"),
        ({"mode": "ro", "database": MEMORY}, ValueError, "mode='ro' does not apply to ':memory:'"),
        ({"journal_mode": "fast"}, ValueError, "journal_mode must be one of wal, delete"),
        ({"synchronous": 1}, ValueError, "synchronous must be one of off, normal"),
        ({"busy_timeout": "5"}, TypeError, "busy_timeout must be a number of seconds"),
        ({"busy_timeout": True}, TypeError, "busy_timeout must be a number of seconds"),
        ({"busy_timeout": -1}, ValueError, "busy_timeout must be a finite number"),
        ({"busy_timeout": float("nan")}, ValueError, "busy_timeout must be a finite number"),
        ({"foreign_keys": "on"}, TypeError, "foreign_keys must be True or False"),
        ({"transaction_mode": "serializable"}, ValueError, "transaction_mode must be one of"),
        ({"init": "PRAGMA x"}, TypeError, "init must be an async function"),
    ],
)
def test_a_bad_option_is_named(
    tmp_path: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"database": str(tmp_path / "app.db")} | options
    with pytest.raises(error, match=re.escape(message)):
        SQLiteDriver(**arguments)


# ------------------------------------------------------------------ how connections are configured


async def test_a_file_database_uses_wal_a_busy_timeout_and_foreign_keys(db_url: str) -> None:
    async with create_pool(db_url) as pool, pool.acquire() as conn:
        assert await fetch_value(conn, "PRAGMA journal_mode") == "wal"
        assert await fetch_value(conn, "PRAGMA synchronous") == 1  # NORMAL
        assert await fetch_value(conn, "PRAGMA busy_timeout") == 5000
        assert await fetch_value(conn, "PRAGMA foreign_keys") == 1
        assert conn.isolation_level is None


async def test_without_wal_synchronous_keeps_sqlites_default(db_url: str) -> None:
    async with create_pool(db_url, journal_mode="truncate") as pool, pool.acquire() as conn:
        assert await fetch_value(conn, "PRAGMA journal_mode") == "truncate"
        assert await fetch_value(conn, "PRAGMA synchronous") == 2  # FULL


async def test_the_memory_database_keeps_its_journal_in_memory() -> None:
    async with create_pool("sqlite:///:memory:") as pool, pool.acquire() as conn:
        assert await fetch_value(conn, "PRAGMA journal_mode") == "memory"
        assert await fetch_value(conn, "PRAGMA busy_timeout") == 5000
        assert await fetch_value(conn, "PRAGMA foreign_keys") == 1


async def test_foreign_keys_are_enforced(db_url: str) -> None:
    async with create_pool(db_url) as pool, pool.acquire() as conn:
        await conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await conn.execute("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id))")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await conn.execute("INSERT INTO child VALUES (1)")


async def test_read_only_mode_reads_and_refuses_writes(tmp_path: Path, db_url: str) -> None:
    async with create_pool(db_url) as pool, pool.acquire() as conn:
        await conn.execute("CREATE TABLE t (x)")
        await conn.execute("INSERT INTO t VALUES (1)")
    async with create_pool(f"{db_url}?mode=ro") as pool, pool.acquire() as conn:
        assert await fetch_value(conn, "SELECT x FROM t") == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await conn.execute("INSERT INTO t VALUES (2)")


async def test_read_write_mode_does_not_create_a_missing_file(tmp_path: Path) -> None:
    pool = create_pool(f"sqlite:///{tmp_path / 'typo.db'}?mode=rw", connect_timeout=10)
    async with pool:
        with pytest.raises(PoolConnectError, match="unable to open database file"):
            await pool.acquire()
    assert not (tmp_path / "typo.db").exists()


async def test_a_connect_that_cannot_switch_to_wal_fails_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    reader = sqlite3.connect(path, isolation_level=None)  # a rollback-journal database
    reader.execute("CREATE TABLE t (x)")
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()  # its read lock keeps WAL from being enabled
    try:
        async with create_pool(f"sqlite:///{path}", busy_timeout=0) as pool:
            with pytest.raises(PoolConnectError, match="database is locked"):
                await pool.acquire()
    finally:
        reader.close()


async def test_init_runs_with_each_new_connection(db_url: str) -> None:
    opened: list[aiosqlite.Connection] = []

    async def init(conn: aiosqlite.Connection) -> None:
        await conn.create_function("shout", 1, lambda text: f"{text}!".upper())
        conn.row_factory = aiosqlite.Row
        opened.append(conn)

    pool = create_pool(db_url, init=init, max_size=2)
    async with pool, pool.acquire() as first, pool.acquire() as second:
        for conn in (first, second):
            async with conn.execute("SELECT shout('hi') AS said") as cursor:
                row = await cursor.fetchone()
            assert row is not None
            assert row["said"] == "HI!"
        # init gets the driver's own connections; the pool lends a lease standing in for each.
        assert opened == [raw_connection(first), raw_connection(second)]


async def test_a_failing_init_fails_the_connect_and_leaves_no_thread(db_url: str) -> None:
    async def init(conn: aiosqlite.Connection) -> None:
        raise LookupError("no such extension")

    async with create_pool(db_url, init=init) as pool:
        with pytest.raises(PoolConnectError, match="LookupError: no such extension"):
            await pool.acquire()
    # (The fixture checks that the connection's thread ended.)


async def test_connections_opened_together_on_a_new_file_all_switch_it_to_wal(
    tmp_path: Path,
) -> None:
    # Two connections switching a new file's journal mode at the same moment: SQLite refuses
    # one at once ("database is locked"), without waiting. The race is rare, hence many files.
    failures = 0
    for number in range(200):
        driver = SQLiteDriver(tmp_path / f"new-{number}.db")
        opened = await asyncio.gather(*(driver.connect() for _ in range(8)), return_exceptions=True)
        for conn in opened:
            if isinstance(conn, BaseException):
                failures += 1
            else:
                await driver.close(conn)
    assert failures == 0
    assert raw_value(driver.uri, "PRAGMA journal_mode") == "wal"


# ------------------------------------------------------------------ autocommit and reset


async def test_a_statement_outside_a_transaction_commits_at_once(db_url: str) -> None:
    async with create_pool(db_url, max_size=2) as pool:
        async with pool.acquire() as writer, pool.acquire() as reader:
            await writer.execute("CREATE TABLE t (x)")
            await writer.execute("INSERT INTO t VALUES (1)")
            assert not writer.in_transaction
            assert await fetch_value(reader, "SELECT count(*) FROM t") == 1
        async with pool.acquire() as conn:  # the release's reset dropped nothing
            assert await fetch_value(conn, "SELECT count(*) FROM t") == 1


async def test_a_clean_connection_resets_without_awaiting(db_url: str) -> None:
    async with create_pool(db_url) as pool, pool.acquire() as conn:
        await conn.execute("SELECT 1")
        assert finishes_at_once(pool.driver.reset(conn))
        await conn.execute("BEGIN")
        assert not finishes_at_once(pool.driver.reset(conn))
        await pool.driver.reset(conn)
        assert not conn.in_transaction


async def test_a_connection_its_user_closed_is_replaced(db_url: str) -> None:
    async with create_pool(db_url, max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.close()
            assert pool.driver.is_closed(conn)
            assert finishes_at_once(pool.driver.reset(conn))
            closed = raw_connection(conn)
        async with pool.acquire() as other:
            assert raw_connection(other) is not closed
            assert await fetch_value(other, "SELECT 1") == 1
        assert pool.stats().discarded == 1


# ------------------------------------------------------------------ ping, close, terminate


async def test_close_waits_for_queued_statements(tmp_path: Path) -> None:
    driver = SQLiteDriver(tmp_path / "app.db")
    conn = await driver.connect()
    await conn.execute("CREATE TABLE t (x)")
    inserting = asyncio.ensure_future(conn.execute("INSERT INTO t VALUES (1)"))
    await asyncio.sleep(0)  # one loop turn: the insert task runs its first step and queues it
    await driver.close(conn)
    await inserting
    assert raw_value(driver.uri, "SELECT count(*) FROM t") == 1


async def test_a_timed_out_close_returns_at_once_and_terminate_ends_it(tmp_path: Path) -> None:
    gate = Gate()
    driver = SQLiteDriver(tmp_path / "app.db", init=gate.install)
    conn = await driver.connect()
    query = asyncio.ensure_future(conn.execute("SELECT gate()"))
    await gate.wait_entered()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await driver.close(conn)  # cannot close while the thread is busy
    driver.terminate(conn)
    gate.open()
    with contextlib.suppress(sqlite3.OperationalError):  # or interrupted: either is fine
        await query
    await wait_until(lambda: driver.is_closed(conn))


async def test_terminate_interrupts_a_running_query_at_once(tmp_path: Path) -> None:
    gate = Gate(closed=False)
    driver = SQLiteDriver(tmp_path / "app.db", init=gate.install)
    conn = await driver.connect()
    query = asyncio.ensure_future(conn.execute(SLOW_COUNT.format(start="gate()")))
    await gate.wait_entered()
    started = time.monotonic()
    driver.terminate(conn)
    assert time.monotonic() - started < 1.0  # did not wait for the query
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        await query
    await wait_until(lambda: driver.is_closed(conn))
    driver.terminate(conn)  # terminating again does nothing, and raises nothing


async def test_terminate_stops_a_connection_the_driver_did_not_open(tmp_path: Path) -> None:
    driver = SQLiteDriver(tmp_path / "app.db")
    conn = await aiosqlite.connect(tmp_path / "app.db")
    driver.terminate(conn)
    await wait_until(lambda: driver.is_closed(conn))


async def test_terminate_does_not_wait_for_a_blocked_thread(tmp_path: Path) -> None:
    gate = Gate()
    driver = SQLiteDriver(tmp_path / "app.db", init=gate.install)
    conn = await driver.connect()
    query = asyncio.ensure_future(conn.execute("SELECT gate()"))
    await gate.wait_entered()
    driver.terminate(conn)  # the gate holds the thread: returning proves it did not wait
    assert not driver.is_closed(conn)
    with pytest.raises(ValueError, match="closed"):
        await conn.execute("SELECT 1")  # no new statement is accepted
    gate.open()
    with contextlib.suppress(sqlite3.OperationalError):  # or interrupted: either is fine
        await query
    await wait_until(lambda: driver.is_closed(conn))


# ------------------------------------------------------------------ transactions


async def _make_table(pool: Pool[aiosqlite.Connection], sql: str = "CREATE TABLE t (x)") -> None:
    async with pool.acquire() as conn:
        await conn.execute(sql)


async def test_a_transaction_block_gives_the_connection_it_runs_on(db_url: str) -> None:
    async with create_pool(db_url) as pool, pool.acquire() as conn:
        async with driver_of(pool).transaction(conn) as same:
            assert same is conn
            assert _in_transaction(conn)
        assert not _in_transaction(conn)


async def test_a_failed_commit_is_rolled_back_and_raised(db_url: str) -> None:
    async with create_pool(db_url) as pool:
        await _make_table(pool, "CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await _make_table(
            pool,
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)",
        )
        async with pool.acquire() as conn:
            with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
                async with driver_of(pool).transaction(conn):
                    await conn.execute("INSERT INTO child VALUES (42)")  # checked at COMMIT
            assert not conn.in_transaction
            assert await fetch_value(conn, "SELECT count(*) FROM child") == 0


async def test_a_transaction_inside_a_transaction_fails_and_leaves_the_outer_one(
    db_url: str,
) -> None:
    async with create_pool(db_url) as pool:
        await _make_table(pool)
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
                async with driver_of(pool).transaction(conn):
                    pass
            assert conn.in_transaction  # the user's own transaction is untouched
            await conn.execute("COMMIT")
            assert await fetch_value(conn, "SELECT count(*) FROM t") == 1


@pytest.mark.parametrize(
    ("mode", "holds_the_write_lock"),
    [("immediate", True), ("exclusive", True), ("deferred", False)],
)
async def test_transaction_mode_decides_when_the_write_lock_is_taken(
    db_url: str, mode: str, holds_the_write_lock: bool
) -> None:
    async with create_pool(db_url, transaction_mode=mode, busy_timeout=0) as pool:
        await _make_table(pool)
        async with pool.acquire() as conn, driver_of(pool).transaction(conn):
            assert _write_elsewhere(driver_of(pool).uri) == (
                "database is locked" if holds_the_write_lock else None
            )


def _write_elsewhere(uri: str) -> str | None:
    """Insert a row from a plain sqlite3 connection that does not wait for locks; the error."""
    other = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
    try:
        other.execute("INSERT INTO t VALUES (2)")
    except sqlite3.OperationalError as error:
        return str(error)
    finally:
        other.close()
    return None


async def test_a_deferred_transaction_that_read_fails_to_write_after_another_commit(
    db_url: str,
) -> None:
    """Why transactions begin IMMEDIATE by default: a deferred one has read a snapshot, another
    connection commits, and the deferred one can no longer write; SQLite fails it at once,
    whatever the busy timeout."""
    async with create_pool(db_url, transaction_mode="deferred", max_size=2) as pool:
        await _make_table(pool)
        async with pool.acquire() as conn, pool.acquire() as other:

            async def read_then_write() -> None:
                async with driver_of(pool).transaction(conn):
                    await fetch_value(conn, "SELECT count(*) FROM t")
                    await other.execute("INSERT INTO t VALUES ('other')")
                    await conn.execute("INSERT INTO t VALUES ('mine')")

            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await read_then_write()
            assert not conn.in_transaction
            assert await fetch_value(conn, "SELECT group_concat(x) FROM t") == "other"


async def test_an_immediate_transaction_makes_the_other_writer_wait(db_url: str) -> None:
    async with create_pool(db_url, max_size=2) as pool:
        await _make_table(pool)
        async with pool.acquire() as conn, pool.acquire() as other:
            async with driver_of(pool).transaction(conn):
                await fetch_value(conn, "SELECT count(*) FROM t")
                # Waits for the write lock (within busy_timeout) until the transaction commits.
                writing = asyncio.ensure_future(other.execute("INSERT INTO t VALUES ('other')"))
                await conn.execute("INSERT INTO t VALUES ('mine')")
            await writing
            rows = await fetch_value(conn, "SELECT group_concat(x, ',') FROM t ORDER BY rowid")
            assert rows == "mine,other"


# ------------------------------------------------------------------ many writers


async def test_200_writers_through_a_pool_of_4_lose_nothing(db_url: str) -> None:
    async with create_pool(db_url, max_size=4) as pool:
        await _make_table(pool, "CREATE TABLE t (writer INTEGER)")

        async def write(number: int) -> None:
            async with pool.acquire() as conn:
                await conn.execute("INSERT INTO t VALUES (?)", (number,))

        await asyncio.gather(*(write(number) for number in range(WRITERS)))
        async with pool.acquire() as conn:
            assert await fetch_value(conn, "SELECT count(DISTINCT writer) FROM t") == WRITERS
        assert pool.stats().created <= 4


@pytest.mark.parametrize("where", ["file", "memory"])
async def test_200_read_then_write_transactions_do_not_collide(tmp_path: Path, where: str) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}" if where == "file" else "sqlite:///:memory:"
    async with create_pool(url, max_size=4) as pool:
        await _make_table(pool, "CREATE TABLE counter (n INTEGER)")
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO counter VALUES (0)")
        driver = driver_of(pool)

        async def increment() -> None:
            async with pool.acquire() as conn, driver.transaction(conn):
                n = await fetch_value(conn, "SELECT n FROM counter")
                assert isinstance(n, int)
                await conn.execute("UPDATE counter SET n = ?", (n + 1,))

        await asyncio.gather(*(increment() for _ in range(WRITERS)))
        async with pool.acquire() as conn:
            assert await fetch_value(conn, "SELECT n FROM counter") == WRITERS


# ------------------------------------------------------------------ the shared memory database


async def test_the_memory_database_is_shared_by_the_pools_connections() -> None:
    pool = create_pool("sqlite:///:memory:", max_size=2)
    async with pool, pool.acquire() as first, pool.acquire() as second:
        assert raw_connection(first) is not raw_connection(second)
        await first.execute("CREATE TABLE t (x)")
        await first.execute("INSERT INTO t VALUES (1)")
        assert await fetch_value(second, "SELECT count(*) FROM t") == 1


async def test_each_driver_has_its_own_memory_database() -> None:
    async with create_pool("sqlite:///:memory:") as one, create_pool("sqlite:///:memory:") as two:
        async with one.acquire() as conn:
            await conn.execute("CREATE TABLE only_in_one (x)")
        async with two.acquire() as conn:
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await conn.execute("SELECT * FROM only_in_one")


async def test_200_writers_on_the_memory_database_lose_nothing() -> None:
    async with create_pool("sqlite:///:memory:", max_size=4) as pool:
        await _make_table(pool, "CREATE TABLE t (writer INTEGER)")

        async def write(number: int) -> None:
            async with pool.acquire() as conn:
                await conn.execute("INSERT INTO t VALUES (?)", (number,))
                await fetch_value(conn, "SELECT count(*) FROM t")  # readers and writers mixed

        await asyncio.gather(*(write(number) for number in range(WRITERS)))
        async with pool.acquire() as conn:
            assert await fetch_value(conn, "SELECT count(DISTINCT writer) FROM t") == WRITERS


async def test_the_memory_database_survives_expire() -> None:
    async with create_pool("sqlite:///:memory:", max_size=2) as pool:
        await _make_table(pool)
        pool.expire()
        await wait_until(lambda: pool.stats().size == 0)
        async with pool.acquire() as conn:
            assert await fetch_value(conn, "SELECT count(*) FROM t") == 0
        assert pool.stats().created == 2


async def test_the_memory_database_survives_idle_eviction() -> None:
    pool = create_pool("sqlite:///:memory:", min_size=0, max_idle=0.01, maintenance_interval=0.01)
    async with pool:
        await _make_table(pool)
        await wait_until(lambda: pool.stats().evicted_idle == 1 and pool.stats().size == 0)
        async with pool.acquire() as conn:
            assert await fetch_value(conn, "SELECT count(*) FROM t") == 0


async def test_aclose_releases_the_memory_database() -> None:
    driver = SQLiteDriver(MEMORY)
    async with Pool(driver) as pool:
        await _make_table(pool)
        assert raw_value(driver.uri, "SELECT count(*) FROM t") == 0
    await driver.aclose()
    assert raw_value(driver.uri, "SELECT count(*) FROM t") is None  # no such table any more
    assert repr(driver) == "<SQLiteDriver ':memory:' closed>"
    with pytest.raises(RuntimeError, match="is closed"):
        await driver.connect()
    await driver.aclose()  # twice is fine


async def test_a_pool_from_create_pool_releases_the_memory_database_when_it_closes() -> None:
    pool = create_pool("sqlite:///:memory:")
    driver = driver_of(pool)
    async with pool:
        await _make_table(pool)
        pool.expire()  # no pooled connection left: the data lives on while the pool is open
        assert raw_value(driver.uri, "SELECT count(*) FROM t") == 0
    assert raw_value(driver.uri, "SELECT count(*) FROM t") is None
    assert repr(driver) == "<SQLiteDriver ':memory:' closed>"


async def test_close_driver_false_leaves_the_memory_database_to_its_owner() -> None:
    pool = create_pool("sqlite:///:memory:", close_driver=False)
    driver = driver_of(pool)
    async with pool:
        await _make_table(pool)
    assert raw_value(driver.uri, "SELECT count(*) FROM t") == 0
    await driver.aclose()
    assert raw_value(driver.uri, "SELECT count(*) FROM t") is None


async def test_aclose_of_a_file_driver_only_refuses_new_connections(tmp_path: Path) -> None:
    driver = SQLiteDriver(tmp_path / "app.db")
    await driver.aclose()
    with pytest.raises(RuntimeError, match="is closed"):
        await driver.connect()


async def test_a_collected_driver_releases_its_memory_database() -> None:
    pool = create_pool("sqlite:///:memory:", close_driver=False)
    uri = driver_of(pool).uri
    async with pool:
        await _make_table(pool)
    assert raw_value(uri, "SELECT count(*) FROM t") == 0
    del pool
    gc.collect()
    assert raw_value(uri, "SELECT count(*) FROM t") is None


# ------------------------------------------------------------------ cancellation


async def test_a_holder_cancelled_mid_query_leaves_a_clean_connection_at_once(
    tmp_path: Path,
) -> None:
    gate = Gate(closed=False)
    pool = Pool(SQLiteDriver(tmp_path / "app.db", init=gate.install), max_size=1)

    async def hold() -> None:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE t (x)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO t VALUES (1)")
            await conn.execute(SLOW_COUNT.format(start="gate()"))

    async with pool:
        holder = asyncio.ensure_future(hold())
        await gate.wait_entered()
        holder.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await holder
        assert time.monotonic() - started < 5  # interrupted: the count would take minutes
        async with pool.acquire() as conn:
            assert not conn.in_transaction
            assert await fetch_value(conn, "SELECT count(*) FROM t") == 0
    assert pool.stats().discarded == 0  # the same connection, still usable


async def test_a_holder_cancelled_while_begin_waits_for_the_lock_leaves_no_transaction(
    tmp_path: Path,
) -> None:
    """A BEGIN that a cancelled task left waiting for the lock still opens its transaction,
    later, in the connection's thread: the release rolls back behind it."""
    begin = StatementStarted("BEGIN IMMEDIATE")
    driver = SQLiteDriver(tmp_path / "app.db", init=begin.install)
    pool = Pool(driver, max_size=1)
    async with pool:
        await _make_table(pool)
        locker = sqlite3.connect(driver.uri, uri=True, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")

        async def hold() -> None:
            async with pool.acquire() as conn:
                await conn.execute("BEGIN IMMEDIATE")  # waits: the locker holds the lock

        holder = asyncio.ensure_future(hold())
        await begin.wait()
        holder.cancel()
        locker.execute("COMMIT")  # the waiting BEGIN now succeeds, after its task moved on
        locker.close()
        with pytest.raises(asyncio.CancelledError):
            await holder
        async with pool.acquire() as conn:
            assert not conn.in_transaction
            await conn.execute("INSERT INTO t VALUES (1)")  # nobody holds the write lock
        assert raw_value(driver.uri, "SELECT count(*) FROM t") == 1


async def test_a_cancelled_transaction_rolls_back_before_the_cancellation_goes_on(
    db_url: str,
) -> None:
    """Whoever catches the cancellation and goes on with the connection is not left inside the
    cancelled transaction (its next writes would be rolled back on release)."""
    gate = Gate(closed=False)
    async with create_pool(db_url, init=gate.install) as pool:
        await _make_table(pool)
        async with pool.acquire() as conn:

            async def transact_until_timed_out() -> None:
                async with asyncio.timeout(None) as scope:

                    async def time_out_once_the_query_runs() -> None:
                        await gate.wait_entered()
                        scope.reschedule(asyncio.get_running_loop().time())

                    timer = asyncio.ensure_future(time_out_once_the_query_runs())
                    async with driver_of(pool).transaction(conn):
                        await conn.execute("INSERT INTO t VALUES ('cancelled')")
                        await conn.execute(SLOW_COUNT.format(start="gate()"))
                await timer

            with pytest.raises(TimeoutError):
                await transact_until_timed_out()
            assert not conn.in_transaction
            await conn.execute("INSERT INTO t VALUES ('after')")
        async with pool.acquire() as conn:
            assert await fetch_value(conn, "SELECT group_concat(x) FROM t") == "after"


async def test_a_transaction_cancelled_while_begin_waits_leaves_no_transaction(
    tmp_path: Path,
) -> None:
    begin = StatementStarted("BEGIN IMMEDIATE")
    driver = SQLiteDriver(tmp_path / "app.db", init=begin.install)
    conn = await driver.connect()
    try:
        await conn.execute("CREATE TABLE t (x)")
        locker = sqlite3.connect(driver.uri, uri=True, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")

        async def transact() -> None:
            async with driver.transaction(conn):
                await conn.execute("INSERT INTO t VALUES ('never')")

        task = asyncio.ensure_future(transact())
        await begin.wait()
        task.cancel()
        locker.execute("COMMIT")  # the BEGIN succeeds now, after its task was cancelled
        locker.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not conn.in_transaction
        await conn.execute("INSERT INTO t VALUES ('after')")
        assert raw_value(driver.uri, "SELECT group_concat(x) FROM t") == "after"
        assert finishes_at_once(driver.reset(conn))  # settled: nothing left for reset
    finally:
        await driver.close(conn)


async def test_a_holder_cancelled_with_a_half_read_cursor_is_discarded(tmp_path: Path) -> None:
    """An interrupt stays pending while a cursor is half read, and would fail the next user's
    statements: such a connection fails its reset and the pool replaces it."""
    pool = Pool(SQLiteDriver(tmp_path / "app.db"), max_size=1)
    holding = asyncio.Event()

    async def hold() -> None:
        async with pool.acquire() as conn:
            cursor = await conn.execute(NUMBERS)
            assert await cursor.fetchone() == (1,)
            holding.set()
            await asyncio.Event().wait()

    async with pool:
        holder = asyncio.ensure_future(hold())
        await holding.wait()
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        async with pool.acquire() as conn:
            assert await fetch_value(conn, "SELECT 1") == 1
        assert pool.stats().discarded == 1


async def test_a_cancelled_transaction_whose_rollback_fails_still_raises_the_cancellation(
    tmp_path: Path,
) -> None:
    """With a half-read cursor, the interrupt fails the rollback too: the cancellation still
    propagates (not the rollback's error), and the pool then replaces the connection."""
    driver = SQLiteDriver(tmp_path / "app.db")
    pool = Pool(driver, max_size=1)
    holding = asyncio.Event()

    async def hold() -> None:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE t (x)")
            cursor = await conn.execute(NUMBERS)
            assert await cursor.fetchone() == (1,)
            async with driver.transaction(conn):
                await conn.execute("INSERT INTO t VALUES (1)")
                holding.set()
                await asyncio.Event().wait()

    async with pool:
        holder = asyncio.ensure_future(hold())
        await holding.wait()
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        async with pool.acquire() as conn:
            assert not conn.in_transaction
            assert await fetch_value(conn, "SELECT count(*) FROM t") == 0
        assert pool.stats().discarded == 1


async def test_closing_the_pool_interrupts_a_query_that_outlasts_the_timeout(
    tmp_path: Path,
) -> None:
    gate = Gate(closed=False)
    pool = Pool(SQLiteDriver(tmp_path / "app.db", init=gate.install))

    async def hold() -> None:
        async with pool.acquire() as conn:
            await conn.execute(SLOW_COUNT.format(start="gate()"))

    await pool.open()
    holder = asyncio.ensure_future(hold())
    await gate.wait_entered()
    await pool.close(timeout=0.05)  # then the connection is terminated: its query interrupted
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        await holder
    assert pool.stats().size == 0


async def test_a_reset_stuck_behind_a_statement_ends_in_terminate(tmp_path: Path) -> None:
    gate = Gate()
    pool = Pool(SQLiteDriver(tmp_path / "app.db", init=gate.install), max_size=1, reset_timeout=0.1)

    async def hold() -> None:
        async with pool.acquire() as conn:
            await conn.execute("SELECT gate()")  # a Python function: no interrupt stops it

    async with pool:
        holder = asyncio.ensure_future(hold())
        await gate.wait_entered()
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        async with pool.acquire() as conn:  # a new connection, while the old thread is held
            assert await fetch_value(conn, "SELECT 1") == 1
        assert pool.stats().discarded == 1
        gate.open()
