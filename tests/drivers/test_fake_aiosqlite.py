"""aiosqlite's API on the fake driver (``FakeDriver(api="aiosqlite")``): cursors, row factories
and transactions behave as aiosqlite's.

Most tests run one scenario twice, on a real aiosqlite connection to a memory database (opened
in autocommit, as the pool's SQLite driver opens its own) and on the fake scripted with the
same answers, and compare what the application sees.
"""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiosqlite
import pytest

from aiodbpool import ConnectionReleased, Pool
from aiodbpool.drivers.fake import FakeAiosqliteConnection, FakeDriver, FakeResult

ROWS = [(1, "ann"), (2, "bob"), (3, "cy")]
SELECT = "SELECT id, name FROM users ORDER BY id"
INSERT = "INSERT INTO users (name) VALUES (?)"
UPDATE = "UPDATE users SET name = upper(name)"
NOTHING = "SELECT id, name FROM users WHERE id > 10"


def _script(driver: FakeDriver[FakeAiosqliteConnection]) -> None:
    """The answers the real database gives to the scenario's statements."""
    columns = ["id", "name"]
    driver.script(SELECT, FakeResult(ROWS, columns=columns))
    driver.script(NOTHING, FakeResult([], columns=columns))
    driver.script(INSERT, FakeResult(rowcount=1, lastrowid=4))
    driver.script(UPDATE, FakeResult(rowcount=3))
    driver.script("SELECT 1; SELECT 2", [])


@pytest.fixture(params=["aiosqlite", "fake"])
async def conn(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A real aiosqlite connection with the scenario's table, or the fake scripted alike."""
    if request.param == "aiosqlite":
        real = await aiosqlite.connect(":memory:", isolation_level=None)
        try:
            await real.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            await real.executemany(INSERT, [(name,) for _, name in ROWS])
            yield real
        finally:
            await real.close()
        return
    driver = FakeDriver(api="aiosqlite", strict=True)
    _script(driver)
    yield await driver.connect()


async def test_a_cursor_fetches_in_turn(conn: Any) -> None:
    cursor = await conn.execute(SELECT)
    assert cursor.description == (
        ("id", None, None, None, None, None, None),
        ("name", None, None, None, None, None, None),
    )
    assert (cursor.rowcount, cursor.arraysize) == (-1, 1)
    assert await cursor.fetchone() == (1, "ann")
    assert await cursor.fetchmany() == [(2, "bob")]
    assert await cursor.fetchmany(5) == [(3, "cy")]
    assert await cursor.fetchall() == []
    assert await cursor.fetchone() is None
    cursor.arraysize = 2
    assert cursor.arraysize == 2


async def test_fetchall_and_fetchmany_take_what_is_left(conn: Any) -> None:
    cursor = await conn.execute(SELECT)
    assert await cursor.fetchone() == (1, "ann")
    assert await cursor.fetchall() == [(2, "bob"), (3, "cy")]


async def test_a_query_without_rows_still_describes_its_columns(conn: Any) -> None:
    async with conn.execute(NOTHING) as cursor:
        assert [column[0] for column in cursor.description] == ["id", "name"]
        assert await cursor.fetchall() == []


async def test_a_cursor_entered_is_closed_at_the_end(conn: Any) -> None:
    async with conn.execute(SELECT) as cursor:
        assert await cursor.fetchone() == (1, "ann")
    with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
        await cursor.fetchone()


async def test_a_cursor_is_its_own_context_manager(conn: Any) -> None:
    cursor = await conn.execute(SELECT)
    async with cursor as entered:
        assert entered is cursor
    with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
        await cursor.fetchall()
    async with conn.execute_fetchall(SELECT) as rows:  # entered, a list: nothing to close
        assert list(rows) == ROWS


async def test_a_cursor_is_an_async_iterator(conn: Any) -> None:
    cursor = await conn.execute(SELECT)
    assert [row async for row in cursor] == ROWS


async def test_changes_report_their_rowcount_and_lastrowid(conn: Any) -> None:
    cursor = await conn.execute(UPDATE)
    assert (cursor.rowcount, cursor.description) == (3, None)
    cursor = await conn.execute(INSERT, ("dee",))
    assert (cursor.rowcount, cursor.lastrowid, cursor.description) == (1, 4, None)
    cursor = await conn.executemany(INSERT, [("eve",), ("fay",)])
    assert (cursor.rowcount, cursor.lastrowid) == (2, None)


async def test_execute_insert_gives_the_row_of_the_last_id(conn: Any) -> None:
    assert await conn.execute_insert(INSERT, ["dee"]) == (4,)
    conn.row_factory = sqlite3.Row
    row = await conn.execute_insert(INSERT, ["eve"])
    assert row.keys() == ["last_insert_rowid()"]


async def test_execute_fetchall_returns_every_row(conn: Any) -> None:
    assert list(await conn.execute_fetchall(SELECT)) == ROWS


async def test_a_cursor_runs_statements_itself(conn: Any) -> None:
    async with conn.cursor() as cursor:
        assert cursor.description is None
        assert await cursor.execute(SELECT) is cursor
        assert await cursor.fetchone() == (1, "ann")
        assert await cursor.executemany(INSERT, [("dee",)]) is cursor
        assert cursor.rowcount == 1
        assert await cursor.executescript("SELECT 1; SELECT 2;") is cursor


async def test_sqlite3_row_reads_by_name(conn: Any) -> None:
    conn.row_factory = aiosqlite.Row
    row = await (await conn.execute(SELECT)).fetchone()
    assert (row["id"], row["NAME"], row[1], row[-1], row[0:1]) == (1, "ann", "ann", "ann", (1,))
    assert row.keys() == ["id", "name"]
    assert (len(row), list(row), dict(row)) == (2, [1, "ann"], {"id": 1, "name": "ann"})
    assert row != (1, "ann")
    assert row == await (await conn.execute(SELECT)).fetchone()
    assert hash(row) == hash(await (await conn.execute(SELECT)).fetchone())
    assert "ann" in row
    with pytest.raises(IndexError, match="No item with that key"):
        row["nope"]
    with pytest.raises(IndexError):
        row[5]
    with pytest.raises(IndexError, match="Index must be int or string"):
        row[1.5]


async def test_a_row_factory_is_called_with_the_cursor_and_the_row(conn: Any) -> None:
    def as_dict(cursor: Any, row: tuple[Any, ...]) -> dict[str, Any]:
        return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}

    conn.row_factory = as_dict
    assert await conn.execute_fetchall(SELECT) == [{"id": i, "name": n} for i, n in ROWS]


async def test_a_cursors_row_factory_applies_when_rows_are_fetched(conn: Any) -> None:
    cursor = await conn.execute(SELECT)
    assert cursor.row_factory is None
    cursor.row_factory = sqlite3.Row
    assert (await cursor.fetchone())["name"] == "ann"
    conn.row_factory = sqlite3.Row
    assert (await conn.execute(SELECT)).row_factory is sqlite3.Row
    assert (await cursor.fetchone())["name"] == "bob"


async def test_autocommit_commit_and_rollback(conn: Any) -> None:
    assert not conn.in_transaction
    await conn.commit()  # nothing to commit: nothing happens
    await conn.rollback()
    await conn.execute("BEGIN")
    assert conn.in_transaction
    await conn.commit()
    assert not conn.in_transaction
    await conn.execute("BEGIN")
    await conn.rollback()
    assert not conn.in_transaction


# -- the fake alone ------------------------------------------------------------------------------


async def _fake(
    **options: Any,
) -> tuple[FakeDriver[FakeAiosqliteConnection], FakeAiosqliteConnection]:
    driver = FakeDriver(api="aiosqlite", **options)
    return driver, await driver.connect()


async def test_statements_and_their_parameters_are_recorded() -> None:
    _, conn = await _fake()
    await conn.execute("SELECT ?", (1,))
    await conn.execute("SELECT :a", {"a": 2})
    await conn.executemany("SELECT ?", [(3,), [4]])
    await conn.executescript("CREATE TABLE t (a); CREATE TABLE u (b);")
    await conn.execute("BEGIN")
    await conn.commit()
    assert conn.executed == [
        ("SELECT ?", (1,)),
        ("SELECT :a", ({"a": 2},)),
        ("SELECT ?", (3,)),
        ("SELECT ?", (4,)),
        ("CREATE TABLE t (a); CREATE TABLE u (b);", ()),
        ("BEGIN", ()),
        ("COMMIT", ()),
    ]


async def test_a_row_by_name_shows_its_columns() -> None:
    driver, conn = await _fake()
    driver.script(SELECT, FakeResult(ROWS[:1], columns=["id", "name"]))
    conn.row_factory = sqlite3.Row
    assert repr(await (await conn.execute(SELECT)).fetchone()) == "<Row id=1 name='ann'>"


async def test_rows_without_names_are_described_all_the_same() -> None:
    driver, conn = await _fake()
    driver.script("SELECT 1, 2", [(1, 2)])
    cursor = await conn.execute("SELECT 1, 2")
    assert cursor.description is not None
    assert [column[0] for column in cursor.description] == ["?column?", "?column?"]


async def test_a_closed_connection_refuses() -> None:
    _, conn = await _fake()
    cursor = await conn.execute("SELECT 1")
    await conn.close()
    assert conn.closed
    for call in (
        lambda: conn.execute("SELECT 1"),
        lambda: conn.cursor(),
        conn.commit,
        lambda: cursor.fetchall(),
    ):
        with pytest.raises(Exception, match="connection 1 is closed"):
            await call()


async def test_the_drivers_transaction_begins_immediate_as_the_sqlite_drivers() -> None:
    driver, conn = await _fake()
    async with driver.transaction(conn) as inside:
        assert inside is conn
        assert conn.in_transaction
    assert [sql for sql, _ in conn.executed] == ["BEGIN IMMEDIATE", "COMMIT"]


# -- the lease ---------------------------------------------------------------------------------


def _public_methods(cls: type) -> set[str]:
    return {
        name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")
    }


def test_every_public_method_of_the_fake_connection_goes_through_the_lease() -> None:
    lease_class = FakeDriver(api="aiosqlite").lease_class
    for name in _public_methods(FakeAiosqliteConnection) | {"row_factory"}:
        assert name in vars(lease_class), f"{name} does not go through the lease"


def test_every_method_of_the_fake_is_aiosqlites() -> None:
    for name in _public_methods(FakeAiosqliteConnection):
        fake = inspect.signature(getattr(FakeAiosqliteConnection, name)).parameters
        real = inspect.signature(getattr(aiosqlite.Connection, name)).parameters
        assert list(fake) == list(real), name
    from aiodbpool.drivers._fake_aiosqlite import FakeCursor

    for name in _public_methods(FakeCursor):
        fake = inspect.signature(getattr(FakeCursor, name)).parameters
        real = inspect.signature(getattr(aiosqlite.Cursor, name)).parameters
        assert list(fake) == list(real), f"cursor.{name}"


SAMPLE_CALLS: dict[str, Callable[[Any], Any]] = {
    "close": lambda conn: conn.close(),
    "commit": lambda conn: conn.commit(),
    "cursor": lambda conn: conn.cursor(),
    "execute": lambda conn: conn.execute("SELECT 1"),
    "execute_fetchall": lambda conn: conn.execute_fetchall("SELECT 1"),
    "execute_insert": lambda conn: conn.execute_insert("SELECT 1"),
    "executemany": lambda conn: conn.executemany("SELECT ?", [(1,)]),
    "executescript": lambda conn: conn.executescript("SELECT 1"),
    "rollback": lambda conn: conn.rollback(),
}


def test_the_sample_calls_cover_every_method() -> None:
    assert set(SAMPLE_CALLS) == _public_methods(FakeAiosqliteConnection)


@pytest.mark.parametrize("name", sorted(SAMPLE_CALLS))
async def test_every_method_refuses_after_the_release(name: str) -> None:
    driver = FakeDriver(api="aiosqlite")
    async with Pool(driver, max_size=1) as pool:
        async with pool.acquire() as conn:
            pass
        with pytest.raises(ConnectionReleased):
            await SAMPLE_CALLS[name](conn)
        async with pool.acquire() as again:
            await again.execute("SELECT 1")
    assert [sql for _, sql, _ in driver.queries] == ["SELECT 1"]


async def test_a_cursor_made_through_a_lease_refuses_after_it() -> None:
    driver = FakeDriver(api="aiosqlite")
    driver.script("SELECT 1", [(1,), (2,)])
    async with Pool(driver, max_size=1) as pool:
        async with pool.acquire() as conn:
            cursor = await conn.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)
            empty = await conn.cursor()
        async with pool.acquire() as other:
            with pytest.raises(ConnectionReleased):
                await cursor.fetchone()
            with pytest.raises(ConnectionReleased):
                await empty.execute("SELECT 1")
            with pytest.raises(ConnectionReleased):
                conn.row_factory = sqlite3.Row
            other.row_factory = sqlite3.Row
            assert other.row_factory is sqlite3.Row
    assert [sql for _, sql, _ in driver.queries] == ["SELECT 1"]


async def test_a_lent_connection_is_a_fake_aiosqlite_connection() -> None:
    driver = FakeDriver(api="aiosqlite")
    async with Pool(driver) as pool, pool.acquire() as conn:
        assert isinstance(conn, FakeAiosqliteConnection)
        await conn.execute("BEGIN")
    assert conn.executed == [("BEGIN", ()), ("ROLLBACK", ())]  # readable after the release
    assert conn.resets == 1
