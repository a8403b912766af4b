"""Helpers for the SQLite driver's tests: see inside aiosqlite's worker threads without sleeping.

A statement runs in a thread of its connection, so a test cannot await "the statement has started"
directly. These helpers let the statement say so itself: a user function that signals when SQLite
calls it (:class:`Gate`, which can also hold the thread until released), and a trace callback that
signals when a statement begins (:class:`StatementStarted`). Both are installed with the driver's
``init`` option, as a user would install functions.

Leaks are looked for from outside the driver: the process's file descriptors that point at a
database (:func:`file_handles`), and its live worker threads (:func:`worker_threads`). A lock that
another process holds (:class:`LockedByAnotherProcess`) makes a connect wait as long as it would
in production, where no test can reach into the thread that waits.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import aiosqlite
from helpers import wait_until

__all__ = [
    "NUMBERS",
    "SLOW_COUNT",
    "Gate",
    "LockedByAnotherProcess",
    "StatementStarted",
    "fetch_value",
    "file_handles",
    "raw_value",
    "wait_for_worker_threads",
    "worker_threads",
]

_TO_A_BILLION = (
    "WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000)"
)

SLOW_COUNT = _TO_A_BILLION + " SELECT count(*) FROM n"
"""A query that counts to a billion: minutes of work that only an interrupt ends. ``{start}`` is
the first value, e.g. a call to a :class:`Gate` function that says the query has started."""

NUMBERS = _TO_A_BILLION.format(start=1) + " SELECT i FROM n"
"""A billion rows, 1, 2, 3...: a cursor that is never read to the end."""


class Gate:
    """A SQL function ``name()`` that reports when it is called and, if closed, blocks its thread.

    ``entered`` is set when SQLite calls the function. A closed gate holds the calling thread
    until :meth:`open` (at most ``limit`` seconds, so a failing test cannot hang the process);
    ``sqlite3_interrupt`` cannot stop it, as it cannot stop any Python function SQLite calls.
    """

    def __init__(self, name: str = "gate", *, closed: bool = True, limit: float = 30.0) -> None:
        self.name = name
        self.entered = threading.Event()
        self._open = threading.Event()
        self._limit = limit
        if not closed:
            self._open.set()

    def open(self) -> None:
        self._open.set()

    def _call(self) -> int:
        self.entered.set()
        self._open.wait(self._limit)
        return 1

    async def install(self, conn: aiosqlite.Connection) -> None:
        """The driver's ``init``: register the function on each new connection."""
        await conn.create_function(self.name, 0, self._call)

    async def wait_entered(self) -> None:
        await wait_until(self.entered.is_set, timeout=10, message=f"{self.name}() was called")


class StatementStarted:
    """A trace callback (installed by ``init``) that signals when a statement with ``prefix``
    begins, e.g. a ``BEGIN IMMEDIATE`` that then waits for the write lock."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix.upper()
        self.event = threading.Event()

    def _trace(self, sql: str) -> None:
        if sql.upper().startswith(self._prefix):
            self.event.set()

    async def install(self, conn: aiosqlite.Connection) -> None:
        await conn.set_trace_callback(self._trace)

    async def wait(self) -> None:
        await wait_until(self.event.is_set, timeout=10, message=f"{self._prefix} began")


async def fetch_value(
    conn: aiosqlite.Connection, sql: str, parameters: Iterable[object] = ()
) -> object:
    """The first column of the first row of ``sql``."""
    rows = list(await conn.execute_fetchall(sql, parameters))
    assert rows, f"no row from {sql!r}"
    value: object = rows[0][0]
    return value


def worker_threads() -> set[threading.Thread]:
    """The aiosqlite worker threads alive now (one per open connection)."""
    return {
        thread
        for thread in threading.enumerate()
        if thread.name.endswith("(_connection_worker_thread)")
    }


async def wait_for_worker_threads(before: set[threading.Thread], timeout: float = 10.0) -> None:
    """Wait until no aiosqlite thread started after ``before`` was taken is still alive."""
    await wait_until(
        lambda: not worker_threads() - before,
        timeout=timeout,
        message="every connection's worker thread ended",
    )


def raw_value(uri: str, sql: str) -> object:
    """Run ``sql`` on a plain sqlite3 connection to ``uri``; None if it fails."""
    raw = sqlite3.connect(uri, uri=True)
    try:
        row = raw.execute(sql).fetchone()
    except sqlite3.Error:
        return None
    finally:
        raw.close()
    return None if row is None else row[0]


def file_handles(database: Path) -> list[str]:
    """What this process's open file descriptors point at, among ``database`` and the files
    SQLite keeps beside it (``-wal``, ``-shm``, ``-journal``). Linux: read from ``/proc``."""
    names = {os.fspath(database) + suffix for suffix in ("", "-wal", "-shm", "-journal")}
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (e.g. the descriptor listdir itself used)
        if target in names:
            found.append(target)
    return sorted(found)


_HOLD_LOCK = """
import sqlite3, sys
raw = sqlite3.connect(sys.argv[1], isolation_level=None)
raw.execute("CREATE TABLE IF NOT EXISTS held (x)")
raw.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
raw.execute("COMMIT")
raw.close()
"""


class LockedByAnotherProcess:
    """Another Python process that holds an exclusive lock on the database file at ``path``,
    from entering the ``with`` block until :meth:`release` (or the block's end).

    The file is left in (or created in) rollback-journal mode, where ``BEGIN EXCLUSIVE`` keeps
    every other connection from even reading: a connect, which switches the file to WAL, waits
    for the lock for its ``busy_timeout`` in SQLite's busy handler, where no interrupt reaches it.
    A lock held by another process, rather than another connection of this one, leaves this
    process's file handles to the test's count alone.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> LockedByAnotherProcess:
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, os.fspath(self._path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        said = process.stdout.readline()  # blocks until the lock is held: a moment
        if said.strip() != "locked":
            self.release()
            raise AssertionError(f"the process meant to lock {self._path} said {said!r}")
        return self

    def release(self) -> None:
        """Commit and end the other process; waits until it has (a moment)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write("\n")
            process.stdin.close()
            process.wait(timeout=30)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            assert process.stdout is not None
            process.stdout.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
