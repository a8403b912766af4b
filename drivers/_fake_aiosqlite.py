"""aiosqlite's API on the fake driver, so that an app written for aiosqlite runs unchanged.

``FakeDriver(api="aiosqlite")`` lends ``FakeAiosqliteConnection`` objects, which behave as the
``aiosqlite.Connection`` objects the pool's SQLite driver lends, with the answers the test
scripted:

* ``execute``, ``executemany``, ``executescript`` and ``cursor`` give a cursor either way aiosqlite
  does: ``cursor = await conn.execute(...)``, or ``async with conn.execute(...) as cursor``, which
  closes it at the end. ``execute_fetchall`` and ``execute_insert`` are there too.
* The cursor has ``fetchone``, ``fetchmany`` (``arraysize`` rows by default), ``fetchall``,
  ``async for``, ``rowcount`` (rows changed by ``INSERT``, ``UPDATE``, ``DELETE``, ``REPLACE``;
  -1 for other statements), ``lastrowid``, ``description``, ``row_factory`` and ``close``.
* ``conn.row_factory`` (and ``cursor.row_factory``, applied when rows are fetched): None gives
  tuples; ``sqlite3.Row`` (which is ``aiosqlite.Row``) gives rows read by index or by name,
  case-insensitively, as ``sqlite3.Row`` is; any other ``factory(cursor, row)`` is called as
  sqlite3 calls it, with the fake cursor (its ``description`` names the columns).
* Autocommit, as the pool's SQLite driver opens its connections (``isolation_level=None``): a
  statement outside ``BEGIN`` commits at once; ``commit`` and ``rollback`` end the transaction a
  ``BEGIN`` opened, and do nothing outside one.

Not mirrored: SQL itself, ``isinstance(conn, aiosqlite.Connection)`` and ``isinstance(row,
sqlite3.Row)``, and the rest of aiosqlite's API (``create_function``, ``backup``, ``iterdump``,
...). Errors a test wants (``sqlite3.IntegrityError``...) are scripted like any answer.

Every method reaches the "server" through the connection's ``_run``; the lease reuses the
connection's own methods with itself in the connection's place, so cursors made through a lend
keep the lease, and refuse after the release, as the pool's SQLite driver's do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar

from aiodbpool import guarded_attribute, guarded_statement
from aiodbpool.drivers._fake_base import FakeConnectionBase, FakeLeaseBase, Row
from aiodbpool.drivers._fake_scripts import FakeResult, column_names

if TYPE_CHECKING:
    from aiodbpool.drivers.fake import FakeDriver

# Shared with aiodbpool.drivers.fake, which re-exports the public names.
__all__ = ["FakeAiosqliteConnection", "FakeAiosqliteLease"]

RowFactory: TypeAlias = "Callable[[Any, Row], object]"
"""sqlite3's ``row_factory``: ``factory(cursor, row)`` makes what a fetch returns."""

Parameters: TypeAlias = "Iterable[object] | Mapping[str, object] | None"
"""A statement's parameters, as sqlite3 takes them: positional, or named in a mapping."""

_T = TypeVar("_T")

_ITER_CHUNK_SIZE: Final = 64
"""Rows fetched at a time by ``async for`` over a cursor (aiosqlite's default)."""

_CHANGES_ROWS: Final = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
"""Statements whose ``rowcount`` sqlite3 reports; it is -1 for the others."""


class FakeSQLiteRow:
    """A row as ``sqlite3.Row`` makes it: by index, by name (case-insensitively), ``keys()``,
    ``len``, iteration over the values, ``dict(row)``; equal to a row of the same columns and
    values (not to a tuple)."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: tuple[str, ...], values: Row) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, int | slice):
            return self._values[key]
        if isinstance(key, str):
            wanted = key.lower()
            for position, name in enumerate(self._names):
                if name.lower() == wanted:
                    return self._values[position]
            raise IndexError("No item with that key")
        raise IndexError("Index must be int or string")

    def keys(self) -> list[str]:
        """The column names."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[object]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FakeSQLiteRow):
            return NotImplemented
        return (self._names, self._values) == (other._names, other._values)

    def __hash__(self) -> int:
        return hash((self._names, self._values))

    def __repr__(self) -> str:
        fields = " ".join(
            f"{name}={value!r}" for name, value in zip(self._names, self._values, strict=True)
        )
        return f"<Row {fields}>"


class FakeCursor:
    """A cursor as aiosqlite's: the rows of the last statement run through it, fetched in turn.

    Its statements go through the connection it was made from (the lease, for a lent one); its
    fetches only read rows it already holds, but refuse once that connection is closed or
    released, or the cursor is.
    """

    __slots__ = (
        "_closed",
        "_lastrowid",
        "_names",
        "_next",
        "_rowcount",
        "_rows",
        "_via",
        "arraysize",
        "row_factory",
    )

    def __init__(self, via: FakeAiosqliteConnection, row_factory: RowFactory | None) -> None:
        self._via = via  # the connection, or the lease it was made through
        self._rows: tuple[Row, ...] = ()
        self._next = 0  # the position of the next row to fetch
        self._names: tuple[str, ...] | None = None  # column names; None: no result columns
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._closed = False
        self.arraysize = 1
        """Rows ``fetchmany`` returns when given no size."""
        self.row_factory: RowFactory | None = row_factory
        """What a fetch makes of each row (see the module docstring); the connection's at the
        cursor's creation."""

    @property
    def rowcount(self) -> int:
        """Rows the last ``INSERT``, ``UPDATE``, ``DELETE`` or ``REPLACE`` changed; -1 otherwise."""
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        """The row id the script gave the last statement (``FakeResult(lastrowid=...)``); None
        after ``executemany``, as sqlite3's."""
        return self._lastrowid

    @property
    def description(self) -> tuple[tuple[str, None, None, None, None, None, None], ...] | None:
        """A 7-tuple per result column, its name first (the rest None); None without columns."""
        if self._names is None:
            return None
        return tuple((name, None, None, None, None, None, None) for name in self._names)

    async def execute(self, sql: str, parameters: Parameters = None) -> FakeCursor:
        """Run a statement; its rows replace the cursor's."""
        self._check_open()
        result = await self._via._run(sql, _args(parameters))
        self._hold(sql, [result])
        self._lastrowid = result.lastrowid
        return self

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> FakeCursor:
        """Run a statement once for each parameter set (in one trip)."""
        self._check_open()
        results = await self._via._run_many(sql, [_args(one) for one in parameters])
        self._hold(sql, results)
        self._lastrowid = None  # as sqlite3's executemany
        return self

    async def executescript(self, sql_script: str) -> FakeCursor:
        """Run a script; it is matched against the scripts as one statement."""
        return await self.execute(sql_script)

    async def fetchone(self) -> Any | None:
        """The next row, or None after the last."""
        rows = self._take(1)
        return rows[0] if rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """The next ``size`` rows (``arraysize`` by default); fewer at the end."""
        return self._take(self.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        """The rows not fetched yet."""
        return self._take(len(self._rows))

    async def close(self) -> None:
        """Close the cursor; fetching from it raises from now on."""
        self._closed = True

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while rows := await self.fetchmany(_ITER_CHUNK_SIZE):
            for row in rows:
                yield row

    async def __aenter__(self) -> FakeCursor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _hold(self, sql: str, results: list[FakeResult]) -> None:
        """Keep the rows and counts of ``results``, the answers to ``sql``."""
        rows = tuple(row for result in results for row in result.rows)
        first = results[0] if results else FakeResult()
        self._rows = rows
        self._next = 0
        if first.columns is not None or rows:
            self._names = column_names(first, len(rows[0]) if rows else 0)
        else:
            self._names = None
        words = sql.split(None, 1)
        if words and words[0].upper() in _CHANGES_ROWS:
            self._rowcount = sum(result.count for result in results)
        else:
            self._rowcount = -1

    def _take(self, size: int) -> list[Any]:
        self._check_open()
        start = self._next
        # sqlite3 takes a size below 1 as "all of them".
        taken = self._rows[start : start + size] if size > 0 else self._rows[start:]
        self._next = start + len(taken)
        return [self._made(row) for row in taken]

    def _made(self, row: Row) -> Any:
        factory = self.row_factory
        if factory is None:
            return row
        if factory is sqlite3.Row:
            return FakeSQLiteRow(self._names or (), row)
        return factory(self, row)

    def _check_open(self) -> None:
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed cursor.")
        self._via._check_usable()


class Pending(Generic[_T]):
    """What aiosqlite's ``execute`` and its siblings return: awaited, it gives the result;
    entered with ``async with``, it gives the result and closes it (a cursor) at the end."""

    __slots__ = ("_coro", "_result")

    def __init__(self, coro: Coroutine[Any, Any, _T]) -> None:
        self._coro = coro
        self._result: _T | None = None

    def __await__(self) -> Generator[Any, None, _T]:
        return self._coro.__await__()

    async def __aenter__(self) -> _T:
        self._result = await self._coro
        return self._result

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(self._result, FakeCursor):
            await self._result.close()


def _args(parameters: Parameters) -> Row:
    """Parameters as recorded and given to scripts: positional ones as a tuple, named ones as a
    one-element tuple holding a copy of the mapping."""
    if parameters is None:
        return ()
    if isinstance(parameters, Mapping):
        return (dict(parameters),)
    return tuple(parameters)


async def _cursor(via: FakeAiosqliteConnection) -> FakeCursor:
    via._check_usable()
    return FakeCursor(via, via.row_factory)


async def _execute(via: FakeAiosqliteConnection, sql: str, parameters: Parameters) -> FakeCursor:
    return await (await _cursor(via)).execute(sql, parameters)


async def _executemany(
    via: FakeAiosqliteConnection, sql: str, parameters: Iterable[Parameters]
) -> FakeCursor:
    return await (await _cursor(via)).executemany(sql, parameters)


async def _executescript(via: FakeAiosqliteConnection, sql_script: str) -> FakeCursor:
    return await (await _cursor(via)).executescript(sql_script)


async def _execute_fetchall(
    via: FakeAiosqliteConnection, sql: str, parameters: Parameters
) -> list[Any]:
    return await (await _execute(via, sql, parameters)).fetchall()


async def _execute_insert(
    via: FakeAiosqliteConnection, sql: str, parameters: Parameters
) -> Any | None:
    cursor = await _execute(via, sql, parameters)
    # aiosqlite answers with the row of "SELECT last_insert_rowid()", made by the row factory.
    cursor._names = ("last_insert_rowid()",)
    return cursor._made((cursor.lastrowid,))


class FakeAiosqliteConnection(FakeConnectionBase):
    """A fake connection with aiosqlite's API (``FakeDriver(api="aiosqlite")``).

    The methods an app calls have the signatures of ``aiosqlite.Connection``'s. Statements are
    answered by the driver's scripts and recorded in ``executed`` (named parameters as a
    one-element tuple holding the mapping); what a test reads besides (``id``,
    ``in_transaction``, ...) is described in ``aiodbpool.drivers.fake``.
    """

    __slots__ = ("row_factory",)

    def __init__(self, driver: FakeDriver[Any], conn_id: int) -> None:
        super().__init__(driver, conn_id)
        self.row_factory: RowFactory | None = None
        """What fetches make of rows: None (tuples), ``sqlite3.Row``, or ``factory(cursor,
        row)``; a cursor takes the connection's when it is made."""

    def cursor(self) -> Pending[FakeCursor]:
        """A new cursor, with no rows yet."""
        return Pending(_cursor(self))

    def execute(self, sql: str, parameters: Parameters = None) -> Pending[FakeCursor]:
        """Run a statement; give a cursor holding its rows."""
        return Pending(_execute(self, sql, parameters))

    def executemany(self, sql: str, parameters: Iterable[Parameters]) -> Pending[FakeCursor]:
        """Run a statement once for each parameter set; give the cursor."""
        return Pending(_executemany(self, sql, parameters))

    def executescript(self, sql_script: str) -> Pending[FakeCursor]:
        """Run a script, matched against the scripts as one statement; give the cursor."""
        return Pending(_executescript(self, sql_script))

    def execute_fetchall(self, sql: str, parameters: Parameters = None) -> Pending[list[Any]]:
        """Run a statement; give all its rows."""
        return Pending(_execute_fetchall(self, sql, parameters))

    def execute_insert(self, sql: str, parameters: Parameters = None) -> Pending[Any | None]:
        """Run an ``INSERT``; give the row ``(lastrowid,)``."""
        return Pending(_execute_insert(self, sql, parameters))

    async def commit(self) -> None:
        """Commit the open transaction, if any (in autocommit, there is none without ``BEGIN``)."""
        self._check_usable()
        if self._in_transaction:
            await self._run("COMMIT", ())

    async def rollback(self) -> None:
        """Roll back the open transaction, if any."""
        self._check_usable()
        if self._in_transaction:
            await self._run("ROLLBACK", ())

    async def close(self) -> None:
        """Close the connection (``FakeDriver.close``)."""
        await self._driver.close(self)

    async def _run(self, sql: str, args: Row) -> FakeResult:
        return await self._driver._query(self, sql, args)

    async def _run_many(self, sql: str, arg_sets: list[Row]) -> list[FakeResult]:
        return await self._driver._query_many(self, sql, arg_sets)


class FakeAiosqliteLease(FakeLeaseBase[FakeAiosqliteConnection]):
    """A ``FakeAiosqliteConnection`` as the pool lends it.

    The connection's own methods run with the lease in the connection's place: each reaches
    the "server" through ``_run``, which the lease guards and counts, and the cursors they make
    keep the lease, so that they refuse after the release too. A test checks that every public
    method of the connection is here.
    """

    __slots__ = ()

    cursor = FakeAiosqliteConnection.cursor
    execute = FakeAiosqliteConnection.execute
    executemany = FakeAiosqliteConnection.executemany
    executescript = FakeAiosqliteConnection.executescript
    execute_fetchall = FakeAiosqliteConnection.execute_fetchall
    execute_insert = FakeAiosqliteConnection.execute_insert
    commit = FakeAiosqliteConnection.commit
    rollback = FakeAiosqliteConnection.rollback
    close = guarded_statement("close")
    row_factory = guarded_attribute("row_factory")
    _run = guarded_statement("_run")
    _run_many = guarded_statement("_run_many")
