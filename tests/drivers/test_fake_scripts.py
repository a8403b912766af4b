"""What the fake driver answers: scripts by text, pattern and function, their answers, and strict
mode. The client API does not matter here, so these tests use the default one (tuple rows);
test_fake_asyncpg.py and test_fake_aiosqlite.py read the same answers through the other APIs.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from aiodbpool import Pool
from aiodbpool.drivers.fake import (
    FakeClock,
    FakeConnection,
    FakeDatabaseError,
    FakeDriver,
    FakeResult,
    UnscriptedStatementError,
    from_url,
)

Args = tuple[object, ...]


async def _connect(**options: Any) -> tuple[FakeDriver, FakeConnection]:
    driver = FakeDriver(**options)
    return driver, await driver.connect()


# -- matching by text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        "SELECT id, name FROM users WHERE id = $1",
        "SELECT id,name FROM users WHERE id=$1",
        "  SELECT id, name\n    FROM users\n    WHERE id = $1;",
        "SELECT id , name FROM users WHERE id = $1 ; ;",
        "SELECT\tid,\n\tname FROM users WHERE id = $1",
    ],
)
async def test_a_text_script_matches_whatever_the_whitespace(sent: str) -> None:
    driver, conn = await _connect()
    driver.script("SELECT id, name FROM users WHERE id = $1", [(1, "ann")])
    assert await conn.fetch(sent, 1) == [(1, "ann")]


@pytest.mark.parametrize(
    "sent",
    [
        "select id, name from users where id = $1",  # case is kept: the fake cannot parse SQL
        "SELECT id, name FROM users WHERE id = $2",
        "SELECT id, name FROM users WHERE id = $1 LIMIT 1",
        "SELECT idname FROM users WHERE id = $1",
    ],
)
async def test_a_text_script_does_not_match_another_statement(sent: str) -> None:
    driver, conn = await _connect()
    driver.script("SELECT id, name FROM users WHERE id = $1", [(1, "ann")])
    assert await conn.fetch(sent, 1) == []


async def test_quoted_text_is_compared_exactly() -> None:
    driver, conn = await _connect()
    driver.script("SELECT * FROM users WHERE name = 'a  b'", [(1,)])
    driver.script('SELECT "Odd  Name" FROM users', [(2,)])
    assert await conn.fetch("SELECT *\nFROM users WHERE name = 'a  b';") == [(1,)]
    assert await conn.fetch("SELECT * FROM users WHERE name = 'a b'") == []
    assert await conn.fetch("SELECT * FROM users WHERE name = 'A  B'") == []
    assert await conn.fetch('SELECT  "Odd  Name"  FROM users') == [(2,)]
    assert await conn.fetch('SELECT "Odd Name" FROM users') == []


async def test_an_escaped_quote_stays_inside_its_literal() -> None:
    driver, conn = await _connect()
    driver.script("SELECT 'it''s  here', x", [(1,)])
    assert await conn.fetch("SELECT   'it''s  here' ,x") == [(1,)]
    assert await conn.fetch("SELECT 'it''s here', x") == []


async def test_a_later_script_for_the_same_text_replaces_the_earlier() -> None:
    driver, conn = await _connect()
    driver.script("SELECT 1", [(1,)])
    driver.script("SELECT  1;", [(2,)])
    assert await conn.fetch("SELECT 1") == [(2,)]


# -- matching by pattern and by function -----------------------------------------------------------


async def test_a_pattern_matches_where_it_finds_a_match() -> None:
    driver, conn = await _connect()
    driver.script(re.compile(r"FROM orders\b"), [(42,)])
    assert await conn.fetch("SELECT count(*) FROM orders WHERE x") == [(42,)]
    assert await conn.fetch("SELECT count(*) FROM orders_archive") == []


async def test_a_later_script_for_the_same_pattern_replaces_the_earlier() -> None:
    driver, conn = await _connect()
    driver.script(re.compile("orders"), [(1,)])
    driver.script(re.compile("order"), [(2,)])
    driver.script(re.compile("orders"), [(3,)])
    assert await conn.fetch("SELECT * FROM orders") == [(3,)]
    assert await conn.fetch("SELECT * FROM order_lines") == [(2,)]


async def test_text_scripts_come_first_then_the_most_recent_pattern_or_function() -> None:
    driver, conn = await _connect()
    driver.script("SELECT * FROM orders", [("text",)])
    driver.script(re.compile("orders"), [("older pattern",)])
    driver.script(lambda sql, args: [("function",)] if "orders" in sql else None)
    driver.script(re.compile("FROM orders WHERE"), [("newer pattern",)])
    assert await conn.fetch("SELECT * FROM orders") == [("text",)]
    assert await conn.fetch("SELECT * FROM orders WHERE x") == [("newer pattern",)]
    assert await conn.fetch("SELECT * FROM orders LIMIT 1") == [("function",)]


async def test_a_function_sees_the_statement_and_its_arguments_and_may_keep_state() -> None:
    names: list[object] = []

    def users(sql: str, args: Args) -> list[tuple[object, ...]] | None:
        if sql.startswith("INSERT INTO users"):
            names.append(args[0])
            return []
        if sql == "SELECT name FROM users":
            return [(name,) for name in names]
        return None

    driver, conn = await _connect(strict=True)
    driver.script(users)
    await conn.execute("INSERT INTO users (name) VALUES ($1)", "ann")
    await conn.execute("INSERT INTO users (name) VALUES ($1)", "bob")
    assert await conn.fetch("SELECT name FROM users") == [("ann",), ("bob",)]
    with pytest.raises(UnscriptedStatementError):  # the function declined it
        await conn.fetch("SELECT id FROM users")


async def test_the_same_function_scripted_again_moves_ahead() -> None:
    def first(sql: str, args: Args) -> list[tuple[object, ...]]:
        return [("first",)]

    def second(sql: str, args: Args) -> list[tuple[object, ...]]:
        return [("second",)]

    driver, conn = await _connect()
    driver.script(first)
    driver.script(second)
    driver.script(first)
    assert await conn.fetch("SELECT 1") == [("first",)]


async def test_a_text_or_pattern_may_be_answered_by_a_function() -> None:
    calls: list[tuple[str, Args]] = []

    def count(sql: str, args: Args) -> list[tuple[object, ...]]:
        calls.append((sql, args))
        return [(len(calls),)]

    driver, conn = await _connect()
    driver.script("SELECT count(*) FROM hits", count)
    driver.script(re.compile("^SELECT next"), count)
    assert await conn.fetchval("SELECT count(*)\nFROM hits") == 1
    assert await conn.fetchval("SELECT next($1)", 7) == 2
    assert calls == [("SELECT count(*)\nFROM hits", ()), ("SELECT next($1)", (7,))]


async def test_a_text_answered_by_a_declining_function_falls_through() -> None:
    driver, conn = await _connect(strict=True)
    driver.script(re.compile("users"), [("pattern",)])
    driver.script("SELECT * FROM users", lambda sql, args: None)
    assert await conn.fetch("SELECT * FROM users") == [("pattern",)]


async def test_an_exception_is_raised_fresh_each_time() -> None:
    error = FakeDatabaseError("deadlock detected")
    driver, conn = await _connect()
    driver.script("COMMIT", lambda sql, args: error)
    await conn.execute("BEGIN")
    for _ in range(2):
        with pytest.raises(FakeDatabaseError, match="deadlock") as raised:
            await conn.execute("COMMIT")
        assert raised.value is error
    assert conn.in_transaction  # a failed COMMIT changes nothing


# -- answers ------------------------------------------------------------------------------------


async def test_dict_rows_name_their_columns() -> None:
    driver, conn = await _connect()
    driver.script(
        "SELECT id, name FROM users", [{"id": 1, "name": "ann"}, {"name": "bob", "id": 2}]
    )
    # The first row's keys set the order of the columns.
    assert await conn.fetch("SELECT id, name FROM users") == [(1, "ann"), (2, "bob")]


def test_a_result_converts_and_keeps_what_it_was_given() -> None:
    result = FakeResult([[1, "a"], {"id": 2, "name": "b"}], columns=("id", "name"))
    assert result.rows == ((1, "a"), (2, "b"))
    assert result.columns == ("id", "name")
    assert (result.rowcount, result.lastrowid, result.status, result.count) == (None, None, None, 2)
    assert FakeResult(rowcount=3).count == 3
    assert repr(result) == "FakeResult([(1, 'a'), (2, 'b')], columns=('id', 'name'))"
    assert repr(FakeResult(rowcount=1, lastrowid=7, status="INSERT 0 1")) == (
        "FakeResult([], rowcount=1, lastrowid=7, status='INSERT 0 1')"
    )
    assert FakeResult().columns is None


@pytest.mark.parametrize(
    ("rows", "columns", "error", "message"),
    [
        ("ab", None, TypeError, "rows must be a list"),
        ({"id": 1}, None, TypeError, "rows must be a list"),
        (3, None, TypeError, "rows must be a list"),
        ([1, 2], None, TypeError, "row 1 is a int"),
        (["ab"], None, TypeError, "row 1 is a str"),
        ([{"id": 1}, {"name": "b"}], None, ValueError, "row 2 has the columns"),
        ([{"id": 1}, {"id": 2, "x": 3}], None, ValueError, "row 2 has the columns"),
        ([(1, 2)], ["id"], ValueError, "row 1 has 2 values"),
        ([{"id": 1}, (1, 2)], None, ValueError, "row 2 has 2 values"),
        ([], [1], TypeError, "column names must be strings"),
    ],
)
def test_malformed_rows_are_refused_naming_the_row(
    rows: Any, columns: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        FakeResult(rows, columns=columns)


@pytest.mark.parametrize("rowcount", [1.5, True, "1"])
def test_a_rowcount_must_be_an_int(rowcount: Any) -> None:
    with pytest.raises(TypeError, match="rowcount"):
        FakeResult(rowcount=rowcount)


def test_malformed_rows_are_refused_when_scripted() -> None:
    driver = FakeDriver()
    with pytest.raises(TypeError, match=r"the answer of 'SELECT 1': row 1 is a int"):
        driver.script("SELECT 1", [1])  # type: ignore[list-item]


async def test_a_function_answering_malformed_rows_is_named() -> None:
    def broken(sql: str, args: Args) -> Any:
        return [1]

    driver, conn = await _connect()
    driver.script(broken)
    with pytest.raises(TypeError, match=r"the answer of <function .*broken"):
        await conn.fetch("SELECT 1")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda driver: driver.script("SELECT 1"), "needs an answer"),
        (lambda driver: driver.script(re.compile("x")), "needs an answer"),
        (lambda driver: driver.script(lambda s, a: None, [(1,)]), "pass it alone"),
        (lambda driver: driver.script(b"SELECT 1", []), "got bytes"),
    ],
)
def test_script_refuses_what_it_cannot_use(call: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call(FakeDriver())


# -- strict mode ----------------------------------------------------------------------------------


async def test_strict_refuses_an_unscripted_statement_naming_the_closest() -> None:
    driver, conn = await _connect(strict=True)
    driver.script("SELECT id, name FROM users WHERE id = $1", [(1, "ann")])
    driver.script("SELECT id FROM users", [(1,)])
    driver.script("DELETE FROM orders", [])
    with pytest.raises(UnscriptedStatementError) as raised:
        await conn.fetch("SELECT id, nmae FROM users WHERE id = $1", 1)
    error = raised.value
    assert isinstance(error, FakeDatabaseError)
    assert (error.sql, error.params) == ("SELECT id, nmae FROM users WHERE id = $1", (1,))
    assert error.closest[0] == "SELECT id, name FROM users WHERE id = $1"
    assert "DELETE FROM orders" not in error.closest
    assert str(error) == (
        "no script answers 'SELECT id, nmae FROM users WHERE id = $1' with args (1,) (the "
        "driver is strict)\n"
        f"  closest scripted: {', '.join(map(repr, error.closest))}\n"
        "  script it with driver.script(sql, rows), or let unscripted statements return no "
        "rows with strict=False"
    )
    # The statement was sent, and failed as a statement the server refused.
    assert conn.executed[-1] == ("SELECT id, nmae FROM users WHERE id = $1", (1,))


async def test_strict_says_when_nothing_is_close_or_nothing_is_scripted() -> None:
    driver, conn = await _connect(strict=True)
    with pytest.raises(UnscriptedStatementError, match="nothing is scripted") as raised:
        await conn.execute("VACUUM")
    assert raised.value.closest == ()
    driver.script("SELECT id, name FROM users WHERE id = $1", [])
    with pytest.raises(UnscriptedStatementError, match="none of the 1 scripted by text is close"):
        await conn.execute("VACUUM")
    driver.script(re.compile("^SELECT"), [])
    with pytest.raises(UnscriptedStatementError, match="and 1 by pattern or function"):
        await conn.execute("VACUUM")


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN",
        "begin isolation level serializable;",
        "START TRANSACTION",
        "SAVEPOINT s1",
        "RELEASE SAVEPOINT s1",
        "RELEASE s1",
        "ROLLBACK TO SAVEPOINT s1",
        "ROLLBACK",
        "COMMIT;",
        "END",
        "ABORT",
    ],
)
async def test_strict_runs_transaction_control_without_a_script(statement: str) -> None:
    _, conn = await _connect(strict=True)
    await conn.execute("BEGIN")
    await conn.execute(statement)


async def test_strict_refuses_an_empty_statement() -> None:
    _, conn = await _connect(strict=True)
    with pytest.raises(UnscriptedStatementError):
        await conn.execute(" ; ")


async def test_strict_lets_the_drivers_ping_and_reset_through() -> None:
    clock = FakeClock()
    driver = FakeDriver(strict=True)
    async with Pool(driver, clock=clock, validate_after_idle=1.0) as pool:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")  # left open: the reset rolls it back
        clock.advance(5.0)
        async with pool.acquire() as conn:  # pinged first
            assert conn.pings == 1
            assert not conn.in_transaction
    assert [sql for _, sql, _ in driver.queries] == ["BEGIN", "ROLLBACK"]


async def test_strict_may_be_turned_on_and_off() -> None:
    driver, conn = await _connect()
    assert await conn.fetch("SELECT 1") == []
    driver.strict = True
    with pytest.raises(UnscriptedStatementError):
        await conn.fetch("SELECT 1")


def test_strict_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="strict must be True or False"):
        FakeDriver(strict=1)  # type: ignore[call-overload]


# -- api and URL ----------------------------------------------------------------------------------


def test_an_unknown_api_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="api must be one of 'default', 'asyncpg', 'aiosqlite'"):
        FakeDriver(api="psycopg")


def test_the_api_is_readable() -> None:
    assert FakeDriver().api == "default"
    assert FakeDriver(api="asyncpg").api == "asyncpg"
    assert FakeDriver(api="aiosqlite").api == "aiosqlite"


def test_the_repr_names_the_api_and_strict_mode() -> None:
    assert repr(FakeDriver()) == "<FakeDriver live=0 opened=0 closed=0>"
    assert repr(FakeDriver(api="asyncpg", strict=True)) == (
        "<FakeDriver api=asyncpg strict live=0 opened=0 closed=0>"
    )


@pytest.mark.parametrize(
    ("query", "api", "strict"),
    [
        ("", "default", False),
        ("?api=asyncpg", "asyncpg", False),
        ("?api=aiosqlite&strict=1", "aiosqlite", True),
        ("?strict=TRUE", "default", True),
        ("?strict=yes", "default", True),
        ("?strict=0&api=default", "default", False),
        ("?strict=false", "default", False),
        ("?strict=no&query_latency=0.5", "default", False),
    ],
)
def test_from_url_reads_the_api_and_strict_mode(query: str, api: str, strict: bool) -> None:
    driver = from_url(f"fake://{query}")
    assert (driver.api, driver.strict) == (api, strict)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?api=mysql", "parameter 'api' must be one of default, asyncpg, aiosqlite; got 'mysql'"),
        ("?strict=maybe", "parameter 'strict' must be 1 or 0; got 'maybe'"),
        ("?strict=", "parameter 'strict' must be 1 or 0; got ''"),
        ("?strict=1&strict=0", "'strict' is given more than once"),
        ("?api=asyncpg&api=aiosqlite", "'api' is given more than once"),
        ("?mode=strict", "unknown fake:// URL parameter 'mode'; known: .*api, strict"),
    ],
)
def test_from_url_refuses_bad_api_and_strict_parameters(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_url(f"fake://{query}")


def test_from_url_options_override_the_api_and_strict_mode() -> None:
    driver = from_url("fake://?api=asyncpg&strict=1", api="aiosqlite", strict=False)
    assert (driver.api, driver.strict) == ("aiosqlite", False)
