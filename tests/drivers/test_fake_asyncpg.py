"""asyncpg's API on the fake driver (``FakeDriver(api="asyncpg")``): records, statements,
transaction blocks and prepared statements behave as asyncpg's.

Where a behaviour can be compared with the real thing, it is: ``FakeRecord`` against records a
real PostgreSQL returned, and the fake's methods against ``asyncpg.Connection``'s signatures.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from aiodbpool import ConnectionReleased, Pool
from aiodbpool.drivers.fake import (
    FakeAsyncpgConnection,
    FakeDatabaseError,
    FakeDriver,
    FakeRecord,
    FakeResult,
)

LONG = 60.0
"""A latency no test waits out."""


async def _connect(
    **options: Any,
) -> tuple[FakeDriver[FakeAsyncpgConnection], FakeAsyncpgConnection]:
    driver = FakeDriver(api="asyncpg", **options)
    return driver, await driver.connect()


def _behaviour(record: Any) -> dict[str, object]:
    """What an application can observe of a record with the columns ``a, b, a`` and the values
    ``1, 'x', 3``: every way of reading it, errors included."""

    def outcome(read: Callable[[], object]) -> object:
        try:
            return read()
        except Exception as error:
            return (type(error).__name__, str(error))

    return {
        "len": len(record),
        "bool": bool(record),
        "iter": list(record),
        "keys": list(record.keys()),
        "values": list(record.values()),
        "items": list(record.items()),
        "dict": dict(record),
        "by index": [record[0], record[1], record[-1], record[True]],
        "slice": record[0:2],
        "by name": [record["a"], record["b"]],
        "missing name": outcome(lambda: record["zz"]),
        "index out of range": outcome(lambda: record[10]),
        "other key": outcome(lambda: record[1.5]),
        "unhashable key": outcome(lambda: record[[1]]),
        "get": [record.get("b"), record.get("zz"), record.get("zz", 5), record.get(0)],
        "in": ["a" in record, "zz" in record, 1 in record],
        "equal to a tuple": [record == (1, "x", 3), (1, "x", 3) == record, record != (1, "x")],  # noqa: SIM300
        "not equal to a list": record == [1, "x", 3],
        "ordering": [record < (1, "y"), record > (1,), record <= (1, "x", 3), record >= (2,)],
        "hash": hash(record) == hash((1, "x", 3)),
        "repr": repr(record),
        "attribute": outcome(lambda: record.a),
    }


def _fake_record() -> FakeRecord:
    return FakeRecord((1, "x", 3), ("a", "b", "a"))


async def test_a_fake_record_behaves_as_an_asyncpg_record(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        real = await conn.fetchrow("SELECT 1 AS a, 'x' AS b, 3 AS a")
        other = await conn.fetchrow("SELECT 1 AS c, 'x' AS d, 3 AS e")
        empty = await conn.fetchrow("SELECT")
    finally:
        await conn.close()
    fake = _fake_record()
    observed, expected = _behaviour(fake), _behaviour(real)
    # Only the name of the class in the attribute error differs.
    assert observed.pop("attribute") == (
        "AttributeError",
        "'FakeRecord' object has no attribute 'a'",
    )
    expected.pop("attribute")
    assert observed == expected
    # Records compare by their values alone, names aside.
    assert (fake == FakeRecord((1, "x", 3), ("c", "d", "e"))) == (real == other)
    assert (bool(FakeRecord((), ())), repr(FakeRecord((), ()))) == (bool(empty), repr(empty))


def test_a_record_sees_its_values_as_the_record_it_is() -> None:
    record = _fake_record()
    assert record == _fake_record()
    assert record != FakeRecord((1, "x"), ("a", "b"))
    assert not record < _fake_record()
    assert record.__eq__(object()) is NotImplemented
    for compare in (record.__lt__, record.__le__, record.__gt__, record.__ge__):
        assert compare(object()) is NotImplemented
    assert record >= _fake_record()
    assert record <= _fake_record()
    assert len({record, _fake_record(), (1, "x", 3)}) == 1


def test_a_record_needs_as_many_names_as_values() -> None:
    with pytest.raises(ValueError, match="2 values for the names"):
        FakeRecord((1, 2), ("a",))


# -- statements ----------------------------------------------------------------------------------


async def test_fetch_fetchrow_and_fetchval_read_the_scripted_rows() -> None:
    driver, conn = await _connect()
    driver.script(
        "SELECT id, name FROM users", [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]
    )
    rows = await conn.fetch("SELECT id, name FROM users")
    assert [dict(row) for row in rows] == [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]
    assert all(isinstance(row, FakeRecord) for row in rows)
    row = await conn.fetchrow("SELECT id, name FROM users")
    assert row is not None
    assert (row["name"], row[0]) == ("ann", 1)
    assert await conn.fetchval("SELECT id, name FROM users") == 1
    assert await conn.fetchval("SELECT id, name FROM users", column=1) == "ann"
    assert await conn.fetchval("SELECT id, name FROM users", column="name") == "ann"
    with pytest.raises(IndexError, match="record index out of range"):
        await conn.fetchval("SELECT id, name FROM users", column=2)


async def test_without_rows_fetchrow_and_fetchval_give_none() -> None:
    driver, conn = await _connect()
    driver.script("SELECT id FROM users WHERE id = $1", [])
    assert await conn.fetch("SELECT id FROM users WHERE id = $1", 7) == []
    assert await conn.fetchrow("SELECT id FROM users WHERE id = $1", 7) is None
    assert await conn.fetchval("SELECT id FROM users WHERE id = $1", 7) is None
    assert conn.executed == [("SELECT id FROM users WHERE id = $1", (7,))] * 3


async def test_columns_without_names_are_called_as_postgresql_calls_them() -> None:
    driver, conn = await _connect()
    driver.script("SELECT 1, 2", [(1, 2)])
    driver.script("SELECT x", FakeResult([(1,)], columns=["x"]))
    row = await conn.fetchrow("SELECT 1, 2")
    assert row is not None
    assert list(row.keys()) == ["?column?", "?column?"]
    assert dict(row) == {"?column?": 2}
    assert repr(await conn.fetchrow("SELECT x")) == "<Record x=1>"


async def test_rows_of_different_widths_get_names_of_their_own() -> None:
    driver, conn = await _connect()
    driver.script("SELECT ragged", [(1,), (1, 2), (3,)])
    assert [len(list(row.keys())) for row in await conn.fetch("SELECT ragged")] == [1, 2, 1]


@pytest.mark.parametrize(
    ("sql", "result", "status"),
    [
        ("INSERT INTO t VALUES (1), (2)", FakeResult(rowcount=2), "INSERT 0 2"),
        ("insert into t values ($1) returning id", FakeResult([(1,)]), "INSERT 0 1"),
        ("UPDATE t SET v = 'z' WHERE id > 1", FakeResult(rowcount=2), "UPDATE 2"),
        ("UPDATE t SET v = 1 WHERE false", FakeResult(), "UPDATE 0"),
        ("DELETE FROM t WHERE id = 1", FakeResult(rowcount=1), "DELETE 1"),
        ("SELECT * FROM t", FakeResult([(1,), (2,), (3,)]), "SELECT 3"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", FakeResult([(1,)]), "SELECT 1"),
        (
            "WITH y AS (SELECT 1) INSERT INTO q SELECT * FROM y",
            FakeResult(rowcount=1),
            "INSERT 0 1",
        ),
        ("WITH y AS (SELECT (1)) VALUES (1)", FakeResult([(1,)]), "SELECT 1"),
        ("CREATE TABLE t (id int)", FakeResult(), "CREATE TABLE"),
        ("CREATE TEMP TABLE IF NOT EXISTS t (a int)", FakeResult(), "CREATE TABLE"),
        ("create unique index on q (a)", FakeResult(), "CREATE INDEX"),
        ("CREATE OR REPLACE FUNCTION f() ...", FakeResult(), "CREATE FUNCTION"),
        ("DROP TABLE IF EXISTS zz", FakeResult(), "DROP TABLE"),
        ("ALTER TABLE t ADD COLUMN b int", FakeResult(), "ALTER TABLE"),
        ("TRUNCATE q", FakeResult(), "TRUNCATE TABLE"),
        ("SET search_path TO public", FakeResult(), "SET"),
        ("BEGIN;", FakeResult(), "BEGIN"),
        ("START TRANSACTION", FakeResult(), "START TRANSACTION"),
        ("SAVEPOINT s", FakeResult(), "SAVEPOINT"),
        ("RELEASE SAVEPOINT s", FakeResult(), "RELEASE"),
        ("ROLLBACK TO s", FakeResult(), "ROLLBACK"),
        ("END", FakeResult(), "COMMIT"),
        ("ABORT", FakeResult(), "ROLLBACK"),
        ("COMMIT;", FakeResult(), "COMMIT"),
        ("SELECT 1; SELECT 2", FakeResult([(2,)]), "SELECT 1"),
        (";", FakeResult(), ""),
        ("LISTEN x", FakeResult(status="LISTEN"), "LISTEN"),
        ("CALL p()", FakeResult(status="CALL"), "CALL"),
        ("MERGE INTO t USING s ON true", FakeResult(status="MERGE 5"), "MERGE 5"),
    ],
)
async def test_execute_returns_postgresqls_status(
    sql: str, result: FakeResult, status: str
) -> None:
    driver, conn = await _connect()
    driver.script(sql, result)
    await conn.execute("BEGIN")
    assert await conn.execute(sql) == status


async def test_executemany_sends_each_argument_set() -> None:
    driver, conn = await _connect(strict=True)
    seen: list[tuple[object, ...]] = []

    def insert(sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        seen.append(args)
        return []

    driver.script("INSERT INTO t VALUES ($1, $2)", insert)
    returned = await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(1, "a"), [2, "b"]])  # type: ignore[func-returns-value]
    assert returned is None
    assert seen == [(1, "a"), (2, "b")]
    assert conn.executed == [
        ("INSERT INTO t VALUES ($1, $2)", (1, "a")),
        ("INSERT INTO t VALUES ($1, $2)", (2, "b")),
    ]


async def test_executemany_stops_at_the_first_failure() -> None:
    driver, conn = await _connect()

    def insert(sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]] | Exception:
        return FakeDatabaseError("dup") if args == (2,) else []

    driver.script("INSERT INTO t VALUES ($1)", insert)
    with pytest.raises(FakeDatabaseError, match="dup"):
        await conn.executemany("INSERT INTO t VALUES ($1)", [(1,), (2,), (3,)])
    assert len(conn.executed) == 3  # all were sent, in one trip


async def test_fetchmany_returns_the_rows_of_every_argument_set() -> None:
    driver, conn = await _connect()
    driver.script("SELECT $1::int AS n", lambda sql, args: [{"n": args[0]}])
    rows = await conn.fetchmany("SELECT $1::int AS n", [(1,), (2,)])
    assert rows == [(1,), (2,)]
    assert [row["n"] for row in rows] == [1, 2]


@pytest.mark.parametrize("method", ["execute", "fetch", "fetchrow", "fetchval"])
async def test_a_statements_timeout_interrupts_it(method: str) -> None:
    _, conn = await _connect(query_latency=LONG)
    with pytest.raises(TimeoutError):
        await getattr(conn, method)("SELECT 1", timeout=0.01)


@pytest.mark.parametrize("method", ["executemany", "fetchmany"])
async def test_a_batchs_timeout_interrupts_it(method: str) -> None:
    _, conn = await _connect(query_latency=LONG)
    with pytest.raises(TimeoutError):
        await getattr(conn, method)("SELECT $1", [(1,)], timeout=0.01)


async def test_a_timeout_that_is_not_reached_changes_nothing() -> None:
    driver, conn = await _connect(query_latency=0.001)
    driver.script("SELECT 1", [(1,)])
    assert await conn.fetchval("SELECT 1", timeout=LONG) == 1
    await conn.executemany("SELECT $1", [(1,)], timeout=LONG)
    statement = await conn.prepare("SELECT 1", timeout=LONG)
    assert await statement.fetchval(timeout=LONG) == 1
    await conn.close(timeout=LONG)
    assert conn.closed


async def test_the_connection_reports_its_state_as_asyncpgs() -> None:
    driver, conn = await _connect()
    assert not conn.is_closed()
    assert not conn.is_in_transaction()
    await conn.execute("BEGIN")
    assert conn.is_in_transaction()
    driver.break_connection(conn)
    assert conn.is_closed()
    _, other = await _connect()
    await other.close()
    assert other.is_closed()
    _, third = await _connect()
    third.terminate()
    assert third.is_closed()


async def test_closing_takes_the_close_latency_and_the_timeout_bounds_it() -> None:
    _, conn = await _connect(close_latency=LONG)
    with pytest.raises(TimeoutError):
        await conn.close(timeout=0.01)
    assert not conn.closed


# -- transaction blocks --------------------------------------------------------------------------


async def test_a_transaction_block_commits_or_rolls_back_as_asyncpgs() -> None:
    _, conn = await _connect(strict=True)
    async with conn.transaction():
        assert conn.is_in_transaction()
    with pytest.raises(KeyError):
        async with conn.transaction():
            raise KeyError("boom")
    assert not conn.is_in_transaction()
    assert [sql for sql, _ in conn.executed] == ["BEGIN;", "COMMIT;", "BEGIN;", "ROLLBACK;"]


async def test_a_cancelled_block_rolls_back_as_asyncpgs() -> None:
    _, conn = await _connect()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01), conn.transaction():
            await asyncio.sleep(LONG)
    assert not conn.is_in_transaction()
    assert [sql for sql, _ in conn.executed] == ["BEGIN;", "ROLLBACK;"]


async def test_nested_blocks_are_savepoints() -> None:
    _, conn = await _connect(strict=True)
    async with conn.transaction():
        async with conn.transaction():
            pass
        with pytest.raises(ValueError, match="inner"):
            async with conn.transaction():
                raise ValueError("inner")
        assert conn.is_in_transaction()
    assert [sql for sql, _ in conn.executed] == [
        "BEGIN;",
        "SAVEPOINT __asyncpg_savepoint_1__;",
        "RELEASE SAVEPOINT __asyncpg_savepoint_1__;",
        "SAVEPOINT __asyncpg_savepoint_2__;",
        "ROLLBACK TO __asyncpg_savepoint_2__;",
        "COMMIT;",
    ]
    # After the outer block, a block is top-level again.
    async with conn.transaction():
        pass
    assert conn.executed[-2][0] == "BEGIN;"


@pytest.mark.parametrize(
    ("options", "begin"),
    [
        ({"isolation": "serializable"}, "BEGIN ISOLATION LEVEL SERIALIZABLE;"),
        (
            {"isolation": "repeatable_read", "readonly": True},
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;",
        ),
        ({"isolation": "read_committed"}, "BEGIN ISOLATION LEVEL READ COMMITTED;"),
        (
            {"isolation": "read_uncommitted", "deferrable": True},
            "BEGIN ISOLATION LEVEL READ UNCOMMITTED DEFERRABLE;",
        ),
    ],
)
async def test_a_blocks_options_are_in_its_begin(options: dict[str, Any], begin: str) -> None:
    _, conn = await _connect()
    async with conn.transaction(**options):
        pass
    assert conn.executed[0][0] == begin


async def test_manual_start_commit_and_rollback() -> None:
    _, conn = await _connect()
    transaction = conn.transaction()
    assert repr(transaction) == "<FakeTransaction state:new>"
    await transaction.start()
    assert repr(transaction) == "<FakeTransaction state:started>"
    await transaction.commit()
    assert repr(transaction) == "<FakeTransaction state:committed>"
    second = conn.transaction()
    await second.start()
    await second.rollback()
    assert repr(second) == "<FakeTransaction state:rolledback>"
    assert not conn.is_in_transaction()


@pytest.mark.parametrize(
    ("misuse", "message"),
    [
        ("start twice", "cannot start; the transaction is already started"),
        ("commit before start", "cannot commit; the transaction is not yet started"),
        ("rollback after commit", "cannot rollback; the transaction is already committed"),
        ("start after rollback", "cannot start; the transaction is already rolled back"),
        ("commit in the block", "cannot manually commit from within an `async with` block"),
        ("rollback in the block", "cannot manually rollback from within an `async with` block"),
        ("enter twice", "cannot enter context: already in an `async with` block"),
        (
            "inside a manual BEGIN",
            "cannot use Connection.transaction() in a manually started transaction",
        ),
    ],
)
async def test_a_block_refuses_what_asyncpgs_refuses(misuse: str, message: str) -> None:
    _, conn = await _connect()
    with pytest.raises(FakeDatabaseError, match=re.escape(message)):
        await _misuse(misuse, conn)


async def _misuse(misuse: str, conn: FakeAsyncpgConnection) -> None:
    transaction = conn.transaction()
    if misuse == "start twice":
        await transaction.start()
        await transaction.start()
    elif misuse == "commit before start":
        await transaction.commit()
    elif misuse == "rollback after commit":
        await transaction.start()
        await transaction.commit()
        await transaction.rollback()
    elif misuse == "start after rollback":
        await transaction.start()
        await transaction.rollback()
        await transaction.start()
    elif misuse == "commit in the block":
        async with transaction:
            await transaction.commit()
    elif misuse == "rollback in the block":
        async with transaction:
            await transaction.rollback()
    elif misuse == "enter twice":
        async with transaction, transaction:
            pass
    else:
        await conn.execute("BEGIN")
        await transaction.start()


async def test_a_block_whose_begin_failed_is_in_error_state() -> None:
    driver, conn = await _connect()
    driver.script("BEGIN", FakeDatabaseError("no"))
    transaction = conn.transaction()
    with pytest.raises(FakeDatabaseError, match="no"):
        await transaction.start()
    with pytest.raises(FakeDatabaseError, match="in error state"):
        await transaction.start()
    assert not conn.is_in_transaction()
    driver.script("BEGIN", [])
    async with conn.transaction():  # the failed block left nothing behind
        pass
    assert conn.executed[-2][0] == "BEGIN;"


async def test_a_block_whose_commit_failed_is_in_error_state() -> None:
    driver, conn = await _connect()
    driver.script("COMMIT", FakeDatabaseError("serialization failure"))
    transaction = conn.transaction()
    await transaction.start()
    with pytest.raises(FakeDatabaseError, match="serialization"):
        await transaction.commit()
    assert repr(transaction) == "<FakeTransaction state:failed>"
    with pytest.raises(FakeDatabaseError, match="in error state"):
        await transaction.rollback()


def test_an_unknown_isolation_level_is_refused() -> None:
    driver = FakeDriver(api="asyncpg")
    conn = FakeAsyncpgConnection(driver, 1)
    with pytest.raises(ValueError, match="isolation is expected to be either of"):
        conn.transaction(isolation="chaos")


async def test_the_drivers_transaction_is_the_connections_own() -> None:
    driver, conn = await _connect()
    async with driver.transaction(conn) as inside:
        assert inside is conn
        async with conn.transaction():
            pass
    assert [sql for sql, _ in conn.executed] == [
        "BEGIN;",
        "SAVEPOINT __asyncpg_savepoint_1__;",
        "RELEASE SAVEPOINT __asyncpg_savepoint_1__;",
        "COMMIT;",
    ]


async def test_a_block_left_open_is_rolled_back_by_the_pools_reset() -> None:
    driver = FakeDriver(api="asyncpg")
    async with Pool(driver, max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.transaction().start()
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            async with conn.transaction():  # top-level again: BEGIN, not SAVEPOINT
                pass
    assert [sql for _, sql, _ in driver.queries] == ["BEGIN;", "ROLLBACK", "BEGIN;", "COMMIT;"]


# -- prepared statements -------------------------------------------------------------------------


async def test_a_prepared_statement_runs_with_its_arguments() -> None:
    driver, conn = await _connect(strict=True)
    driver.script("SELECT $1::int AS n", lambda sql, args: [{"n": args[0]}])
    statement = await conn.prepare("SELECT $1::int AS n")
    assert statement.get_query() == "SELECT $1::int AS n"
    assert conn.executed == []  # preparing runs nothing
    assert await statement.fetch(1) == [(1,)]
    row = await statement.fetchrow(2)
    assert row is not None
    assert row["n"] == 2
    assert await statement.fetchval(3) == 3
    assert await statement.fetchval(4, column="n") == 4
    assert await statement.fetchmany([(5,), (6,)]) == [(5,), (6,)]
    await statement.executemany([(7,)])
    assert [args for _, args in conn.executed] == [(1,), (2,), (3,), (4,), (5,), (6,), (7,)]


async def test_preparing_is_a_round_trip() -> None:
    driver, conn = await _connect(query_latency=LONG)
    with pytest.raises(TimeoutError):
        await conn.prepare("SELECT 1", timeout=0.01)
    driver.query_latency = 0
    driver.break_connection(conn, detected=False)
    with pytest.raises(FakeDatabaseError, match="lost"):
        await conn.prepare("SELECT 1")
    await conn.close()
    with pytest.raises(FakeDatabaseError, match="closed"):
        await conn.prepare("SELECT 1")


# -- the lease ---------------------------------------------------------------------------------


def _public_methods(cls: type) -> set[str]:
    return {
        name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")
    }


def test_every_public_method_of_the_fake_connection_is_guarded() -> None:
    lease_class = FakeDriver(api="asyncpg").lease_class
    for name in _public_methods(FakeAsyncpgConnection):
        assert name in vars(lease_class), f"{name} is not guarded by the lease"


def test_every_method_of_the_fake_connection_is_asyncpgs() -> None:
    for name in _public_methods(FakeAsyncpgConnection):
        fake = inspect.signature(getattr(FakeAsyncpgConnection, name)).parameters
        real = inspect.signature(getattr(asyncpg.Connection, name)).parameters
        assert list(fake)[: len(fake)] == [p for p in real if p in fake], name
        for parameter in fake.values():
            assert real[parameter.name].kind == parameter.kind, f"{name}({parameter.name})"


def test_every_method_of_the_fake_statement_is_asyncpgs() -> None:
    from aiodbpool.drivers._fake_asyncpg import FakePreparedStatement, FakeTransaction

    for fake_class, real_class in (
        (FakePreparedStatement, asyncpg.prepared_stmt.PreparedStatement),
        (FakeTransaction, asyncpg.transaction.Transaction),
    ):
        for name in _public_methods(fake_class):
            fake = inspect.signature(getattr(fake_class, name)).parameters
            real = inspect.signature(getattr(real_class, name)).parameters
            assert set(fake) <= set(real), f"{fake_class.__name__}.{name}"


SAMPLE_ARGS: dict[str, tuple[object, ...]] = {
    "execute": ("SELECT 1",),
    "executemany": ("SELECT $1", [(1,)]),
    "fetch": ("SELECT 1",),
    "fetchmany": ("SELECT $1", [(1,)]),
    "fetchrow": ("SELECT 1",),
    "fetchval": ("SELECT 1",),
    "prepare": ("SELECT 1",),
    "transaction": (),
    "close": (),
    "is_closed": (),
    "is_in_transaction": (),
    "terminate": (),
}
"""Arguments for a call of each public method of the fake connection."""


def test_the_sample_calls_cover_every_method() -> None:
    assert set(SAMPLE_ARGS) == _public_methods(FakeAsyncpgConnection)


async def _call(method: Callable[..., Any], args: tuple[object, ...]) -> None:
    result = method(*args)
    if inspect.isawaitable(result):
        await result


@pytest.mark.parametrize("name", sorted(SAMPLE_ARGS))
async def test_every_method_refuses_after_the_release(name: str) -> None:
    driver = FakeDriver(api="asyncpg")
    async with Pool(driver, max_size=1) as pool:
        async with pool.acquire() as conn:
            fetched_before = getattr(conn, name)
        with pytest.raises(ConnectionReleased):
            await _call(getattr(conn, name), SAMPLE_ARGS[name])
        with pytest.raises(ConnectionReleased):
            await _call(fetched_before, SAMPLE_ARGS[name])
        async with pool.acquire() as again:
            await again.execute("SELECT 1")  # the next borrower is unharmed
        assert pool.stats().stale_uses == 2
    assert [sql for _, sql, _ in driver.queries] == ["SELECT 1"]


async def test_blocks_and_statements_made_through_a_lease_refuse_after_it() -> None:
    driver = FakeDriver(api="asyncpg")
    async with Pool(driver, max_size=1) as pool:
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            statement = await conn.prepare("SELECT 1")
            assert await statement.fetch() == []
        async with pool.acquire() as other:
            with pytest.raises(ConnectionReleased):
                await transaction.start()
            with pytest.raises(ConnectionReleased):
                await statement.fetchval()
            assert not other.is_in_transaction()
        assert pool.stats().stale_uses == 2
    assert [sql for _, sql, _ in driver.queries] == ["SELECT 1"]


async def test_a_lent_connection_is_a_fake_asyncpg_connection() -> None:
    driver = FakeDriver(api="asyncpg")
    async with Pool(driver) as pool, pool.acquire() as conn:
        assert isinstance(conn, FakeAsyncpgConnection)
        await conn.execute("SELECT 1")
        assert conn.executed == [("SELECT 1", ())]
    assert conn.executed == [("SELECT 1", ())]  # still readable after the release
