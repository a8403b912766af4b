"""The PostgreSQL driver, on asyncpg: the pool lends ``asyncpg.Connection`` objects, each lend
under a lease of its own.

Three things make this driver more than a thin wrapper:

* **A lease per lend.** What ``pool.acquire()`` gives is a stand-in for the connection:
  ``isinstance(conn, asyncpg.Connection)`` holds and every method works, but only until the
  release. After it, every method raises ``ConnectionReleased`` (also an ``asyncpg.InterfaceError``,
  as asyncpg's own pool raises) without sending anything; so do transactions, cursors and
  prepared statements made through it (asyncpg's own guard, which the release triggers); and
  the listeners the borrower added (``add_listener``, ``add_log_listener``,
  ``add_termination_listener``, ``add_query_logger``) are removed, so they never fire for the
  next borrower. ``aiodbpool.raw_connection(conn)`` gives the ``asyncpg.Connection`` itself.
* **Cleaning a returned connection.** asyncpg tracks the server's transaction status locally, so
  the default reset (``reset="transaction"``) returns without a round trip when the connection
  is clean, and rolls back only when a transaction was left open or failed. ``reset="full"``
  also clears session state (settings, ``LISTEN`` registrations, advisory locks, open cursors)
  with asyncpg's own ``asyncpg.Connection.reset``, which costs a round trip on every release.
* **A holder cancelled mid-query.** asyncpg answers the cancellation by asking the server to
  cancel the statement; until the server confirms, the connection is busy. The reset waits for
  that confirmation (bounded by the pool's ``reset_timeout``; past it the pool discards the
  connection), then rolls back, so the next user never meets a busy connection or a transaction
  it did not start.

Everything else is asyncpg's: the DSN and every ``asyncpg.connect`` keyword pass through.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ClassVar, Final, Literal, TypeAlias
from urllib.parse import parse_qs, urlsplit

import asyncpg
from asyncpg.connection import _ConnectionProxy

from aiodbpool import (
    ConnectionReleased,
    Lease,
    TransactionStatus,
    guarded_method,
    guarded_statement,
    raw_connection,
)
from aiodbpool.redaction import Password, Secrets, check_userinfo, redact_url, url_secrets

__all__ = ["PostgresDriver", "ReleasedConnectionError", "ResetMode", "from_url"]

ResetMode: TypeAlias = Literal["transaction", "full"]
"""How much ``PostgresDriver.reset`` cleans: the open transaction only, or all session state."""


_SCHEMES = ("postgresql", "postgres")

# Keywords the driver handles itself, or that asyncpg must not be given through this driver.
_NOT_PASSED_THROUGH = frozenset({"dsn", "loop", "password"})
_CONNECT_OPTIONS = frozenset(inspect.signature(asyncpg.connect).parameters) - _NOT_PASSED_THROUGH


class ReleasedConnectionError(ConnectionReleased, asyncpg.InterfaceError):
    """A lent connection was used after its release: both aiodbpool's ``ConnectionReleased`` and
    ``asyncpg.InterfaceError``, which asyncpg's own pool raises for the same mistake."""


_Callback: TypeAlias = Callable[..., Any]


class _PostgresLease(Lease[asyncpg.Connection], _ConnectionProxy):
    """An ``asyncpg.Connection`` as the pool lends it, for one borrower.

    ``_ConnectionProxy`` is asyncpg's marker for stand-ins of a connection: with it,
    ``isinstance(lease, asyncpg.Connection)`` holds. Every public method of the connection is
    named here, so that a method fetched before the release still refuses after it; a test
    checks the list against asyncpg's.
    """

    __slots__ = ()

    released_error = ReleasedConnectionError

    # Statements and other round trips: counted while they run (see aiodbpool.Lease).
    execute = guarded_statement("execute")
    executemany = guarded_statement("executemany")
    fetch = guarded_statement("fetch")
    fetchmany = guarded_statement("fetchmany")
    fetchrow = guarded_statement("fetchrow")
    fetchval = guarded_statement("fetchval")
    copy_from_query = guarded_statement("copy_from_query")
    copy_from_table = guarded_statement("copy_from_table")
    copy_records_to_table = guarded_statement("copy_records_to_table")
    copy_to_table = guarded_statement("copy_to_table")
    set_type_codec = guarded_statement("set_type_codec")
    reset_type_codec = guarded_statement("reset_type_codec")
    set_builtin_type_codec = guarded_statement("set_builtin_type_codec")
    reload_schema_state = guarded_statement("reload_schema_state")
    remove_listener = guarded_statement("remove_listener")
    reset = guarded_statement("reset")
    close = guarded_statement("close")
    # Objects born of the lease: asyncpg stamps them with the connection's release counter,
    # which _left_behind advances, so they refuse after the release. (A statement that runs
    # through one of them is not counted as running: see prepare, and reset.)
    cursor = guarded_method("cursor")
    transaction = guarded_method("transaction")
    # Local calls.
    get_reset_query = guarded_method("get_reset_query")
    get_server_pid = guarded_method("get_server_pid")
    get_server_version = guarded_method("get_server_version")
    get_settings = guarded_method("get_settings")
    is_closed = guarded_method("is_closed")
    is_in_transaction = guarded_method("is_in_transaction")
    terminate = guarded_method("terminate")
    remove_log_listener = guarded_method("remove_log_listener")
    remove_query_logger = guarded_method("remove_query_logger")
    remove_termination_listener = guarded_method("remove_termination_listener")

    async def prepare(self, query: str, **options: Any) -> Any:
        """``asyncpg.Connection.prepare``. A statement run through what it returns is not counted
        as running through the lease, so the release of a lend that prepared one waits until
        the connection is idle (a round trip) before the connection is reset."""
        conn = self._start()
        try:
            statement = await conn.prepare(query, **options)
        finally:
            self._finish()
        undo = self._undo_actions
        if undo is None or _roll_back_when_idle not in undo:
            self._undo_at_release(_roll_back_when_idle)
        return statement

    # Listeners: each is removed again when the lease ends by a release.

    async def add_listener(self, channel: str, callback: _Callback) -> None:
        """``asyncpg.Connection.add_listener``, for this lend only: ``UNLISTEN`` at the release."""
        conn = self._start()
        try:
            await conn.add_listener(channel, callback)
        finally:
            self._finish()
        self._undo_at_release(lambda conn: conn.remove_listener(channel, callback))

    def add_log_listener(self, callback: _Callback) -> None:
        """``asyncpg.Connection.add_log_listener``, for this lend only."""
        self._live().add_log_listener(callback)
        self._undo_at_release(lambda conn: conn.remove_log_listener(callback))

    def add_termination_listener(self, callback: _Callback) -> None:
        """``asyncpg.Connection.add_termination_listener``, for this lend only."""
        self._live().add_termination_listener(callback)
        self._undo_at_release(lambda conn: conn.remove_termination_listener(callback))

    def add_query_logger(self, callback: _Callback) -> None:
        """``asyncpg.Connection.add_query_logger``, for this lend only."""
        self._live().add_query_logger(callback)
        self._undo_at_release(lambda conn: conn.remove_query_logger(callback))

    def query_logger(self, callback: _Callback) -> AbstractContextManager[None]:
        """``asyncpg.Connection.query_logger``; the logger goes at the release at the latest."""
        conn = self._live()
        self._undo_at_release(lambda conn: conn.remove_query_logger(callback))
        return conn.query_logger(callback)

    def _left_behind(self, connection: asyncpg.Connection) -> Coroutine[Any, Any, None] | None:
        # asyncpg's own guard for transactions, cursors and prepared statements: they remember
        # the counter as it was when they were made, and refuse once it has moved.
        connection._pool_release_ctr += 1  # type: ignore[attr-defined]
        return super()._left_behind(connection)


class PostgresDriver:
    """Open, check and clean asyncpg connections for an ``aiodbpool.Pool``.

    Arguments:

    ``dsn``
        A ``postgresql://`` (or ``postgres://``) URL, as asyncpg accepts it, including query
        parameters such as ``?sslmode=require``. ``None`` leaves everything to the keywords
        below and the ``PG*`` environment variables.
    ``password``
        The password, overriding one in the DSN; or a callable (sync or async) returning it,
        called at every connect. Use a callable for rotating credentials such as cloud IAM
        tokens: connections opened later get the current token.
    ``init``
        ``async def init(conn)``, run on each new connection before the pool first hands it
        out: register type codecs, ``SET search_path``, prepare statements. If it raises, the
        connection is closed and the connect fails. Settings made here survive the default
        reset but not ``reset="full"`` (which runs ``RESET ALL``): with full resets, put
        settings in ``server_settings`` instead.
    ``reset``
        ``"transaction"`` (the default) or ``"full"``; see ``reset``.
    ``**connect_options``
        Any other keyword of ``asyncpg.connect``, passed through unchanged: ``ssl``,
        ``server_settings``, ``statement_cache_size`` (``0`` behind PgBouncer in transaction
        mode), ``command_timeout``, ``host``, ``port``, ``user``, ``database``, ``timeout``,
        ``record_class``, ``connection_class``, ... An unknown keyword raises ``TypeError``
        here, not at the first connect.
    """

    lease_class: ClassVar[type[Lease[asyncpg.Connection]]] = _PostgresLease
    """What a pool lends: a guarded stand-in for the connection (see the module docstring)."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        password: Password | None = None,
        init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        reset: ResetMode = "transaction",
        **connect_options: Any,
    ) -> None:
        if reset not in ("transaction", "full"):
            raise ValueError(f"reset must be 'transaction' or 'full', got {reset!r}")
        if init is not None and not callable(init):
            raise TypeError(f"init must be an async function, got {type(init).__name__}")
        # What no error leaving connect() may quote: the DSN's passwords, the password given,
        # and the last values a password function returned (set_connect_args adds the new ones).
        self._secrets = Secrets(())
        self._init = init
        self._reset_mode: ResetMode = reset
        self._dsn: str | None = None
        self._password: Password | None = None
        self._connect_options: dict[str, Any] = {}
        self.set_connect_args(dsn, password=password, **connect_options)

    def set_connect_args(
        self, dsn: str | None = None, *, password: Password | None = None, **connect_options: Any
    ) -> None:
        """Replace the DSN, the password and the keywords of ``asyncpg.connect`` for the
        connects from now on, as asyncpg's ``Pool.set_connect_args`` does (``init`` and
        ``reset`` stay). Checked like the constructor's, before anything changes.

        Connections already open keep what they were opened with: call the pool's ``expire()``
        to replace them as they come back. For a password that changes by itself (a cloud IAM
        token), a password function is simpler.
        """
        if dsn is not None:
            _check_dsn(dsn)
        if password is not None and not (isinstance(password, str) or callable(password)):
            raise TypeError(
                "password must be a string or a function returning one, "
                f"got {type(password).__name__}"
            )
        unknown = sorted(set(connect_options) - _CONNECT_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown PostgreSQL driver option(s): {', '.join(unknown)} (the driver takes "
                "password, init and reset, plus the keywords of asyncpg.connect)"
            )
        if dsn is not None:
            for secret in url_secrets(dsn):
                self._secrets.add(secret)
        if isinstance(password, str):
            self._secrets.add(password)
        self._dsn = dsn
        self._password = password
        self._connect_options = connect_options

    @property
    def reset_mode(self) -> ResetMode:
        """``"transaction"`` or ``"full"``: what ``reset`` cleans."""
        return self._reset_mode

    async def connect(self) -> asyncpg.Connection:
        """Open a connection and run the ``init`` callback on it.

        An error that quotes the password (or a piece of it) is scrubbed before it leaves
        (``aiodbpool.redaction.Secrets.scrub_error``): asyncpg and the server may echo parts of
        a DSN back, and the pool puts the error in its messages and logs.
        """
        try:
            return await self._connect()
        except Exception as error:
            failure = self._secrets.scrub_error(error)
            if failure is error:
                raise
        # Raised outside the except block, so the original is not chained as the context.
        raise failure

    async def _connect(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            password=await self._secrets.password_for_connect(self._password),
            **self._connect_options,
        )
        if self._init is not None:
            try:
                await self._init(conn)
            except BaseException:
                # Half set-up: never let it reach a user. terminate() needs no round trip,
                # so a cancelled connect cannot leave the socket open either.
                conn.terminate()
                raise
        return conn

    async def close(self, conn: asyncpg.Connection) -> None:
        """Close politely: tell the server goodbye and wait for the socket to close."""
        await conn.close()

    async def ping(self, conn: asyncpg.Connection) -> None:
        """One round trip with the cheapest statement asyncpg can send."""
        await conn.execute("SELECT 1")

    async def reset(self, conn: asyncpg.Connection) -> None:
        """Make ``conn`` clean for its next user, or raise so the pool discards it.

        ``reset="transaction"``: nothing to do, and nothing awaited, when no transaction is
        open and no cancelled statement is pending; otherwise wait for the pending cancellation
        and ``ROLLBACK``. Session state (``SET``, ``LISTEN``, advisory locks, cursors ``WITH
        HOLD``, prepared statements) stays, which is what an ``init`` callback relies on.

        ``reset="full"``: ``asyncpg.Connection.reset`` on every release: roll back, then
        ``pg_advisory_unlock_all()``, ``CLOSE ALL``, ``UNLISTEN *`` and ``RESET ALL`` in one
        statement, and drop the connection's listeners. One round trip each time; a
        connection comes back as if new, whatever its last user did.
        """
        if conn.is_closed():
            raise asyncpg.InterfaceError("the connection is closed")
        if conn.is_in_transaction() or _transaction_under_way(conn) or _cancellation_pending(conn):
            # asyncpg runs a statement only after the server confirmed a pending cancellation,
            # so this waits for it first; without a transaction the ROLLBACK is a no-op.
            await _roll_back_when_idle(conn)
            _forget_finished_transaction(conn)
        if self._reset_mode == "full":
            await conn.reset()

    def is_closed(self, conn: asyncpg.Connection) -> bool:
        """asyncpg's own flag: set when the socket closed or the server ended the session."""
        return conn.is_closed()

    def terminate(self, conn: asyncpg.Connection) -> None:
        """Drop the socket at once, without telling the server."""
        conn.terminate()

    def transaction(self, conn: asyncpg.Connection) -> AbstractAsyncContextManager[None]:
        """asyncpg's transaction block: ``BEGIN`` on entry, ``COMMIT`` or ``ROLLBACK`` on exit.

        Made through a lent connection, it refuses to act after the release.
        """
        return conn.transaction()

    def transaction_status(self, conn: asyncpg.Connection) -> TransactionStatus:
        """``"in_transaction"`` inside a transaction, failed or not (asyncpg does not say which
        without a round trip), else ``"idle"``."""
        return "in_transaction" if raw_connection(conn).is_in_transaction() else "idle"

    def __repr__(self) -> str:
        where = repr(redact_url(self._dsn)) if self._dsn is not None else "(PG* environment)"
        return f"<PostgresDriver {where} reset={self._reset_mode!r}>"


def from_url(url: str, **options: Any) -> PostgresDriver:
    """Make a ``PostgresDriver`` for a ``postgresql://`` or ``postgres://`` URL.

    The entry point ``create_pool`` uses; keyword ``options`` are ``PostgresDriver``'s.
    """
    return PostgresDriver(url, **options)


def _check_dsn(dsn: object) -> None:
    """Refuse a DSN asyncpg would reject only at the first connect, or would read differently
    from what was meant, with a message that quotes no password."""
    if not isinstance(dsn, str):
        raise TypeError(f"dsn must be a string, got {type(dsn).__name__}")
    check_userinfo(dsn)
    parts = urlsplit(dsn)
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"not a PostgreSQL URL: {redact_url(dsn)!r} (expected "
            "postgresql://user:password@host:port/database)"
        )
    if parts.fragment or dsn.endswith("#"):
        raise ValueError(
            f"the PostgreSQL URL {redact_url(dsn)!r} has a '#', which ends a URL: in a password "
            "or a parameter, percent-encode it as %23"
        )
    if parts.query and not _readable_query(parts.query):
        raise ValueError(
            f"the query of the PostgreSQL URL {redact_url(dsn)!r} has a part without "
            "'name=value' (an '&' in a value must be percent-encoded as %26)"
        )
    for name, values in parse_qs(parts.query).items():
        allowed = _CHOICES.get(name)
        if allowed is not None and values[-1] not in allowed:
            # (The value is not quoted: after an unencoded '&' in a password parameter, it
            # could be a piece of the password.)
            raise ValueError(
                f"{name} in the PostgreSQL URL must be one of {', '.join(sorted(allowed))}; "
                "asyncpg would refuse any other at the first connect"
            )
    # asyncpg accepts several hosts, for failover: postgresql://user@host1:5432,host2:5433/db
    for host_and_port in parts.netloc.rpartition("@")[2].split(","):
        _check_host(dsn, host_and_port)


_CHOICES: Final = {
    "sslmode": frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}),
    "target_session_attrs": frozenset(
        {"any", "primary", "standby", "read-write", "read-only", "prefer-standby"}
    ),
}
"""The parameters of a DSN's query that take one of a few words, and those words, as asyncpg
reads them (anything else fails only at the first connect)."""


def _readable_query(query: str) -> bool:
    """Whether asyncpg can read ``query``. (Its error quotes the part it cannot read, which
    may be a piece of a password, so even its ``__context__`` must not reach the caller.)"""
    try:
        parse_qs(query, strict_parsing=True)
    except ValueError:
        return False
    return True


def _check_host(dsn: str, host_and_port: str) -> None:
    """Refuse a bad port or a host with whitespace in one ``host[:port]`` of a DSN."""
    if host_and_port.startswith("["):  # an IPv6 address: [::1]:5432
        host, _, after = host_and_port[1:].partition("]")
        port = after.removeprefix(":")
    else:
        host, _, port = host_and_port.partition(":")
    if port and not (port.isdecimal() and 0 <= int(port) <= 65535):
        raise ValueError(
            f"the port in {redact_url(dsn)!r} is not a number between 0 and 65535: fix it, or "
            "leave it out to use the default port"
        )
    if any(char.isspace() for char in host):
        raise ValueError(
            f"the host in {redact_url(dsn)!r} contains whitespace, which no host name has: "
            "remove it"
        )


def _cancellation_pending(conn: asyncpg.Connection) -> bool:
    """Whether a cancelled statement still waits for the server's confirmation.

    asyncpg has no public way to ask; its own pool reads the same protocol flag. Should a later
    asyncpg drop it, the answer is "yes": every reset then rolls back, slower but still safe,
    and the test of the reset's fast path fails to say so.
    """
    is_cancelling = getattr(getattr(conn, "_protocol", None), "_is_cancelling", None)
    return True if is_cancelling is None else bool(is_cancelling())


_BUSY_RETRY_FIRST: Final = 0.001
_BUSY_RETRY_MAX: Final = 0.05
"""Seconds between attempts to roll back a connection still running a statement."""


async def _roll_back_when_idle(conn: asyncpg.Connection) -> None:
    """``ROLLBACK``, once no statement runs on ``conn`` any more.

    A statement may still run there when its borrower released the connection under it (from
    another task, or through a prepared statement or a transaction block, which the lease does
    not count). asyncpg has no public "busy" flag, but refuses a new statement at once, before
    sending anything, while one runs: so try, and wait a little between tries. The pool bounds
    the whole by ``reset_timeout`` and discards the connection past it. Without a transaction,
    the ``ROLLBACK`` changes nothing.
    """
    delay = _BUSY_RETRY_FIRST
    while True:
        try:
            await conn.execute("ROLLBACK")
            return
        except asyncpg.InterfaceError as error:
            if "another operation is in progress" not in str(error):
                raise
        await asyncio.sleep(delay)  # cancel: the reset timed out; the pool discards conn
        delay = min(delay * 2, _BUSY_RETRY_MAX)


def _transaction_under_way(conn: asyncpg.Connection) -> bool:
    """Whether a transaction block has begun (its ``BEGIN`` may still be on its way) and has
    not ended. asyncpg records it in the same attribute its own reset reads."""
    return getattr(conn, "_top_xact", None) is not None


def _forget_finished_transaction(conn: asyncpg.Connection) -> None:
    """Clear asyncpg's record of a ``Transaction`` its holder started and never finished.

    After our ``ROLLBACK`` the server has no transaction, but asyncpg would still treat the next
    ``conn.transaction()`` as nested and send a ``SAVEPOINT``, which fails outside a transaction.
    asyncpg's own reset clears the same attribute.
    """
    if getattr(conn, "_top_xact", None) is not None:
        conn._top_xact = None  # type: ignore[attr-defined]
