"""The PostgreSQL driver on psycopg 3: the pool lends ``psycopg.AsyncConnection`` objects, each
lend under a lease of its own. URL scheme ``postgresql+psycopg://``; extra ``psycopg``.

What it adds to psycopg:

* **Autocommit.** Connections are opened in autocommit mode, so a connection is inside a
  transaction only when its borrower began one (``BEGIN``, ``conn.transaction()``), and the
  usual release costs no round trip. (psycopg's default would begin a transaction at the first
  statement, even a ``SELECT``, and every release would then cost a ``ROLLBACK``.)
* **A lease per lend.** What ``pool.acquire()`` gives stands in for the connection:
  ``isinstance(conn, psycopg.AsyncConnection)`` holds and every method works, until the release.
  After it every method raises ``ReleasedConnectionError`` (also a ``psycopg.InterfaceError``)
  and sends nothing; so do the cursors and transaction blocks made through it, which reach the
  connection through the lease. What the borrower changed on the client side (``row_factory``,
  ``prepare_threshold``, ``set_autocommit``, ``set_isolation_level``, the notice and notify
  handlers, ...) is put back at the release, so the next borrower gets the connection as the
  pool made it. ``aiodbpool.raw_connection(conn)`` gives the ``psycopg.AsyncConnection`` itself.
* **Cleaning a returned connection.** libpq keeps the server's transaction status locally, so
  the reset returns without awaiting anything when the connection is clean, and rolls back only
  when a transaction was left open or failed. Session state (``SET``, ``LISTEN``, advisory
  locks) stays, as with the asyncpg driver's default reset.
* **A holder cancelled mid-query.** psycopg answers the cancellation of a task waiting for a
  statement by asking the server to cancel it and waiting for the statement to end before the
  ``CancelledError`` goes on; a statement still running from another task holds the
  connection's lock, which the reset waits for (bounded by the pool's ``reset_timeout``; past
  it the pool discards the connection). Either way the next borrower never meets a busy
  connection, nor a transaction it did not start. So the driver needs no ``interrupt``
  (``SupportsInterrupt``): like asyncpg, psycopg stops the statement on the server itself.

Everything else is psycopg's: libpq parameters pass through, in the URL or as keywords.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, ClassVar, Final, TypeAlias
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus as PQTransactionStatus

from aiodbpool import (
    ConnectionReleased,
    Lease,
    TransactionStatus,
    guarded_method,
    guarded_statement,
    raw_connection,
)
from aiodbpool.redaction import Password, Secrets, check_userinfo, redact_url, url_secrets

__all__ = ["Connection", "PsycopgDriver", "ReleasedConnectionError", "from_url"]

Connection: TypeAlias = psycopg.AsyncConnection[Any]
"""What the pool lends: a psycopg async connection (its rows are tuples unless a ``row_factory``
is given)."""


SCHEME: Final = "postgresql+psycopg"
"""The URL scheme ``create_pool`` maps to this driver."""

_SCHEMES: Final = (SCHEME, "postgresql", "postgres")

_SSLMODES: Final = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})

_CONNECTION_CLASS: Final[Any] = psycopg.AsyncConnection
"""psycopg's connection class, whose methods the lease calls with itself as the connection (so
that the cursors and transaction blocks they make reach the connection through the lease)."""

_IDLE: Final = PQTransactionStatus.IDLE
_INTRANS: Final = PQTransactionStatus.INTRANS
_INERROR: Final = PQTransactionStatus.INERROR


class ReleasedConnectionError(ConnectionReleased, psycopg.InterfaceError):
    """A lent connection was used after its release: both aiodbpool's ``ConnectionReleased`` and
    ``psycopg.InterfaceError``, psycopg's error for a connection that cannot be used."""


def _lend_local(name: str) -> property:
    """A lease property for a settable attribute of the connection (``row_factory``): it reads
    and sets the connection's attribute while the lease lasts, refuses after it, and puts the
    value back at the release, so the next borrower never inherits it."""

    def get(self: Lease[Connection]) -> Any:
        return getattr(self._live(), name)

    def set_(self: Lease[Connection], value: Any) -> None:
        conn = self._live()
        before = getattr(conn, name)
        setattr(conn, name, value)
        # Undone in reverse order: the value before the first change comes back last.
        self._undo_at_release(lambda conn: setattr(conn, name, before))

    return property(get, set_, doc=f"The connection's ``{name}``, for this lend only.")


class _CountedLock:
    """The connection's lock as a cursor or transaction block made through a lease takes it:
    every operation of theirs begins with ``async with conn.lock``, so entering refuses after
    the release, and the operation counts as running through the lease until it has ended (a
    release in the meantime waits for it before the reset)."""

    __slots__ = ("_lease", "_lock")

    def __init__(self, lease: Lease[Connection], lock: asyncio.Lock) -> None:
        self._lease = lease
        self._lock = lock

    async def __aenter__(self) -> None:
        self._lease._start()
        try:
            await self._lock.acquire()  # cancel: nothing taken; the statement stops counting
        except BaseException:
            self._lease._finish()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._lease._finish()

    def locked(self) -> bool:
        return self._lock.locked()


_LEASE_SLOTS: Final = frozenset(Lease.__slots__)


def _while_running(name: str) -> property:
    """A lease property for an attribute that psycopg's cursors and transaction blocks write on
    their connection (``_num_transactions``): usable while the lease lasts, and after its end by
    the statements still running through it, which the release waits for."""

    def get(self: _PsycopgLease) -> Any:
        if self._ending is not None and not self._statements:  # inlined _running_on: hot
            raise self._refusal()
        return getattr(self._leased, name)

    def set_(self: _PsycopgLease, value: Any) -> None:
        setattr(self._running_on(), name, value)

    return property(get, set_)


class _PsycopgLease(Lease[Connection]):
    """A ``psycopg.AsyncConnection`` as the pool lends it, for one borrower.

    Every public method of the connection is named here, so that a method fetched before the
    release still refuses after it; a test checks the list against psycopg's. Cursors and
    transaction blocks are made with the lease as their connection, so that they refuse after
    the release too.
    """

    __slots__ = ()

    released_error = ReleasedConnectionError

    # Round trips: counted as running while they run (see aiodbpool.Lease).
    close = guarded_statement("close")
    commit = guarded_statement("commit")
    rollback = guarded_statement("rollback")
    cancel_safe = guarded_statement("cancel_safe")
    tpc_begin = guarded_statement("tpc_begin")
    tpc_commit = guarded_statement("tpc_commit")
    tpc_prepare = guarded_statement("tpc_prepare")
    tpc_recover = guarded_statement("tpc_recover")
    tpc_rollback = guarded_statement("tpc_rollback")
    # Local calls, or objects that hold the connection itself (a pipeline block, the notifies
    # generator; both hold the connection's lock while they work, which the reset waits for).
    cancel = guarded_method("cancel")
    fileno = guarded_method("fileno")
    xid = guarded_method("xid")
    pipeline = guarded_method("pipeline")
    notifies = guarded_method("notifies")
    remove_notice_handler = guarded_method("remove_notice_handler")
    remove_notify_handler = guarded_method("remove_notify_handler")
    # Settable attributes: put back at the release.
    row_factory = _lend_local("row_factory")
    cursor_factory = _lend_local("cursor_factory")
    server_cursor_factory = _lend_local("server_cursor_factory")
    prepare_threshold = _lend_local("prepare_threshold")
    prepared_max = _lend_local("prepared_max")
    # Read-only on psycopg's async connections: setting one raises psycopg's own error, which
    # names the method to call instead (set_autocommit, ...).
    autocommit = _lend_local("autocommit")
    isolation_level = _lend_local("isolation_level")
    read_only = _lend_local("read_only")
    deferrable = _lend_local("deferrable")
    # What psycopg's cursors and transaction blocks, made through the lease, read (and write)
    # on their connection, 13 reads per statement: named here, so that each costs one property
    # call rather than a failed lookup and __getattr__. What the lease adds to a statement is
    # measured in docs/postgres.md (psycopg 3, "A lent connection").
    _num_transactions = _while_running("_num_transactions")
    pgconn = _while_running("pgconn")
    adapters = _while_running("adapters")
    _prepared = _while_running("_prepared")
    _pipeline = _while_running("_pipeline")
    _check_connection_ok = _while_running("_check_connection_ok")
    _start_query = _while_running("_start_query")

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        """``psycopg.AsyncConnection.wait``: what the cursors made through the lease call to
        run each statement (counted as running by ``lock``, which they hold meanwhile)."""
        if self._ending is not None and not self._statements:
            raise self._refusal()
        return self._leased.wait(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # A cursor or transaction block made through the lease reads the connection's
        # attributes as its statement goes on: let a statement begun during the lend finish,
        # even when the release came in the meantime (the pool waits for it before the reset,
        # so the connection is no one else's yet). Every new operation still refuses: it starts
        # with self.lock or a guarded method.
        if name in _LEASE_SLOTS:
            raise AttributeError(name)  # a half-made lease (no slot set yet): never forward
        if self._ending is None or self._statements:
            return getattr(self._leased, name)
        return super().__getattr__(name)

    def _running_on(self) -> Connection:
        """The connection, while the lease lasts or a statement begun during it still runs."""
        if self._ending is not None and self._statements:
            return self._leased
        return self._live()

    @property
    def lock(self) -> _CountedLock:
        """The connection's lock, taken by every operation of the cursors and transaction
        blocks made through the lease: refuses after the release, and counts the operation as
        running while it holds the lock."""
        return _CountedLock(self, self._live().lock)

    @property
    def connection(self) -> Connection:
        """psycopg's ``connection`` property (the connection itself): here, the lease."""
        self._live()
        return self  # type: ignore[return-value]

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """``psycopg.AsyncConnection.cursor``, with the lease as the cursor's connection: every
        statement it sends after the release is refused."""
        self._live()
        return _CONNECTION_CLASS.cursor(self, *args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        """``psycopg.AsyncConnection.execute``, counted as running; the cursor it returns has
        the lease as its connection."""
        self._start()
        try:
            return await _CONNECTION_CLASS.execute(self, *args, **kwargs)
        finally:
            self._finish()

    def transaction(self, *args: Any, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
        """``psycopg.AsyncConnection.transaction``: a block that begins a transaction (or a
        savepoint inside one) through the lease, so that it refuses to end after the release."""
        self._live()
        transaction: AbstractAsyncContextManager[Any]
        transaction = _CONNECTION_CLASS.transaction(self, *args, **kwargs)
        return transaction

    async def set_autocommit(self, value: bool) -> None:
        """``psycopg.AsyncConnection.set_autocommit``, for this lend only."""
        await self._set_option("autocommit", value)

    async def set_isolation_level(self, value: Any) -> None:
        """``psycopg.AsyncConnection.set_isolation_level``, for this lend only."""
        await self._set_option("isolation_level", value)

    async def set_read_only(self, value: bool | None) -> None:
        """``psycopg.AsyncConnection.set_read_only``, for this lend only."""
        await self._set_option("read_only", value)

    async def set_deferrable(self, value: bool | None) -> None:
        """``psycopg.AsyncConnection.set_deferrable``, for this lend only."""
        await self._set_option("deferrable", value)

    def add_notice_handler(self, callback: Callable[..., Any]) -> None:
        """``psycopg.AsyncConnection.add_notice_handler``, for this lend only."""
        self._live().add_notice_handler(callback)
        self._undo_at_release(lambda conn: conn.remove_notice_handler(callback))

    def add_notify_handler(self, callback: Callable[..., Any]) -> None:
        """``psycopg.AsyncConnection.add_notify_handler``, for this lend only (a ``LISTEN``
        sent as SQL stays: it is session state)."""
        self._live().add_notify_handler(callback)
        self._undo_at_release(lambda conn: conn.remove_notify_handler(callback))

    async def _set_option(self, name: str, value: Any) -> None:
        conn = self._start()
        try:
            before = getattr(conn, name)
            await getattr(conn, f"set_{name}")(value)
        finally:
            self._finish()
        if before != value:
            self._undo_at_release(partial(_restore_option, name, before))


async def _restore_option(name: str, value: Any, conn: Connection) -> None:
    """Put back a transaction option a borrower changed (psycopg accepts the change only outside
    a transaction, so roll back first if one is left)."""
    await _roll_back(conn)
    await getattr(conn, f"set_{name}")(value)


class PsycopgDriver:
    """Open, check and clean psycopg 3 connections for an ``aiodbpool.Pool``.

    Arguments:

    ``url``
        A ``postgresql+psycopg://`` (or ``postgresql://``, ``postgres://``) URL, with libpq
        parameters in its query, such as ``?sslmode=require``. ``None`` leaves everything to the
        keywords below and the ``PG*`` environment variables.
    ``password``
        The password, overriding one in the URL; or a callable (sync or async) returning it,
        called at every connect (rotating credentials such as cloud IAM tokens).
    ``init``
        ``async def init(conn)``, run on each new connection before the pool first hands it
        out: register types, ``SET search_path``. If it raises, the connection is closed and
        the connect fails. It must not leave a transaction open (the pool refuses such a
        connection).
    ``prepare_threshold``
        psycopg's: how many times a query runs before psycopg prepares it on the server (5 by
        default). ``None`` never prepares: needed behind PgBouncer in transaction mode before
        PgBouncer 1.21 (or without its ``max_prepared_statements``).
    ``row_factory``
        psycopg's row factory for every connection (``psycopg.rows.dict_row``, ...).
    ``**params``
        libpq connection parameters, overriding the URL's: ``application_name``, ``sslmode``,
        ``options``, ``keepalives``, ... An unknown parameter raises ``ValueError`` here, not
        at the first connect.
    """

    lease_class: ClassVar[type[Lease[Connection]]] = _PsycopgLease
    """What a pool lends: a guarded stand-in for the connection (see the module docstring)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        password: Password | None = None,
        init: Callable[[Connection], Awaitable[None]] | None = None,
        prepare_threshold: int | None = 5,
        row_factory: Any = None,
        **params: Any,
    ) -> None:
        if init is not None and not callable(init):
            raise TypeError(f"init must be an async function, got {type(init).__name__}")
        if prepare_threshold is not None and not isinstance(prepare_threshold, int):
            raise TypeError(
                "prepare_threshold must be an int, or None to never prepare statements, got "
                f"{type(prepare_threshold).__name__}"
            )
        # What no error leaving connect() may quote: the URL's passwords, the password given,
        # and the last values a password function returned (set_connect_args adds new ones).
        self._secrets = Secrets(())
        self._url: str | None = None
        self._password: Password | None = None
        self._conninfo = ""
        self._init = init
        self._prepare_threshold = prepare_threshold
        self._row_factory = row_factory
        self.set_connect_args(url, password=password, **params)

    def set_connect_args(
        self, url: str | None = None, *, password: Password | None = None, **params: Any
    ) -> None:
        """Replace the URL, the password and the libpq parameters for the connects from now
        on (``init``, ``prepare_threshold`` and ``row_factory`` stay). Checked like the
        constructor's, before anything changes. Connections already open keep what they were
        opened with: call the pool's ``expire()`` to replace them as they come back."""
        if url is not None:
            _check_url(url)
        if "autocommit" in params:
            raise TypeError(
                "the psycopg driver always opens connections in autocommit mode, so that a "
                "clean connection is released without a round trip: remove autocommit=, and "
                "begin transactions with conn.transaction() (or BEGIN)"
            )
        if password is not None and not (isinstance(password, str) or callable(password)):
            raise TypeError(
                "password must be a string or a function returning one, "
                f"got {type(password).__name__}"
            )
        if url is not None:
            for secret in url_secrets(url):
                self._secrets.add(secret)
        if isinstance(password, str):
            self._secrets.add(password)
        for secret in ("password", "sslpassword"):  # libpq parameters given as keywords
            if isinstance(params.get(secret), str):
                self._secrets.add(params[secret])
        conninfo = self._conninfo_of(url, params)  # (refuses a bad parameter before any change)
        self._url = url
        self._password = password
        self._conninfo = conninfo

    def _conninfo_of(self, url: str | None, params: dict[str, Any]) -> str:
        """The libpq connection string of ``url`` and ``params``: parsed now, so that a
        mistake fails where the pool is made, and with no password in the message."""
        where = repr(redact_url(url)) if url is not None else "the driver's parameters"
        try:
            parsed = conninfo_to_dict("postgresql://" + url.partition("://")[2] if url else "")
            parsed.update(params)
            conninfo = make_conninfo("", **parsed)
            error = None
        except psycopg.Error as caught:
            conninfo = ""
            error = self._secrets.scrub(str(caught).strip())
        if error is not None:  # raised outside the except block: nothing quoting it is chained
            raise ValueError(f"invalid PostgreSQL connection parameters in {where}: {error}")
        sslmode = parsed.get("sslmode")
        if sslmode is not None and sslmode not in _SSLMODES:
            # (The value is not quoted: after an unencoded '&' in a password parameter, it
            # could be a piece of the password.)
            raise ValueError(
                f"the sslmode in {where} is not one of libpq's modes: use one of "
                f"{', '.join(sorted(_SSLMODES))}"
            )
        return conninfo

    async def connect(self) -> Connection:
        """Open a connection in autocommit mode and run the ``init`` callback on it.

        An error that quotes the password (or a piece of it) is scrubbed before it leaves
        (``aiodbpool.redaction.Secrets.scrub_error``).
        """
        try:
            return await self._connect()
        except Exception as error:
            failure = self._secrets.scrub_error(error)
            if failure is error:
                raise
        # Raised outside the except block, so the original is not chained as the context.
        raise failure

    async def _connect(self) -> Connection:
        options: dict[str, Any] = {}
        password = await self._secrets.password_for_connect(self._password)
        if password is not None:
            options["password"] = password
        if self._row_factory is not None:
            options["row_factory"] = self._row_factory
        conn: Connection = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, prepare_threshold=self._prepare_threshold, **options
        )
        if self._init is not None:
            try:
                await self._init(conn)
            except BaseException:
                # Half set-up: never let it reach a user. Closing the socket needs no round
                # trip, so a cancelled connect cannot leave it open either.
                conn.pgconn.finish()
                raise
        return conn

    async def close(self, conn: Connection) -> None:
        """Close: tell the server goodbye and close the socket. Nothing on a closed one."""
        await conn.close()

    async def ping(self, conn: Connection) -> None:
        """One round trip: ``SELECT 1``."""
        await conn.execute("SELECT 1")

    async def reset(self, conn: Connection) -> None:
        """Make ``conn`` clean for its next user, or raise so the pool discards it.

        Nothing is awaited when no statement runs on the connection and no transaction is open:
        the status comes from libpq's local copy of the server's. Otherwise wait for the
        running operation to end (it holds the connection's lock) and ``ROLLBACK``. A connection
        that is closed, broken, or still running a statement that nothing waits for raises.
        """
        if (
            conn.pgconn.transaction_status == _IDLE
            and not conn.lock.locked()
            and not getattr(conn, "_num_transactions", 0)
        ):
            return
        await _roll_back(conn)

    def is_closed(self, conn: Connection) -> bool:
        """psycopg's ``closed``: libpq's connection status, no I/O. It turns ``True`` once an
        operation found the server gone; ``ping`` finds out before that."""
        closed: bool = conn.closed
        return closed

    def terminate(self, conn: Connection) -> None:
        """Close the connection at once, waiting for no answer; a statement still waiting on it
        fails at once with ``psycopg.OperationalError``.

        The socket is shut down first, which wakes a task waiting on it and ends the session on
        the server. libpq's ``PQfinish``, which closes the socket, comes once no operation holds
        the connection any more: closing the socket under a task still registered with the
        event loop for it could make that task's clean-up unregister the next socket that gets
        the same number.
        """
        _shut_down_socket(conn)
        if not conn.lock.locked():
            conn.pgconn.finish()
            return
        try:
            finishing = asyncio.get_running_loop().create_task(_finish_when_free(conn))
        except RuntimeError:  # no event loop: nothing can be waiting on the socket
            conn.pgconn.finish()
            return
        _FINISHING.add(finishing)
        finishing.add_done_callback(_FINISHING.discard)

    def transaction(self, conn: Connection) -> AbstractAsyncContextManager[object]:
        """psycopg's transaction block: ``BEGIN``, then ``COMMIT``, or ``ROLLBACK`` if the block
        raises (a savepoint inside a transaction already open). Made through a lent connection,
        it refuses to act after the release."""
        return conn.transaction()

    def transaction_status(self, conn: Connection) -> TransactionStatus:
        """``"idle"``, ``"in_transaction"`` or ``"failed"``, from libpq's local status."""
        status = raw_connection(conn).pgconn.transaction_status
        if status == _IDLE:
            return "idle"
        return "failed" if status == _INERROR else "in_transaction"

    def __repr__(self) -> str:
        where = repr(redact_url(self._url)) if self._url is not None else "(PG* environment)"
        return f"<PsycopgDriver {where}>"


def from_url(url: str, **options: Any) -> PsycopgDriver:
    """Make a ``PsycopgDriver`` for a ``postgresql+psycopg://`` URL.

    The entry point ``create_pool`` uses; keyword ``options`` are ``PsycopgDriver``'s.
    """
    return PsycopgDriver(url, **options)


_FINISHING: Final[set[asyncio.Task[None]]] = set()
"""The tasks that close terminated connections once their last operation has let go (kept
here so that they are not garbage-collected before they end)."""

_FINISH_WAIT: Final = 10.0
"""Seconds a terminated connection's socket waits for the operation holding it to end."""


def _shut_down_socket(conn: Connection) -> None:
    """Shut the connection's socket down (both ways) without closing it: a task waiting on it
    wakes up and fails, and the server ends the session. Never blocks, never raises."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # closed already
    try:
        # fromfd duplicates the descriptor: closing the copy leaves libpq's own open.
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as copy:
            copy.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected any more: nothing to wake


async def _finish_when_free(conn: Connection) -> None:
    """Close a terminated connection's socket once no operation holds the connection."""
    try:
        async with asyncio.timeout(_FINISH_WAIT), conn.lock:
            pass  # cancel: the socket is closed all the same, below
    except TimeoutError:
        pass  # the operation never let go: close the socket under it after all
    finally:
        conn.pgconn.finish()


async def _roll_back(conn: Connection) -> None:
    """``ROLLBACK`` once no operation runs on ``conn``; raise if it cannot be made clean."""
    if conn.lock.locked():
        # A statement, a transaction block or a notifies() loop from the last lend still runs
        # (released from another task). cancel: the reset timed out; the pool discards conn.
        async with conn.lock:
            pass
    status = conn.pgconn.transaction_status
    if status not in (_IDLE, _INTRANS, _INERROR):
        # ACTIVE: a statement that nobody waits for; UNKNOWN: closed or broken.
        raise psycopg.InterfaceError(
            f"cannot reuse a connection in state {PQTransactionStatus(status).name}"
        )
    # A transaction block entered and never exited (its holder released the connection inside
    # it): psycopg refuses rollback() while it counts one. Our ROLLBACK ends it on the server,
    # so forget it, as psycopg does when a block exits.
    if getattr(conn, "_num_transactions", 0):
        conn._num_transactions = 0
    if status != _IDLE:
        await conn.rollback()  # cancel: the reset timed out; the pool discards conn


def _check_url(url: object) -> None:
    """Refuse a URL that libpq would reject only at the first connect, or would read
    differently from what was meant, with a message that quotes no password."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}")
    check_userinfo(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(
            f"not a PostgreSQL URL: {redact_url(url)!r} (expected "
            "postgresql+psycopg://user:password@host:port/database)"
        )
    if parts.fragment or url.endswith("#"):
        raise ValueError(
            f"the PostgreSQL URL {redact_url(url)!r} has a '#', which ends a URL: in a password "
            "or a parameter, percent-encode it as %23"
        )
    if parts.query:
        try:
            parse_qs(parts.query, strict_parsing=True)
        except ValueError:
            error = True
        else:
            error = False
        if error:
            raise ValueError(
                f"the query of the PostgreSQL URL {redact_url(url)!r} has a part without "
                "'name=value' (an '&' in a value must be percent-encoded as %26)"
            )
    # libpq accepts several hosts, for failover: postgresql://user@host1:5432,host2:5433/db
    for host_and_port in parts.netloc.rpartition("@")[2].split(","):
        if host_and_port.startswith("["):  # an IPv6 address: [::1]:5432
            _, _, after = host_and_port[1:].partition("]")
            port = after.removeprefix(":")
        else:
            _, _, port = host_and_port.partition(":")
        if port and not (port.isdecimal() and 0 <= int(port) <= 65535):
            raise ValueError(
                f"the port in {redact_url(url)!r} is not a number between 0 and 65535: fix it, "
                "or leave it out to use the default port"
            )
