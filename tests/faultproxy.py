"""A TCP proxy for tests that puts a misbehaving network between a client and a real server.

The pool's reliability tests need the failures a network produces, not only the ones a server
produces: a link that gets slow, a link that goes silent without closing, a connection reset in
the middle of a query, a port that refuses connections. :class:`FaultProxy` listens on
``127.0.0.1``, forwards every connection to its target, and lets the test switch faults on and
off while connections are open::

    async with FaultProxy(postgres_server.host, postgres_server.port) as proxy:
        conn = await asyncpg.connect(proxy.dsn_for(postgres_server.dsn))
        proxy.add_latency(0.1)  # every byte now takes 0.1 s longer, each way
        proxy.stall()  # nothing gets through; connections stay open
        proxy.heal()  # what was held is delivered, late but whole
        proxy.cut()  # every open connection is reset, on both sides
        proxy.refuse()  # new connections are refused, open ones carry on
        proxy.heal()

In a test, the ``fault_proxy`` fixture of ``conftest.py`` gives a started proxy in front of
``postgres_server``, and stops it after the test::

    async def test_the_pool_recovers_from_a_cut(
        fault_proxy: FaultProxy, postgres_server: PostgresServer
    ) -> None:
        async with create_pool(fault_proxy.dsn_for(postgres_server.dsn)) as pool:
            ...
            fault_proxy.cut()
            ...

The faults
----------
The controls are plain methods, not coroutines: a fault is on when the method returns, for the
connections already open and for new ones. They are meant for the event loop's own thread.

``add_latency(seconds, direction=...)`` / ``clear_latency()``
    Each chunk of bytes is delivered ``seconds`` after it arrived at the proxy, in one direction
    or both, like a longer cable: chunks still flow one after another, they are not spaced out.
    A new value applies to bytes already waiting, too.
``stall()``
    A black hole. The proxy keeps accepting connections and keeps open ones open, and goes on
    reading from both sides, but delivers nothing: bytes, the end of a stream and resets are all
    held (in memory, without a limit: this is for test traffic). A connection accepted during a
    stall reaches the target only when the stall ends.
``heal()``
    Every fault off: no stall, no refusal, no latency. What a stall held is then delivered, in
    order, as TCP would after a network hiccup: the connections survive and the query that was
    stuck completes. For a black hole that ends in a broken connection instead, call ``cut()``:
    it drops what is held.
``cut()``
    Resets every open connection, both towards the client and towards the server: ``SO_LINGER``
    with a zero timeout makes the close send a TCP RST, so each side sees "connection reset"
    rather than an orderly end. A cut is an event, not a state: the next connection goes through
    (unless another fault is on). ``refuse()`` and then ``cut()`` is a server that went away.
``refuse()``
    A real refusal: the proxy closes its listening socket, so a client's connect fails at once
    with ``ConnectionRefusedError`` (the kernel answers the SYN with a reset); connections already
    open carry on. ``heal()`` listens again on the same port, so DSNs stay valid.
    ``refuse(after_accept=True)`` keeps listening and closes each new connection as soon as it
    is accepted, as a load balancer with no healthy backend does: the client connects, then sees
    its connection end before the server said anything, an error of another kind.

What the proxy saw
------------------
``connections_open`` and ``connections_total`` count proxied connections (a connection
refused by the kernel never reaches the proxy; one closed by ``refuse(after_accept=True)`` counts
in ``connections_refused``). ``bytes_to_server`` and ``bytes_to_client`` count bytes delivered;
``bytes_held`` counts bytes read and not yet delivered, which is how a test knows that its query
is stuck in a stall rather than not yet sent.

How it works
------------
Each proxied connection (a ``_Link``) is one task, which owns two ``_Pipe`` objects, one per
direction, and runs four child tasks in a task group: for each pipe, one reads from its sender
and holds what it read, the other delivers held chunks to its receiver when the faults allow.
Holding every chunk, even when no fault is on, means one path for all cases, and a new fault
applies at once to bytes already in the proxy. :meth:`FaultProxy.stop` cuts every connection
and waits for every task to end.

Only the proxy's port is on the loopback address; the target may be anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import math
import socket
import struct
import time
from collections import deque
from types import TracebackType
from typing import Literal, TypeAlias
from urllib.parse import parse_qs, urlsplit, urlunsplit

__all__ = ["LOOPBACK", "Direction", "FaultProxy"]

LOOPBACK = "127.0.0.1"
"""The address the proxy listens on: only this machine can reach it."""

Direction: TypeAlias = Literal["to_server", "to_client", "both"]
"""Which way bytes travel: from the client to the target, back, or both ways."""

_OneWay: TypeAlias = Literal["to_server", "to_client"]

_CHUNK_SIZE = 64 * 1024
"""Bytes read from a socket at a time."""

_ACCEPTS_PER_WAKE = 64
"""Connections accepted in one go before the event loop gets a turn."""

_RESET_ON_CLOSE = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on, with a timeout of 0: closing the socket sends RST instead of FIN."""


class _End(enum.Enum):
    """How a direction's byte stream ended; held after its last bytes and delivered in turn."""

    EOF = "eof"
    """The sender closed its side in order (FIN): the receiver's side is closed for writing."""

    RESET = "reset"
    """The sender's connection broke: the whole connection is reset, on both sides."""


def _reset_when_closed(transport: asyncio.BaseTransport) -> None:
    """Make the next close of ``transport``'s socket send RST, when it still has a socket."""
    if transport.is_closing():  # closed or aborted already (uvloop has no socket left then)
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)


class FaultProxy:
    """A TCP proxy on ``127.0.0.1`` in front of ``target_host:target_port``, with faults the test
    switches on and off (see the module's documentation).

    ``await proxy.start()`` listens on a free port (:attr:`port`); ``await proxy.stop()`` resets
    every connection and returns once every task of the proxy has ended. ``async with`` does both.
    A proxy runs once: it cannot be started again after :meth:`stop`.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        # The loop the proxy runs in, from start() on; None before.
        self._loop: asyncio.AbstractEventLoop | None = None
        # True once stop() began: nothing is accepted any more and heal() does not listen again.
        self._stopped = False
        # The listening socket; None while refusing for real, before start() and after stop().
        self._listener: socket.socket | None = None
        # The port, chosen by the kernel at start() and kept across refuse() and heal().
        self._port = 0
        # The faults that are on. _refusal: None, or how new connections are refused.
        self._stalled = False
        self._refusal: Literal["refuse", "accept_then_close"] | None = None
        self._latency: dict[_OneWay, float] = {"to_server": 0.0, "to_client": 0.0}
        # The connections being forwarded: accepted and neither closed nor cut.
        self._links: set[_Link] = set()
        # Every task of the proxy that has not finished, cut connections' included; stop() waits
        # for all of them.
        self._tasks: set[asyncio.Task[None]] = set()
        # Unexpected errors of connection tasks (a bug in the proxy), raised by stop().
        self._failures: list[Exception] = []
        # Counters, changed only by _accept_ready() and _count_delivered().
        self._connections_total = 0
        self._connections_refused = 0
        self._delivered: dict[_OneWay, int] = {"to_server": 0, "to_client": 0}

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a free port of ``127.0.0.1`` and forward what connects.

        Nothing is awaited, but the proxy must be started from the event loop it will run in.
        """
        if self._loop is not None or self._stopped:
            raise RuntimeError("a FaultProxy is started once")
        self._loop = asyncio.get_running_loop()
        self._listen()
        if self._refusal == "refuse":  # refuse() was called before start()
            self._stop_listening()

    async def stop(self) -> None:
        """Stop listening, reset every connection, and wait until every task has ended.

        Raises an :class:`ExceptionGroup` if a connection's task failed with an unexpected
        error along the way (that is a bug in the proxy). Calling it again does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stop_listening()
        self.cut()
        while self._tasks:
            # Each task leaves the set when it ends (_link_ended).
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failures:
            raise ExceptionGroup("FaultProxy connections failed", self._failures)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- where to connect ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the proxy listens on: always ``127.0.0.1``."""
        return LOOPBACK

    @property
    def port(self) -> int:
        """The port the proxy listens on (also while it refuses connections)."""
        if self._loop is None:
            raise RuntimeError("the FaultProxy has not been started")
        return self._port

    def dsn_for(self, dsn: str) -> str:
        """``dsn``, a URL such as ``postgresql://user:password@host:5432/db?sslmode=disable``,
        with its host and port replaced by the proxy's; user, password, database and options
        are kept.

        The proxy forwards to its own target whatever host the DSN named. A DSN that gives the
        host in its options (``?host=/run/postgresql``) cannot be rewritten and raises
        :class:`ValueError`.
        """
        parts = urlsplit(dsn)
        if {"host", "hostaddr", "port"} & parse_qs(parts.query).keys():
            raise ValueError(f"the DSN sets its host or port in its options: {dsn!r}")
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"not a URL with a host: {dsn!r}")
        credentials, at, _ = parts.netloc.rpartition("@")
        netloc = f"{credentials}{at}{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # --- faults ----------------------------------------------------------------------------------

    def add_latency(self, seconds: float, *, direction: Direction = "both") -> None:
        """Deliver each chunk ``seconds`` after it arrived, towards the server, the client, or
        both (a round trip then takes ``2 * seconds`` longer).

        The value replaces the latency set before for that direction; it applies at once, also to
        bytes already waiting in the proxy.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"latency must be a number of seconds >= 0, not {seconds!r}")
        directions: tuple[_OneWay, ...] = (
            ("to_server", "to_client") if direction == "both" else (direction,)
        )
        for one_way in directions:
            self._latency[one_way] = seconds
        self._wake_links()

    def clear_latency(self) -> None:
        """No latency in either direction; bytes waiting for theirs are delivered now."""
        self._latency = {"to_server": 0.0, "to_client": 0.0}
        self._wake_links()

    def stall(self) -> None:
        """Deliver nothing in either direction, on open and new connections, until :meth:`heal`
        (which delivers what was held) or :meth:`cut` (which drops it)."""
        self._stalled = True
        self._wake_links()

    def cut(self) -> int:
        """Reset every open connection, on both sides (TCP RST), dropping what the proxy holds
        for it; return how many there were. New connections are forwarded as before."""
        links, self._links = self._links, set()
        for link in links:
            link.cut()
        return len(links)

    def refuse(self, *, after_accept: bool = False) -> None:
        """Refuse new connections until :meth:`heal`; open ones carry on.

        By default the listening socket is closed, so a connect fails with
        ``ConnectionRefusedError``. With ``after_accept=True`` the proxy goes on listening and
        closes each connection as soon as it has accepted it.
        """
        self._refusal = "accept_then_close" if after_accept else "refuse"
        if after_accept:
            if self._can_listen():
                self._listen()
        else:
            self._stop_listening()

    def heal(self) -> None:
        """Every fault off: forward normally, with no latency, listening again after a refusal.

        Bytes held by a stall are delivered, in order. Raises :class:`OSError` if the port was
        taken by someone else while the proxy was refusing connections.
        """
        if self._can_listen():
            self._listen()
        self._refusal = None
        self._stalled = False
        self._latency = {"to_server": 0.0, "to_client": 0.0}
        self._wake_links()

    @property
    def stalled(self) -> bool:
        """Whether :meth:`stall` is on."""
        return self._stalled

    @property
    def refusing(self) -> bool:
        """Whether :meth:`refuse` is on, in either form."""
        return self._refusal is not None

    # --- what happened ---------------------------------------------------------------------------

    @property
    def connections_open(self) -> int:
        """Connections being forwarded now: accepted, and neither closed nor cut."""
        return len(self._links)

    @property
    def connections_total(self) -> int:
        """Connections accepted for forwarding since :meth:`start`."""
        return self._connections_total

    @property
    def connections_refused(self) -> int:
        """Connections accepted and closed at once by ``refuse(after_accept=True)``."""
        return self._connections_refused

    @property
    def bytes_to_server(self) -> int:
        """Bytes delivered to the target, over all connections."""
        return self._delivered["to_server"]

    @property
    def bytes_to_client(self) -> int:
        """Bytes delivered to clients, over all connections."""
        return self._delivered["to_client"]

    @property
    def bytes_held(self) -> int:
        """Bytes read from either side and not yet delivered (by a stall or a latency)."""
        return sum(link.bytes_held for link in self._links)

    def __repr__(self) -> str:
        listening = f"{self.host}:{self._port}" if self._loop is not None else "not started"
        faults = [
            *(["stalled"] if self._stalled else []),
            *(["refusing"] if self._refusal == "refuse" else []),
            *(["closing-new-connections"] if self._refusal == "accept_then_close" else []),
            *(
                [f"latency={self._latency['to_server']}s/{self._latency['to_client']}s"]
                if any(self._latency.values())
                else []
            ),
            *(["stopped"] if self._stopped else []),
        ]
        return (
            f"<FaultProxy {listening} -> {self.target_host}:{self.target_port}"
            f" open={self.connections_open} total={self._connections_total}"
            f"{''.join(' ' + fault for fault in faults)}>"
        )

    # --- for the connections ---------------------------------------------------------------------

    def latency(self, direction: Literal["to_server", "to_client"]) -> float:
        """The latency of one direction now, in seconds."""
        return self._latency[direction]

    def _count_delivered(self, direction: _OneWay, size: int) -> None:
        self._delivered[direction] += size

    def _wake_links(self) -> None:
        """Tell every connection that the faults changed, so that waiting bytes are looked at
        again."""
        for link in self._links:
            link.wake()

    # --- listening -------------------------------------------------------------------------------

    def _can_listen(self) -> bool:
        """Started, not stopped, and not listening already."""
        return self._loop is not None and not self._stopped and self._listener is None

    def _listen(self) -> None:
        """Open the listening socket, on the port of before if there was one, and accept from it.

        The socket is bound and listening when this returns: from then on a connect succeeds,
        even before the event loop gets to accept it.
        """
        assert self._loop is not None
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Lets heal() bind the port again while connections accepted on it are still open.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, self._port))
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._port = listener.getsockname()[1]
        self._listener = listener
        # A reader callback rather than asyncio.start_server: listening starts and stops in plain
        # methods (refuse() and heal() are not coroutines), and no task of the loop's own is left
        # accepting a connection after stop().
        self._loop.add_reader(listener.fileno(), self._accept_ready)

    def _stop_listening(self) -> None:
        """Close the listening socket: from now on, connects to the port are refused."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        assert self._loop is not None
        # Unregistered before it is closed, so that the loop never watches a reused descriptor.
        self._loop.remove_reader(listener.fileno())
        listener.close()

    def _accept_ready(self) -> None:
        """Accept the connections waiting on the listening socket; start forwarding each."""
        assert self._loop is not None
        for _ in range(_ACCEPTS_PER_WAKE):
            if self._listener is None:
                return
            try:
                client, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the client gave up already, or no file descriptor is left
                return  # the loop calls again while connections wait
            if self._refusal is not None:
                self._connections_refused += 1
                client.close()
                continue
            self._connections_total += 1
            number = self._connections_total
            link = _Link(self, client, number)
            task = self._loop.create_task(link.run(), name=f"faultproxy[{self._port}] #{number}")
            link.task = task
            self._links.add(link)
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._link_ended, link))

    def _link_ended(self, link: _Link, task: asyncio.Task[None]) -> None:
        self._links.discard(link)
        self._tasks.discard(task)
        # A task cancelled before its first step never ran the code that hands the socket over.
        link.close_unused_socket()
        if not task.cancelled() and (error := task.exception()) is not None:
            assert isinstance(error, Exception)
            self._failures.append(error)


class _Pipe:
    """One direction of one connection: what was read from the sender and not yet delivered.

    :meth:`read_from` holds each chunk with the moment it arrived; :meth:`deliver_to` delivers
    the oldest one once it is due (``arrived + latency``, and not while stalled). The stream's end
    is held after its last chunk, so it keeps its place in line.
    """

    def __init__(self, proxy: FaultProxy, direction: _OneWay) -> None:
        self._proxy = proxy
        self._direction = direction
        # Oldest first: (time.monotonic() when it arrived, bytes or how the stream ended).
        self._held: deque[tuple[float, bytes | _End]] = deque()
        # Set when a chunk arrives or the faults change: the delivery looks at the line again.
        self._changed = asyncio.Event()

    @property
    def bytes_held(self) -> int:
        return sum(len(item) for _, item in self._held if isinstance(item, bytes))

    def wake(self) -> None:
        self._changed.set()

    def _hold(self, item: bytes | _End) -> None:
        # time.monotonic() rather than loop.time(): uvloop's clock is cached per loop iteration,
        # with millisecond steps, and a latency must never come out shorter than asked.
        self._held.append((time.monotonic(), item))
        self._changed.set()

    async def read_from(self, reader: asyncio.StreamReader) -> None:
        """Read from the sender until its stream ends; hold everything, the end included."""
        while True:
            try:
                data = await reader.read(_CHUNK_SIZE)
            except OSError:  # the connection was reset, or broke
                self._hold(_End.RESET)
                return
            if not data:
                self._hold(_End.EOF)
                return
            self._hold(data)

    async def deliver_to(self, writer: asyncio.StreamWriter) -> _End:
        """Deliver held chunks to the receiver until the stream's end, or until the receiver is
        gone. Returns :attr:`_End.RESET` when the sender's connection broke (the caller resets
        the whole connection), :attr:`_End.EOF` otherwise."""
        while True:
            item = await self._next_due()
            if writer.transport.is_closing():
                # The receiver's own connection ended; its reader passes that on the other way.
                return _End.EOF
            if item is _End.RESET:
                return _End.RESET
            if item is _End.EOF:
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return _End.EOF
            writer.write(item)
            self._proxy._count_delivered(self._direction, len(item))
            try:
                await writer.drain()
            except OSError:
                return _End.EOF

    async def _next_due(self) -> bytes | _End:
        """Wait until the oldest held item may be delivered, and take it."""
        while True:
            self._changed.clear()
            wait: float | None = None  # None: until something changes
            if self._held and not self._proxy.stalled:
                arrived, item = self._held[0]
                wait = arrived + self._proxy.latency(self._direction) - time.monotonic()
                if wait <= 0:
                    self._held.popleft()
                    return item
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()


class _Link:
    """One proxied connection: the client's socket, the connection to the target once made,
    and a pipe each way. :meth:`run` is the connection's task; :meth:`cut` resets it."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, number: int) -> None:
        self._proxy = proxy
        self._number = number
        # The accepted socket, until the transport made of it owns it (then None). asyncio and
        # uvloop both use this very socket object in the transport, and close it.
        self._client_socket: socket.socket | None = client
        # The streams on each side, once open.
        self._client: asyncio.StreamWriter | None = None
        self._server: asyncio.StreamWriter | None = None
        self._to_server = _Pipe(proxy, "to_server")
        self._to_client = _Pipe(proxy, "to_client")
        # Set when the faults change, for the wait to reach the target during a stall.
        self._changed = asyncio.Event()
        # Whether the connection ends with a reset (RST on both sides) instead of a close.
        self._reset = False
        # This connection's task, set by the proxy right after creating it.
        self.task: asyncio.Task[None] | None = None

    @property
    def bytes_held(self) -> int:
        return self._to_server.bytes_held + self._to_client.bytes_held

    def wake(self) -> None:
        self._changed.set()
        self._to_server.wake()
        self._to_client.wake()

    def cut(self) -> None:
        """Reset both sides now, and end the task (whose clean-up waits for the sockets to
        close)."""
        self._reset = True
        if self._client_socket is not None:  # not wrapped in a transport yet, or being wrapped
            with contextlib.suppress(OSError):
                self._client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        for writer in (self._client, self._server):
            if writer is not None:
                _reset_when_closed(writer.transport)
                writer.transport.abort()
        if self.task is not None:
            self.task.cancel()

    def close_unused_socket(self) -> None:
        """Close the accepted socket if the task ended before a transport owned it (closing a
        socket twice is harmless)."""
        if self._client_socket is not None:
            self._client_socket.close()
            self._client_socket = None

    async def run(self) -> None:
        try:
            await self._forward()
        finally:
            await self._close()

    async def _forward(self) -> None:
        assert self._client_socket is not None
        try:
            client_reader, self._client = await asyncio.open_connection(sock=self._client_socket)
        except OSError:  # the client is gone already
            return
        # The transport owns the socket now, and closes it.
        self._client_socket = None
        name = f"faultproxy[{self._proxy.port}] #{self._number}"
        async with asyncio.TaskGroup() as group:
            # The client's first bytes are read (and held) while the target is not reached yet.
            reading_client = group.create_task(
                self._to_server.read_from(client_reader), name=f"{name} read client"
            )
            # A stall holds the connection itself, too: the target sees it only at heal().
            while self._proxy.stalled:
                self._changed.clear()
                await self._changed.wait()
            try:
                server_reader, self._server = await asyncio.open_connection(
                    self._proxy.target_host, self._proxy.target_port
                )
            except OSError:  # the target refuses, or is unreachable: the client gets a reset
                self._reset = True
                reading_client.cancel()
                return
            reading_server = group.create_task(
                self._to_client.read_from(server_reader), name=f"{name} read server"
            )
            deliveries = {
                group.create_task(
                    self._to_server.deliver_to(self._server), name=f"{name} deliver to server"
                ),
                group.create_task(
                    self._to_client.deliver_to(self._client), name=f"{name} deliver to client"
                ),
            }
            # Both streams delivered to their end (half-closes pass through), or a reset.
            while deliveries and not self._reset:
                done, deliveries = await asyncio.wait(
                    deliveries, return_when=asyncio.FIRST_COMPLETED
                )
                self._reset = any(task.result() is _End.RESET for task in done)
            for task in (reading_client, reading_server, *deliveries):
                task.cancel()

    async def _close(self) -> None:
        """Close both sides (reset them after a reset or a cut) and wait until they are closed."""
        writers = [writer for writer in (self._client, self._server) if writer is not None]
        for writer in writers:
            if self._reset:
                _reset_when_closed(writer.transport)
                writer.transport.abort()
            else:
                writer.close()
        for writer in writers:
            # The error, if any, is the one the pipes already saw.
            with contextlib.suppress(OSError):
                await writer.wait_closed()
