"""Workload W5: the notes demo under uvicorn, driven over loopback HTTP, with and without reuse.

What a user of the FastAPI integration sees: ``examples/notes`` served by uvicorn (one worker,
as ``examples/serve`` runs it), ``clients`` keep-alive HTTP/1.1 connections each sending
``GET /notes/{id}`` for random existing notes, one request at a time, as fast as answers come.
Two contenders, both the same app code (``bench/_w5_app.py``):

* **aiodbpool**: the demo as shipped, ``create_app(dsn)``: at most 10 connections, reused.
* **no pool (connect per request)**: ``create_app(dsn, max_uses=1, max_size=clients,
  validate_after_idle=None)``. The pool then never reuses a connection: every request opens a
  new PostgreSQL connection, SCRAM handshake included, and the connection is closed once
  released. Keeping the app code identical means the only difference measured is reuse. The
  close is not part of the request: the pool releases before the response is sent and closes in
  a background task, so if anything this flatters the connect-per-request side.

The load generator is written with asyncio streams (raw requests, the status line, headers and a
``Content-Length`` body) so that it costs little next to the server; :func:`main` prints how much
of a core it used. Both servers run at once and the contenders take turns round by round, so a
machine that speeds up or slows down during the run affects both alike. Any answer but 200 is
counted, and the run fails at the end if there was one: a benchmark that measures errors is
worthless.

The app's table lives in a schema made for the run and dropped afterwards (see
``bench/_w5_app.py``), so nothing is left behind on a server given by ``$AIODBPOOL_BENCH_DSN``.
The connect-per-request side holds up to ``clients`` connections, the pooled side 10: keep
``clients`` well under the server's ``max_connections`` (200 on the throwaway server)::

    .venv/bin/python -m bench.http_load --seconds 5 --repeats 5 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import socket
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import asyncpg

from bench import _w5_app
from bench.results import METRICS, Measurement
from bench.server import postgres

__all__ = ["CONTENDERS", "WORKLOAD", "run"]

WORKLOAD: Final = "W5"

CONTENDERS: Final = {
    "aiodbpool": "bench._w5_app:pooled",
    "no pool (connect per request)": "bench._w5_app:per_request",
}
"""Each contender's name, and the app factory uvicorn loads for it."""

_ROOT: Final = Path(__file__).resolve().parent.parent
_NOTES: Final = 100
_WARM_UP_SECONDS: Final = 1.0
_READY_TIMEOUT: Final = 30.0
_STOP_TIMEOUT: Final = 10.0
_OUTPUT_KEPT: Final = 20_000
"""How much of a server's last output is kept, to show when it fails."""


@dataclass(slots=True)
class _Errors:
    """The answers other than the expected one, by status, with the first body of each."""

    statuses: Counter[int] = field(default_factory=Counter)
    first_bodies: dict[int, bytes] = field(default_factory=dict)

    def record(self, status: int, body: bytes) -> None:
        self.statuses[status] += 1
        self.first_bodies.setdefault(status, body[:300])

    def describe(self) -> str:
        return "; ".join(
            f"{count} x {status} (first: {self.first_bodies[status]!r})"
            for status, count in sorted(self.statuses.items())
        )


@dataclass(slots=True)
class _Report:
    """What a run found: the figures, and the load generator's share of a core per round."""

    measurements: list[Measurement]
    generator_cpu: list[float]


def run(dsn: str, *, seconds: float, repeats: int, clients: int) -> list[Measurement]:
    """W5 against the server at ``dsn``: one :class:`Measurement` per contender, with
    ``requests_per_s``, ``p50_ms`` and ``p99_ms`` for each of ``repeats`` rounds of ``seconds``.

    Starts both uvicorn servers and stops them before returning, also on error or Ctrl-C.
    Raises ``RuntimeError`` if any request got an answer other than 200.
    """
    return _run_report(dsn, seconds=seconds, repeats=repeats, clients=clients).measurements


def _run_report(dsn: str, *, seconds: float, repeats: int, clients: int) -> _Report:
    if seconds <= 0 or repeats < 1 or clients < 1:
        raise ValueError("seconds must be positive, repeats and clients at least 1")
    with asyncio.Runner(loop_factory=_fastest_loop()) as runner:
        return runner.run(_measure(dsn, seconds, repeats, clients))


def _fastest_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop if it is installed: the cheaper the generator, the more the server is measured."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _measure(dsn: str, seconds: float, repeats: int, clients: int) -> _Report:
    measurements = {name: Measurement(WORKLOAD, name) for name in CONTENDERS}
    errors = {name: _Errors() for name in CONTENDERS}
    generator_cpu: list[float] = []
    async with AsyncExitStack() as stack:
        schema = await stack.enter_async_context(_schema(dsn))
        env = {
            **os.environ,
            _w5_app.DSN_VARIABLE: dsn,
            _w5_app.CLIENTS_VARIABLE: str(clients),
            _w5_app.SCHEMA_VARIABLE: schema,
        }
        # One after the other: both apps create the table at start-up, and two concurrent
        # CREATE TABLE IF NOT EXISTS can collide in PostgreSQL's catalog.
        servers = [
            await stack.enter_async_context(_serving(name, factory, env))
            for name, factory in CONTENDERS.items()
        ]
        loads = [
            _Load(server, await _create_notes(server), clients, errors[server.contender])
            for server in servers
        ]
        for load in loads:
            await load.round(_WARM_UP_SECONDS)
        for _ in range(repeats):
            for load in loads:
                latencies, elapsed, cpu = await load.round(seconds)
                measurements[load.server.contender].add(
                    requests_per_s=len(latencies) / elapsed,
                    p50_ms=_percentile(latencies, 0.50) * 1e3,
                    p99_ms=_percentile(latencies, 0.99) * 1e3,
                )
                generator_cpu.append(cpu / elapsed)
    failed = {name: found for name, found in errors.items() if found.statuses}
    if failed:
        raise RuntimeError(
            "W5 got answers other than 200, so its figures are not valid: "
            + " | ".join(f"{name}: {found.describe()}" for name, found in failed.items())
        )
    return _Report(list(measurements.values()), generator_cpu)


def _percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value at least ``fraction`` of all are at."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# ---------------------------------------------------------------------- the database schema


@asynccontextmanager
async def _schema(dsn: str) -> AsyncIterator[str]:
    """A new schema for the apps' table, dropped with everything in it afterwards."""
    name = f"aiodbpool_w5_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {name}")
        try:
            yield name
        finally:
            await admin.execute(f"DROP SCHEMA {name} CASCADE")
    finally:
        await admin.close()


# ---------------------------------------------------------------------- the servers


@dataclass(slots=True)
class _Server:
    """One contender's uvicorn process, and the end of what it printed."""

    contender: str
    port: int
    process: asyncio.subprocess.Process
    output: bytearray

    def failure(self, what: str) -> RuntimeError:
        """An error saying ``what`` went wrong, with the server's last output."""
        printed = self.output.decode(errors="replace").strip() or "(nothing)"
        return RuntimeError(f"W5 {self.contender!r}: {what}; uvicorn printed:\n{printed}")


@asynccontextmanager
async def _serving(contender: str, factory: str, env: dict[str, str]) -> AsyncIterator[_Server]:
    """uvicorn serving ``factory`` on a free loopback port, ready; stopped afterwards."""
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(_ROOT / "examples"),
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        cwd=_ROOT,  # `python -m` puts it on sys.path, so `bench._w5_app` imports
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Its own session: Ctrl-C reaches only this process, which then stops the server.
        start_new_session=True,
    )
    assert process.stdout is not None  # piped above
    server = _Server(contender, port, process, bytearray())
    collector = asyncio.create_task(_collect_output(process.stdout, server.output))
    try:
        await _wait_until_ready(server)
        yield server
    finally:
        await _stop(process)
        # The pipe ends when the process does; a grandchild holding it must not hang us.
        with suppress(TimeoutError):
            await asyncio.wait_for(collector, _STOP_TIMEOUT)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _collect_output(stream: asyncio.StreamReader, output: bytearray) -> None:
    """Keep the last :data:`_OUTPUT_KEPT` bytes; reading also keeps the pipe from filling up."""
    while chunk := await stream.read(4096):
        output.extend(chunk)
        del output[:-_OUTPUT_KEPT]


async def _wait_until_ready(server: _Server) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        if server.process.returncode is not None:
            raise server.failure(f"uvicorn exited with {server.process.returncode} at start-up")
        try:
            async with asyncio.timeout(2.0):
                status, _ = await _request_once(server.port, _get("/health/ready", server.port))
            if status == 200:
                return
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise server.failure(f"/health/ready did not answer 200 within {_READY_TIMEOUT:g}s")
        await asyncio.sleep(0.1)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, a graceful wait, then SIGKILL."""
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
    finally:
        # Cancelled while waiting (a second Ctrl-C): do not leave it running.
        if process.returncode is None:
            process.kill()


async def _create_notes(server: _Server) -> list[bytes]:
    """Create the notes to read, and return one ready-made GET request per note."""
    connection = await _Connection.open(server.port)
    try:
        requests = []
        for number in range(_NOTES):
            note = {"title": f"note {number}", "body": f"the body of note {number}. " * 5}
            status, body = await connection.request(
                _post("/notes", server.port, json.dumps(note).encode())
            )
            if status != 201:
                raise server.failure(f"POST /notes answered {status}: {body[:300]!r}")
            requests.append(_get(f"/notes/{json.loads(body)['id']}", server.port))
        return requests
    finally:
        connection.close()


# ---------------------------------------------------------------------- the load generator


@dataclass(slots=True)
class _Load:
    """``clients`` connections sending the ready-made ``requests`` at random to one server."""

    server: _Server
    requests: Sequence[bytes]
    clients: int
    errors: _Errors

    async def round(self, seconds: float) -> tuple[list[float], float, float]:
        """Run for ``seconds``; returns each request's latency, the wall-clock time until the
        last answer, and the CPU time this process used meanwhile (all in seconds)."""
        connections: list[_Connection] = []
        try:
            # Connected beforehand, so that the timed part is only requests.
            for _ in range(self.clients):
                connections.append(await _Connection.open(self.server.port))
            latencies: list[float] = []
            cpu_started = time.process_time()
            started = time.perf_counter()
            deadline = started + seconds
            try:
                async with asyncio.TaskGroup() as group:
                    for number, connection in enumerate(connections):
                        chooser = random.Random(number).choice
                        group.create_task(self._client(connection, chooser, deadline, latencies))
            except* (OSError, asyncio.IncompleteReadError) as failed:
                raise self.server.failure(
                    f"{len(failed.exceptions)} client connection(s) failed, first with "
                    f"{failed.exceptions[0]!r}"
                ) from failed
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        finally:
            for connection in connections:
                connection.close()
        if not latencies:
            raise self.server.failure(f"no request was answered in {seconds:g}s")
        return latencies, elapsed, cpu

    async def _client(
        self,
        connection: _Connection,
        choose: Callable[[Sequence[bytes]], bytes],
        deadline: float,
        latencies: list[float],
    ) -> None:
        clock = time.perf_counter
        requests = self.requests
        while (started := clock()) < deadline:
            status, body = await connection.request(choose(requests))
            latencies.append(clock() - started)
            if status != 200:
                self.errors.record(status, body)


class _Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1, one request at a time."""

    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._port = port
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        return cls(port, reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send a ready-made request; returns the answer's status and body.

        No ``drain()``: the answer is awaited before the next request is written, so the write
        buffer never holds more than one small request.
        """
        self._writer.write(raw)
        head = (await self._reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])  # b"http/1.1 200 ok\r\n..."
        body = await self._reader.readexactly(_content_length(head))
        if b"\r\nconnection: close\r\n" in head:
            # The server will not read another request here: continue on a new connection.
            self.close()
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        return status, body

    def close(self) -> None:
        self._writer.close()


async def _request_once(port: int, raw: bytes) -> tuple[int, bytes]:
    connection = await _Connection.open(port)
    try:
        return await connection.request(raw)
    finally:
        connection.close()


def _content_length(head: bytes) -> int:
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError(f"an answer without Content-Length, which W5 does not read: {head!r}")
    start += len(b"\r\ncontent-length:")
    return int(head[start : head.index(b"\r\n", start)])


def _get(path: str, port: int) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()


def _post(path: str, port: int, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per contender")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP connections")
    args = parser.parse_args(argv)

    try:
        with postgres() as server:
            report = _run_report(
                server.dsn, seconds=args.seconds, repeats=args.repeats, clients=args.clients
            )
    except KeyboardInterrupt:
        print("interrupted; the servers were stopped", file=sys.stderr)
        return 130
    print(
        f"W5: the notes demo under uvicorn, GET /notes/{{id}}, {args.clients} keep-alive clients, "
        f"{args.repeats} rounds of {args.seconds:g}s\non {server.description}"
    )
    metrics = ("requests_per_s", "p50_ms", "p99_ms")
    width = max(len(name) for name in CONTENDERS)
    print(
        f"{'contender':<{width}}  "
        + "  ".join(f"{METRICS[m] + ' (min..max)':>22}" for m in metrics)
    )
    for measurement in report.measurements:
        cells = []
        for metric in metrics:
            summary = measurement.summary(metric)
            digits = 0 if metric == "requests_per_s" else 1
            cells.append(
                f"{summary.median:.{digits}f} ({summary.low:.{digits}f}..{summary.high:.{digits}f})"
            )
        print(f"{measurement.contender:<{width}}  " + "  ".join(f"{c:>22}" for c in cells))
    shares = report.generator_cpu
    print(
        f"load generator: {statistics.median(shares):.0%} of one core "
        f"(median of the rounds; {min(shares):.0%}..{max(shares):.0%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
