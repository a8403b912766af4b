"""The MySQL and MariaDB driver, on asyncmy: the pool lends ``asyncmy.Connection`` objects, each
lend under a lease of its own.

What this driver adds to asyncmy:

* **Autocommit.** Connections are opened with ``autocommit=True``: a connection is inside a
  transaction only when its user began one (``BEGIN``, ``conn.begin()``, or
  ``driver.transaction(conn)``), so returning a connection never silently drops a write, and the
  usual release costs nothing.
* **Cleaning a returned connection without a round trip.** The server reports its transaction
  state in the status flags of every OK and EOF packet, and asyncmy keeps the last ones
  (``conn.server_status``; ``conn.get_transaction_status()``). So ``reset`` returns without
  awaiting anything when the connection is clean; it reads the rest of a result its user left
  unread, rolls back an open transaction, and turns autocommit back on, each only when needed.
* **A lease per lend.** What ``pool.acquire()`` gives stands in for the ``asyncmy.Connection``
  (``isinstance`` holds, every method works) until the release; after it, every use raises
  ``ReleasedConnectionError`` (both aiodbpool's ``ConnectionReleased`` and asyncmy's
  ``InterfaceError``) and sends nothing. So do the cursors and prepared statements made through
  it, whose statements also count as running, so that a release from another task waits for
  them. Prepared statements are closed at the release. ``aiodbpool.raw_connection(conn)`` gives
  the ``asyncmy.Connection`` itself.
* **A holder cancelled mid-statement.** The MySQL protocol has no way to stop a result halfway
  on the same connection, so asyncmy closes the connection when a read is cancelled; the pool
  then drops it. But the server goes on running the statement (and holding the locks of its
  transaction) until the statement ends: so the driver's ``close`` kills the statement's server
  thread (``KILL CONNECTION``) from a connection of its own.
* **Passwords.** A password in the URL, given as ``password=``, or returned by a password
  function never appears in an error, a log line or a ``repr``.

Everything else is asyncmy's: the keywords of ``asyncmy.connect`` pass through.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from itertools import count
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncmy
from asyncmy import errors
from asyncmy.connection import Connection, PreparedStatement
from asyncmy.cursors import Cursor

from aiodbpool import (
    ConnectionReleased,
    Lease,
    TransactionStatus,
    guarded_method,
    guarded_statement,
    raw_connection,
)
from aiodbpool.redaction import Password, Secrets, check_userinfo, redact_url, url_secrets

__all__ = ["MySQLDriver", "ReleasedConnectionError", "from_url"]


_SCHEMES: Final = ("mysql", "mariadb")
_URL_FORMS: Final = (
    "mysql://user:password@host:port/database, or mysql://user@/database?unix_socket=/path"
)

# Keywords of asyncmy.connect this driver sets itself, or that make no sense in a pool.
_NOT_PASSED_THROUGH: Final = {
    "password": "",
    "password_creator": "pass the function as password= instead",
    "autocommit": (
        "the driver always turns autocommit on, so that only a transaction your code begins "
        "makes a connection dirty; use driver.transaction(conn) or BEGIN"
    ),
    "sock": "a socket serves one connection, and a pool opens many: give host and port",
    "db": "use database=",
}
_CONNECT_OPTIONS: Final = frozenset(inspect.signature(asyncmy.connect).parameters) - set(
    _NOT_PASSED_THROUGH
)

# Query parameters a mysql:// URL may have, and how to read each.
_URL_PARAMETERS: Final[dict[str, Callable[[str], Any]]] = {
    "charset": str,
    "unix_socket": str,
    "read_timeout": float,
    "sql_mode": str,
    "init_command": str,
    "program_name": str,
}

_ER_NO_SUCH_THREAD: Final = 1094
"""The server's error for ``KILL`` of a thread that has ended already."""

_CANCELLED: Final = "Cancelled during execution"
"""asyncmy's close reason for a connection whose read was cancelled (``_close_on_cancel``)."""


class ReleasedConnectionError(ConnectionReleased, errors.InterfaceError):
    """A lent connection was used after its release: both aiodbpool's ``ConnectionReleased`` and
    ``asyncmy.errors.InterfaceError``, which asyncmy raises for a closed connection."""


_T = TypeVar("_T")


# ------------------------------------------------------------------ the lease


class _MySQLLease(Lease[Connection]):
    """An ``asyncmy.Connection`` as the pool lends it, for one borrower.

    Every public method of the connection is named here, so that a method fetched before the
    release still refuses after it; a test checks the list against asyncmy's. Properties
    (``connected``, ``server_status``, ...) are read through the lease's forwarding, which also
    refuses after the release.
    """

    __slots__ = ()

    released_error = ReleasedConnectionError

    # Round trips: counted while they run (see aiodbpool.Lease).
    autocommit = guarded_statement("autocommit")
    begin = guarded_statement("begin")
    commit = guarded_statement("commit")
    rollback = guarded_statement("rollback")
    query = guarded_statement("query")
    next_result = guarded_statement("next_result")
    select_db = guarded_statement("select_db")
    set_charset = guarded_statement("set_charset")
    show_warnings = guarded_statement("show_warnings")
    ping = guarded_statement("ping")
    kill = guarded_statement("kill")
    read_packet = guarded_statement("read_packet")
    connect = guarded_statement("connect")
    ensure_closed = guarded_statement("ensure_closed")
    # Local calls.
    close = guarded_method("close")
    write_packet = guarded_method("write_packet")
    escape = guarded_method("escape")
    escape_string = guarded_method("escape_string")
    literal = guarded_method("literal")
    affected_rows = guarded_method("affected_rows")
    insert_id = guarded_method("insert_id")
    thread_id = guarded_method("thread_id")
    get_autocommit = guarded_method("get_autocommit")
    get_transaction_status = guarded_method("get_transaction_status")
    get_server_info = guarded_method("get_server_info")
    get_host_info = guarded_method("get_host_info")
    get_proto_info = guarded_method("get_proto_info")
    character_set_name = guarded_method("character_set_name")

    def cursor(self, cursor: type[Cursor] | None = None) -> Cursor:
        """``asyncmy.Connection.cursor``: a cursor of the class asked for (or the connection's
        default), whose methods refuse after the release and whose statements count as running
        through the lease."""
        conn = self._live()
        base: type[Cursor] = cursor if cursor is not None else getattr(conn, "_cursor_cls", Cursor)
        made = conn.cursor(_guarded_class(base))
        made._lease = self  # type: ignore[attr-defined]
        return made

    async def prepare(self, query: str) -> PreparedStatement:
        """``asyncmy.Connection.prepare``: a server-side prepared statement that refuses after
        the release, and is closed on the server at the release."""
        conn = self._start()
        try:
            # cancel: asyncmy closes the connection; the release discards it
            statement: PreparedStatement = await conn.prepare(query)
        finally:
            self._finish()
        # Same layout, with guarded methods: the statement answers isinstance as before.
        statement.__class__ = _guarded_class(PreparedStatement)
        statement._lease = self  # type: ignore[attr-defined]
        self._undo_at_release(lambda conn: _close_statement(statement))
        return statement


def _close_statement(statement: PreparedStatement) -> Awaitable[None] | None:
    """Deallocate ``statement`` on the server (no answer to wait for), unless closed already."""
    if statement._closed:  # type: ignore[attr-defined]
        return None
    close: Callable[[PreparedStatement], Awaitable[None]] = PreparedStatement.close
    return close(statement)


_UNGUARDED_NAMES: Final = frozenset({"setinputsizes", "setoutputsizes"})
"""Public methods that are harmless after the release, left unguarded."""

_GUARDED_CLASSES: dict[type[Any], type[Any]] = {}
"""``_guarded_class``'s answers: one subclass per cursor or statement class."""


def _guarded_class(base: type[_T]) -> type[_T]:
    """A subclass of the cursor or prepared-statement class ``base`` whose public methods
    refuse once the lease that made the object (its ``_lease``) has ended, and whose coroutine
    methods count as statements running through it.

    The same object's methods call one another (``execute`` reads the previous result with
    ``nextset``): only the outermost call checks and counts, so a statement under way when the
    release comes is not cut off halfway by its own inner calls.
    """
    made = _GUARDED_CLASSES.get(base)
    if made is not None:
        return made
    namespace: dict[str, Any] = {"_depth": 0, "__module__": __name__}
    for name in dir(base):
        attribute = getattr(base, name)
        if name.startswith("_") or name in _UNGUARDED_NAMES or not inspect.isroutine(attribute):
            continue
        if inspect.iscoroutinefunction(attribute):
            namespace[name] = _guarded_coroutine(attribute)
        else:
            namespace[name] = _guarded_plain(attribute)
    guarded = type(base.__name__, (base,), namespace)
    guarded.__qualname__ = f"guarded {base.__qualname__}"
    _GUARDED_CLASSES[base] = guarded
    return guarded


def _guarded_coroutine(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def statement(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        if self._depth:
            return await method(self, *args, **kwargs)
        lease: Lease[Connection] = self._lease
        lease._start()  # refuses after the release
        self._depth = 1
        try:
            # cancel: asyncmy closes the connection mid-read; the release discards it
            return await method(self, *args, **kwargs)
        finally:
            self._depth = 0
            lease._finish()

    statement.__name__ = method.__name__
    return statement


def _guarded_plain(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        if not self._depth:
            self._lease._live()  # refuses after the release
        return method(self, *args, **kwargs)

    call.__name__ = method.__name__
    return call


# ------------------------------------------------------------------ the driver


class MySQLDriver:
    """Open, check and clean asyncmy connections to MySQL or MariaDB for an ``aiodbpool.Pool``.

    Arguments:

    ``url``
        ``mysql://user:password@host:port/database`` (or ``mariadb://``), with the query
        parameters ``charset``, ``unix_socket``, ``read_timeout``, ``sql_mode``,
        ``init_command`` and ``program_name``. ``None`` leaves everything to the keywords.
    ``password``
        The password, overriding one in the URL; or a callable (sync or async) returning it,
        called at every connect (rotating credentials such as cloud IAM tokens).
    ``init``
        ``async def init(conn)``, run on each new connection before the pool first hands it
        out (``SET time_zone = '+00:00'``, ...). If it raises, the connection is closed and the
        connect fails. Session settings it makes survive the reset.
    ``**connect_options``
        Any other keyword of ``asyncmy.connect``, passed through: ``host``, ``port``, ``user``,
        ``database``, ``ssl``, ``charset``, ``connect_timeout``, ``read_timeout``,
        ``cursor_cls``, ``stmt_cache_size``, ... They override the URL's. An unknown keyword
        raises ``TypeError`` here, not at the first connect; ``autocommit`` is refused (the
        driver keeps it on).
    """

    lease_class: ClassVar[type[Lease[Connection]]] = _MySQLLease
    """What a pool lends: a guarded stand-in for the connection (see the module docstring)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        password: Password | None = None,
        init: Callable[[Connection], Awaitable[None]] | None = None,
        **connect_options: Any,
    ) -> None:
        parameters: dict[str, Any] = {}
        url_password: str | None = None
        if url is not None:
            parameters, url_password = _parse_url(url)
        if init is not None and not callable(init):
            raise TypeError(f"init must be an async function, got {type(init).__name__}")
        if password is not None and not (isinstance(password, str) or callable(password)):
            raise TypeError(
                "password must be a string or a function returning one, "
                f"got {type(password).__name__}"
            )
        for name in connect_options:
            if name in _NOT_PASSED_THROUGH:
                why = _NOT_PASSED_THROUGH[name]
                raise TypeError(f"the MySQL driver does not take {name}=: {why}")
        unknown = sorted(set(connect_options) - _CONNECT_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown MySQL driver option(s): {', '.join(unknown)} (the driver takes "
                "password and init, plus the keywords of asyncmy.connect)"
            )
        self._url = url
        self._password: Password | None = password if password is not None else url_password
        self._secrets = Secrets(url_secrets(url) if url is not None else ())
        if isinstance(password, str):
            self._secrets.add(password)
        self._init = init
        self._options = {**parameters, **connect_options}

    # -- the driver contract --------------------------------------------------------------------

    async def connect(self) -> Connection:
        """Open a connection (autocommit on) and run the ``init`` callback on it.

        An error that quotes the password, or a piece of it, is scrubbed before it leaves
        (``aiodbpool.redaction.Secrets.scrub_error``).
        """
        try:
            return await self._connect(run_init=True)
        except Exception as error:
            failure = self._secrets.scrub_error(error)
            if failure is error:
                raise
        # Raised outside the except block, so the original is not chained as the context.
        raise failure

    async def close(self, conn: Connection) -> None:
        """Close politely (``COM_QUIT``); for a connection already closed, do nothing, unless a
        cancelled read closed it mid-statement: then kill that statement's server thread, which
        would otherwise run on, holding its transaction's locks, until the statement ends."""
        if conn.connected:
            await conn.ensure_closed()  # cancel: the socket is closed at once by terminate()
            return
        if _cut_off_mid_statement(conn):
            _forget_cut_off(conn)  # (once: a second close kills nothing)
            await self._kill(conn.thread_id())

    async def ping(self, conn: Connection) -> None:
        """One round trip: ``COM_PING``. A connection whose ping fails is closed."""
        if not conn.connected:
            raise errors.InterfaceError(0, "the connection is closed")
        try:
            await conn.ping(reconnect=False)  # cancel: closed below; the pool discards it
        except BaseException:
            conn.close()  # asyncmy leaves a connection that lost its server marked connected
            raise

    async def reset(self, conn: Connection) -> None:
        """Make ``conn`` clean for its next user, or raise so the pool discards it.

        Nothing is awaited when no result is left unread, no transaction is open and autocommit
        is on: all three are known from the last packet the server sent. Otherwise: read the
        rest of the results, ``ROLLBACK``, and turn autocommit back on, in that order (turning
        it on would commit). Session state (variables, temporary tables, ``GET_LOCK`` locks,
        the current database) stays.

        A connection closed by a cancelled read raises, so that the pool discards it; but first
        its server thread is killed (``KILL CONNECTION``, from a connection of its own), since
        the server would otherwise run the statement on, holding its transaction's locks.
        """
        if not conn.connected:
            if _cut_off_mid_statement(conn):
                # The pool discards it (below); first stop what its server thread still runs.
                _forget_cut_off(conn)
                await self._kill(conn.thread_id())  # cancel: the pool discards the connection
            raise errors.InterfaceError(0, "the connection is closed")
        if _result_pending(conn):
            await _drain(conn)  # cancel: the pool discards the connection
        if conn.get_transaction_status():
            await conn.rollback()  # cancel: as above
        if not conn.get_autocommit():
            await conn.autocommit(True)  # cancel: as above

    def is_closed(self, conn: Connection) -> bool:
        """asyncmy's own flag, without I/O: closed by ``close``, ``terminate``, a cancelled read,
        or a failed ping. A server that went away is noticed at the next round trip."""
        return not conn.connected

    # -- optional abilities ---------------------------------------------------------------------

    def terminate(self, conn: Connection) -> None:
        """Close the socket at once, without telling the server."""
        conn.close()

    def transaction(self, conn: Connection) -> AbstractAsyncContextManager[Connection]:
        """A transaction block: ``BEGIN`` on entry, ``COMMIT`` on success, ``ROLLBACK`` when the
        block raises. Inside a transaction already open, a savepoint instead (MySQL's ``BEGIN``
        would commit the open transaction). Made through a lent connection, it refuses to act
        after the release."""
        return _transaction(conn)

    def transaction_status(self, conn: Connection) -> TransactionStatus:
        """``"in_transaction"`` or ``"idle"``, from the last packet's status flags. (MySQL has
        no failed state: a failed statement leaves the transaction usable.)"""
        return "in_transaction" if raw_connection(conn).get_transaction_status() else "idle"

    def __repr__(self) -> str:
        where = repr(redact_url(self._url)) if self._url is not None else "(keywords)"
        return f"<MySQLDriver {where}>"

    # -- helpers --------------------------------------------------------------------------------

    async def _connect(self, *, run_init: bool) -> Connection:
        password = await self._secrets.password_for_connect(self._password)
        # cancel: asyncmy closes a half-made connection itself
        conn: Connection = await asyncmy.connect(
            password=password or "", autocommit=True, **self._options
        )
        if run_init and self._init is not None:
            try:
                await self._init(conn)
            except BaseException:
                conn.close()  # half set-up: never let it reach a user
                raise
        return conn

    async def _kill(self, thread_id: int) -> None:
        """End the server thread ``thread_id`` (ours) from a connection of its own."""
        failure: BaseException | None = None
        try:
            admin = await self._connect(run_init=False)
        except Exception as error:
            failure = self._secrets.scrub_error(error)
            if failure is error:
                raise
        if failure is not None:
            raise failure  # outside the except block: the original is not chained
        try:
            cursor = admin.cursor()
            try:
                await cursor.execute(f"KILL CONNECTION {int(thread_id)}")
            except errors.MySQLError as error:
                if not error.args or error.args[0] != _ER_NO_SUCH_THREAD:
                    raise
        except BaseException:
            admin.close()
            raise
        await admin.ensure_closed()


def from_url(url: str, **options: Any) -> MySQLDriver:
    """Make a ``MySQLDriver`` for a ``mysql://`` or ``mariadb://`` URL.

    The entry point ``create_pool`` uses; keyword ``options`` are ``MySQLDriver``'s.
    """
    return MySQLDriver(url, **options)


# ------------------------------------------------------------------ reading the URL


def _parse_url(url: object) -> tuple[dict[str, Any], str | None]:
    """The ``asyncmy.connect`` keywords a URL gives, and its password; refuses a malformed URL
    with a message that quotes no password."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}")
    check_userinfo(url)
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(f"not a MySQL URL: {shown!r}; expected {_URL_FORMS}")
    if parts.fragment or url.endswith("#"):
        raise ValueError(
            f"the MySQL URL {shown!r} has a '#', which ends a URL: in a password or a "
            "parameter, percent-encode it as %23"
        )
    options: dict[str, Any] = {}
    try:
        port = parts.port
    except ValueError:
        raise ValueError(
            f"the port in {shown!r} is not a number between 0 and 65535: fix it, or leave it "
            "out to use 3306"
        ) from None
    if parts.hostname:
        options["host"] = unquote(parts.hostname)
    if port is not None:
        options["port"] = port
    if parts.username:
        options["user"] = unquote(parts.username)
    database = unquote(parts.path.removeprefix("/"))
    if "/" in database:
        raise ValueError(f"the MySQL URL {shown!r} names more than one path segment; {_URL_FORMS}")
    if database:
        options["database"] = database
    for name, text in parse_qsl(parts.query, keep_blank_values=True):
        convert = _URL_PARAMETERS.get(name)
        if convert is None:
            raise ValueError(
                f"unknown mysql:// URL parameter {name!r}; known: {', '.join(_URL_PARAMETERS)} "
                "(pass other asyncmy.connect keywords to create_pool or MySQLDriver)"
            )
        if name in options:
            raise ValueError(f"mysql:// URL parameter {name!r} is given more than once: keep one")
        try:
            options[name] = convert(text)
        except ValueError:
            raise ValueError(
                f"mysql:// URL parameter {name}={text!r} is not valid: give a number of seconds"
            ) from None
    password = unquote(parts.password) if parts.password is not None else None
    return options, password


# ------------------------------------------------------------------ asyncmy's connection state


def _result_pending(conn: Connection) -> bool:
    """Whether a result is left unread on ``conn``: the rows of an unbuffered cursor, or the
    next result set of a multi-statement query. asyncmy keeps it in ``_result``; it has no
    public way to ask. Should a later asyncmy drop the attribute, the answer is "no", and asyncmy
    itself reads what is left before the next statement (with a warning)."""
    result = getattr(conn, "_result", None)
    return result is not None and bool(
        getattr(result, "unbuffered_active", False) or getattr(result, "has_next", False)
    )


async def _drain(conn: Connection) -> None:
    """Read what is left of the results on ``conn``, as asyncmy does before a new statement."""
    result: Any = getattr(conn, "_result", None)
    if result is not None and result.unbuffered_active:
        await result._finish_unbuffered_query()
    next_result: Callable[[], Awaitable[object]] = conn.next_result
    while (result := getattr(conn, "_result", None)) is not None and result.has_next:
        await next_result()


def _cut_off_mid_statement(conn: Connection) -> bool:
    """Whether asyncmy closed ``conn`` because a read was cancelled (its server thread may still
    run the statement)."""
    return getattr(raw_connection(conn), "_close_reason", None) == _CANCELLED


def _forget_cut_off(conn: Connection) -> None:
    raw = raw_connection(conn)
    if getattr(raw, "_close_reason", None) == _CANCELLED:
        raw._close_reason = "Cancelled during execution; its server thread was killed"  # type: ignore[attr-defined]


# ------------------------------------------------------------------ transactions

_savepoints = count(1)


@asynccontextmanager
async def _transaction(conn: Connection) -> AsyncIterator[Connection]:
    query: Callable[[str], Awaitable[object]] = conn.query
    if conn.get_transaction_status():
        savepoint = f"aiodbpool_{next(_savepoints)}"
        await query(f"SAVEPOINT {savepoint}")
        try:
            yield conn
        except BaseException:
            if conn.connected:
                await query(f"ROLLBACK TO SAVEPOINT {savepoint}")
            raise
        await query(f"RELEASE SAVEPOINT {savepoint}")
        return
    await conn.begin()
    try:
        yield conn
    except BaseException:
        if conn.connected:  # (a cancelled statement closed it: the server rolls back)
            await conn.rollback()
        raise
    await conn.commit()
