"""asyncpg's statement API on the fake driver, so that an app written for asyncpg runs unchanged.

``FakeDriver(api="asyncpg")`` lends ``FakeAsyncpgConnection`` objects. What an app calls behaves as
asyncpg's does, with the answers the test scripted:

* ``execute`` returns the status string (``"INSERT 0 1"``, ``"UPDATE 3"``, ``"CREATE TABLE"``);
  ``fetch``, ``fetchrow``, ``fetchval(column=)``, ``fetchmany`` and ``executemany`` return what
  asyncpg's do; each takes asyncpg's ``timeout``.
* Rows are ``FakeRecord`` objects, which behave as ``asyncpg.Record`` does: by index, by name,
  ``dict(row)``, ``row.get``, ``keys()``/``values()``/``items()``, equality with tuples.
* ``transaction()`` is asyncpg's transaction block: ``BEGIN`` on entry, ``COMMIT`` or ``ROLLBACK``
  on exit (on any exception, cancellation included), a ``SAVEPOINT`` when nested, the same
  refusals (a block inside a transaction begun by hand, a block started twice).
* ``prepare`` returns a statement with ``fetch``, ``fetchrow``, ``fetchval``, ``fetchmany``,
  ``executemany``.

Not mirrored: type codecs (values are what the script gives), ``record_class``, cursors, ``COPY``,
listeners, ``isinstance(conn, asyncpg.Connection)``, and asyncpg's exception classes (a test scripts
the ones it needs: ``driver.script(sql, asyncpg.UniqueViolationError("duplicate key"))``). This
module never imports asyncpg.

Objects born of a lend (transaction blocks, prepared statements) send their statements through
the lease, so after the release they refuse, as asyncpg's do through its pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from aiodbpool import guarded_method, guarded_statement
from aiodbpool.drivers._fake_base import FakeConnectionBase, FakeDatabaseError, FakeLeaseBase, Row
from aiodbpool.drivers._fake_scripts import FakeResult, column_names

if TYPE_CHECKING:
    from aiodbpool.drivers.fake import FakeDriver

# Shared with aiodbpool.drivers.fake, which re-exports the public names.
__all__ = ["FakeAsyncpgConnection", "FakeAsyncpgLease", "FakeRecord", "status_of"]


class FakeRecord:
    """A row as asyncpg returns it, behaving as ``asyncpg.Record`` does.

    ``row[0]`` and ``row["name"]`` (``IndexError``, ``KeyError`` when absent), slices (a tuple),
    ``row.get(name, default)``, ``len(row)``; iteration gives the values, ``keys()``,
    ``values()`` and ``items()`` give iterators, and ``in`` looks for a column name, so
    ``dict(row)`` works. Like asyncpg's, a record equals a tuple (or record) of the same values,
    whatever the names, orders like one, and hashes like one. Two columns of the same name keep
    both values; by name, the last one is found.
    """

    __slots__ = ("_index", "_names", "_values")

    _values: Row
    _names: tuple[str, ...]
    _index: dict[str, int]

    def __init__(self, values: Iterable[object], names: Iterable[str]) -> None:
        self._values = tuple(values)
        self._names = tuple(names)
        if len(self._names) != len(self._values):
            raise ValueError(
                f"FakeRecord(): {len(self._values)} values for the names {self._names!r}: give "
                "one value per name"
            )
        self._index = _index_of(self._names)

    @classmethod
    def _made(cls, values: Row, names: tuple[str, ...], index: dict[str, int]) -> FakeRecord:
        """A record sharing ``names`` and ``index`` with the other rows of its result."""
        record = cls.__new__(cls)
        record._values = values
        record._names = names
        record._index = index
        return record

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, int):
            try:
                return self._values[key]
            except IndexError:
                raise IndexError("record index out of range") from None
        if isinstance(key, slice):
            return self._values[key]
        try:
            return self._values[self._index[key]]
        except (KeyError, TypeError):
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        """The value of the column named ``key``, or ``default`` without one."""
        index = self._index.get(key) if isinstance(key, str) else None
        return default if index is None else self._values[index]

    def keys(self) -> Iterator[str]:
        """An iterator over the column names."""
        return iter(self._names)

    def values(self) -> Iterator[object]:
        """An iterator over the values."""
        return iter(self._values)

    def items(self) -> Iterator[tuple[str, object]]:
        """An iterator over ``(name, value)`` pairs."""
        return zip(self._names, self._values, strict=True)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[object]:
        return iter(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __eq__(self, other: object) -> bool:
        values = _values_of(other)
        return NotImplemented if values is None else self._values == values

    def __lt__(self, other: object) -> bool:
        values = _values_of(other)
        return NotImplemented if values is None else self._values < values

    def __le__(self, other: object) -> bool:
        values = _values_of(other)
        return NotImplemented if values is None else self._values <= values

    def __gt__(self, other: object) -> bool:
        values = _values_of(other)
        return NotImplemented if values is None else self._values > values

    def __ge__(self, other: object) -> bool:
        values = _values_of(other)
        return NotImplemented if values is None else self._values >= values

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        fields = "".join(f" {name}={value!r}" for name, value in self.items())
        return f"<Record{fields}>"


def _values_of(other: object) -> Row | None:
    """What a record compares with: a tuple's or another record's values (None: not comparable)."""
    if isinstance(other, FakeRecord):
        return other._values
    if isinstance(other, tuple):
        return other
    return None


def _index_of(names: tuple[str, ...]) -> dict[str, int]:
    """Column positions by name; of two columns with one name, the last one (as asyncpg)."""
    return {name: position for position, name in enumerate(names)}


def _records(result: FakeResult) -> list[FakeRecord]:
    """The rows of ``result`` as records; rows of one width share their names."""
    records: list[FakeRecord] = []
    names: tuple[str, ...] = ()
    index: dict[str, int] = {}
    for values in result.rows:
        if len(values) != len(names) or not records:
            names = column_names(result, len(values))
            index = _index_of(names)
        records.append(FakeRecord._made(values, names, index))
    return records


_COUNTED: Final = frozenset({"SELECT", "UPDATE", "DELETE", "MERGE", "FETCH", "MOVE", "COPY"})
_MAIN_COMMANDS: Final = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
_MODIFIERS: Final = frozenset(
    {"OR", "REPLACE", "TEMP", "TEMPORARY", "UNIQUE", "UNLOGGED", "GLOBAL", "LOCAL"}
)
_TAGS: Final = {"END": "COMMIT", "ABORT": "ROLLBACK", "TRUNCATE": "TRUNCATE TABLE"}


def status_of(sql: str, result: FakeResult) -> str:
    """The status string PostgreSQL answers ``sql`` with, as asyncpg's ``execute`` returns it.

    ``result.status`` when the script gave one. Otherwise ``INSERT 0 n``, ``UPDATE n``,
    ``DELETE n``, ``SELECT n``... with ``n`` the result's row count (the main statement after a
    ``WITH`` counts); ``CREATE TABLE``, ``DROP INDEX``... for definitions; the first keyword for
    the rest (``BEGIN``, ``SET``...).
    """
    if result.status is not None:
        return result.status
    words = sql.replace(";", " ").replace("(", " ( ").replace(")", " ) ").upper().split()
    if not words:
        return ""
    command = words[0]
    if command == "WITH":
        command = _after_common_table_expressions(words)
    if command == "INSERT":
        return f"INSERT 0 {result.count}"
    if command in _COUNTED:
        return f"{command} {result.count}"
    if command in ("CREATE", "DROP", "ALTER"):
        kind = next((word for word in words[1:] if word not in _MODIFIERS), "")
        return f"{command} {kind}".rstrip()
    if words[:2] == ["START", "TRANSACTION"]:
        return "START TRANSACTION"
    return _TAGS.get(command, command)


def _after_common_table_expressions(words: list[str]) -> str:
    """The command of a ``WITH`` statement: its first main command outside parentheses."""
    depth = 0
    for word in words[1:]:
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif depth == 0 and word in _MAIN_COMMANDS:
            return word
    return "SELECT"


class FakeAsyncpgConnection(FakeConnectionBase):
    """A fake connection with asyncpg's statement API (``FakeDriver(api="asyncpg")``).

    Every method has the signature of ``asyncpg.Connection``'s. Statements are answered by the
    driver's scripts and recorded in ``executed``; what a test reads besides (``id``,
    ``in_transaction``, ...) is described in ``aiodbpool.drivers.fake``.
    """

    __slots__ = ("_savepoints", "_top_xact")

    def __init__(self, driver: FakeDriver[Any], conn_id: int) -> None:
        super().__init__(driver, conn_id)
        # The outermost transaction block under way, as asyncpg's own _top_xact.
        self._top_xact: FakeTransaction | None = None
        # Savepoints made so far: each nested block names its own.
        self._savepoints = 0

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        """Run a statement; return its status, such as ``"INSERT 0 1"``."""
        return status_of(query, await self._run(query, args, timeout))

    async def executemany(
        self, command: str, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> None:
        """Run ``command`` once for each argument sequence in ``args``, in one round trip."""
        await self._run_many(command, args, timeout)

    async def fetch(
        self, query: str, *args: object, timeout: float | None = None
    ) -> list[FakeRecord]:
        """Run a query; return its rows."""
        return _records(await self._run(query, args, timeout))

    async def fetchrow(
        self, query: str, *args: object, timeout: float | None = None
    ) -> FakeRecord | None:
        """Run a query; return its first row, or None without one."""
        records = _records(await self._run(query, args, timeout))
        return records[0] if records else None

    async def fetchval(
        self, query: str, *args: object, column: int | str = 0, timeout: float | None = None
    ) -> Any:
        """Run a query; return ``column`` of its first row, or None without a row."""
        records = _records(await self._run(query, args, timeout))
        return records[0][column] if records else None

    async def fetchmany(
        self, query: str, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> list[FakeRecord]:
        """Run ``query`` once for each argument sequence in ``args``; return all their rows."""
        results = await self._run_many(query, args, timeout)
        return [record for result in results for record in _records(result)]

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> FakeTransaction:
        """A transaction block, as asyncpg's: ``async with conn.transaction(): ...``."""
        return FakeTransaction(self, self, isolation, readonly, deferrable)

    async def prepare(
        self, query: str, *, name: str | None = None, timeout: float | None = None
    ) -> FakePreparedStatement:
        """Prepare ``query`` (one round trip); run it with the statement's methods."""
        if timeout is None:
            await self._driver._round_trip(self)
        else:
            async with asyncio.timeout(timeout):
                await self._driver._round_trip(self)
        return FakePreparedStatement(query, self)

    def is_closed(self) -> bool:
        """Whether the connection is closed, or broken in a way the client noticed."""
        return self._driver.is_closed(self)

    def is_in_transaction(self) -> bool:
        """Whether a transaction is open."""
        return self._in_transaction

    async def close(self, *, timeout: float | None = None) -> None:
        """Close the connection (``FakeDriver.close``)."""
        if timeout is None:
            await self._driver.close(self)
        else:
            async with asyncio.timeout(timeout):
                await self._driver.close(self)

    def terminate(self) -> None:
        """Close the connection at once (``FakeDriver.terminate``)."""
        self._driver.terminate(self)

    async def _run(self, sql: str, args: Row, timeout: float | None) -> FakeResult:
        if timeout is None:
            return await self._driver._query(self, sql, args)
        async with asyncio.timeout(timeout):
            return await self._driver._query(self, sql, args)

    async def _run_many(
        self, sql: str, args: Iterable[Sequence[object]], timeout: float | None
    ) -> list[FakeResult]:
        arg_sets = [tuple(one) for one in args]
        if timeout is None:
            return await self._driver._query_many(self, sql, arg_sets)
        async with asyncio.timeout(timeout):
            return await self._driver._query_many(self, sql, arg_sets)

    def _forget_transaction(self) -> None:
        # The reset rolled back: a block left unfinished is over, as asyncpg's own reset says.
        self._top_xact = None


class _Sender(Protocol):
    """Where the objects born of a connection send their statements: the connection itself, or
    the lease it was lent under (which refuses after the release)."""

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str: ...

    async def fetch(
        self, query: str, *args: object, timeout: float | None = None
    ) -> list[FakeRecord]: ...

    async def fetchrow(
        self, query: str, *args: object, timeout: float | None = None
    ) -> FakeRecord | None: ...

    async def fetchval(
        self, query: str, *args: object, column: int | str = 0, timeout: float | None = None
    ) -> Any: ...

    async def fetchmany(
        self, query: str, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> list[FakeRecord]: ...

    async def executemany(
        self, command: str, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> None: ...


_ISOLATION_LEVELS: Final = {
    "read_committed": " ISOLATION LEVEL READ COMMITTED",
    "read_uncommitted": " ISOLATION LEVEL READ UNCOMMITTED",
    "repeatable_read": " ISOLATION LEVEL REPEATABLE READ",
    "serializable": " ISOLATION LEVEL SERIALIZABLE",
}

_State = Literal["new", "started", "committed", "rolled back", "failed"]


class FakeTransaction:
    """A transaction block as asyncpg's ``Transaction``: ``start``, then ``commit`` or
    ``rollback``; or ``async with``, which rolls back when the block raises anything (a
    cancellation too) and commits otherwise. A block inside another is a savepoint."""

    __slots__ = (
        "_conn",
        "_deferrable",
        "_isolation",
        "_managed",
        "_nested",
        "_readonly",
        "_savepoint",
        "_state",
        "_via",
    )

    def __init__(
        self,
        conn: FakeAsyncpgConnection,
        via: _Sender,
        isolation: str | None,
        readonly: bool,
        deferrable: bool,
    ) -> None:
        if isolation is not None and isolation not in _ISOLATION_LEVELS:
            raise ValueError(
                f"isolation is expected to be either of {sorted(_ISOLATION_LEVELS)}, "
                f"got {isolation!r}"
            )
        self._conn = conn  # whose transaction state this block changes
        self._via = via  # where its statements go: the connection, or the lease it came from
        self._isolation = isolation
        self._readonly = readonly
        self._deferrable = deferrable
        self._state: _State = "new"
        self._nested = False
        self._savepoint = ""
        self._managed = False  # inside an `async with`

    async def __aenter__(self) -> None:
        if self._managed:
            raise FakeDatabaseError("cannot enter context: already in an `async with` block")
        self._managed = True
        await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self._end("commit")
            else:
                # Any exception, a cancellation too, as asyncpg's block does: the ROLLBACK is
                # awaited while the cancellation propagates (a second one interrupts it, and
                # the pool's reset then rolls back).
                await self._end("rollback")
        finally:
            self._managed = False

    async def start(self) -> None:
        """Begin the transaction, or the savepoint of a nested block."""
        self._check_not_over("start")
        if self._state == "started":
            raise FakeDatabaseError("cannot start; the transaction is already started")
        conn = self._conn
        if conn._top_xact is None:
            if conn._in_transaction:
                raise FakeDatabaseError(
                    "cannot use Connection.transaction() in a manually started transaction"
                )
            query = "BEGIN"
            if self._isolation is not None:
                query += _ISOLATION_LEVELS[self._isolation]
            if self._readonly:
                query += " READ ONLY"
            if self._deferrable:
                query += " DEFERRABLE"
            query += ";"
        else:
            self._nested = True
            conn._savepoints += 1
            self._savepoint = f"__asyncpg_savepoint_{conn._savepoints:x}__"
            query = f"SAVEPOINT {self._savepoint};"
        try:
            await self._via.execute(query)
        except BaseException:
            self._state = "failed"
            raise
        self._state = "started"
        if not self._nested:
            conn._top_xact = self

    async def commit(self) -> None:
        """Commit the transaction (release the savepoint of a nested block)."""
        if self._managed:
            raise FakeDatabaseError("cannot manually commit from within an `async with` block")
        await self._end("commit")

    async def rollback(self) -> None:
        """Roll back the transaction (to the savepoint of a nested block)."""
        if self._managed:
            raise FakeDatabaseError("cannot manually rollback from within an `async with` block")
        await self._end("rollback")

    async def _end(self, how: Literal["commit", "rollback"]) -> None:
        if self._state != "started":
            if self._state == "new":
                raise FakeDatabaseError(f"cannot {how}; the transaction is not yet started")
            self._check_not_over(how)
        if self._conn._top_xact is self:
            self._conn._top_xact = None
        if how == "commit":
            query = f"RELEASE SAVEPOINT {self._savepoint};" if self._nested else "COMMIT;"
        else:
            query = f"ROLLBACK TO {self._savepoint};" if self._nested else "ROLLBACK;"
        try:
            await self._via.execute(query)
        except BaseException:
            self._state = "failed"
            raise
        self._state = "committed" if how == "commit" else "rolled back"

    def _check_not_over(self, action: str) -> None:
        if self._state in ("committed", "rolled back"):
            raise FakeDatabaseError(f"cannot {action}; the transaction is already {self._state}")
        if self._state == "failed":
            raise FakeDatabaseError(f"cannot {action}; the transaction is in error state")

    def __repr__(self) -> str:
        return f"<FakeTransaction state:{self._state.replace(' ', '')}>"


class FakePreparedStatement:
    """A statement ``prepare`` returned: run it with its arguments, as asyncpg's."""

    __slots__ = ("_query", "_via")

    def __init__(self, query: str, via: _Sender) -> None:
        self._query = query
        self._via = via

    def get_query(self) -> str:
        """The statement's text."""
        return self._query

    async def fetch(self, *args: object, timeout: float | None = None) -> list[FakeRecord]:
        """Run the statement; return its rows."""
        return await self._via.fetch(self._query, *args, timeout=timeout)

    async def fetchrow(self, *args: object, timeout: float | None = None) -> FakeRecord | None:
        """Run the statement; return its first row, or None."""
        return await self._via.fetchrow(self._query, *args, timeout=timeout)

    async def fetchval(
        self, *args: object, column: int | str = 0, timeout: float | None = None
    ) -> Any:
        """Run the statement; return ``column`` of its first row, or None."""
        return await self._via.fetchval(self._query, *args, column=column, timeout=timeout)

    async def fetchmany(
        self, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> list[FakeRecord]:
        """Run the statement once per argument sequence; return all the rows."""
        return await self._via.fetchmany(self._query, args, timeout=timeout)

    async def executemany(
        self, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> None:
        """Run the statement once per argument sequence."""
        await self._via.executemany(self._query, args, timeout=timeout)

    def _through(self, via: _Sender) -> FakePreparedStatement:
        return FakePreparedStatement(self._query, via)


class FakeAsyncpgLease(FakeLeaseBase[FakeAsyncpgConnection]):
    """A ``FakeAsyncpgConnection`` as the pool lends it: every method refuses after the release,
    and so do the transaction blocks and prepared statements made through it. A test checks
    that every public method of the connection is here."""

    __slots__ = ()

    execute = guarded_statement("execute")
    executemany = guarded_statement("executemany")
    fetch = guarded_statement("fetch")
    fetchmany = guarded_statement("fetchmany")
    fetchrow = guarded_statement("fetchrow")
    fetchval = guarded_statement("fetchval")
    close = guarded_statement("close")
    is_closed = guarded_method("is_closed")
    is_in_transaction = guarded_method("is_in_transaction")
    terminate = guarded_method("terminate")

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> FakeTransaction:
        """``FakeAsyncpgConnection.transaction``, its statements sent through the lease."""
        return FakeTransaction(self._live(), self, isolation, readonly, deferrable)

    async def prepare(self, query: str, **options: Any) -> FakePreparedStatement:
        """``FakeAsyncpgConnection.prepare``, the statement run through the lease."""
        conn = self._start()
        try:
            statement = await conn.prepare(query, **options)
        finally:
            self._finish()
        return statement._through(self)
