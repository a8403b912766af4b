"""The queue of acquirers waiting for a connection: strictly first in, first out.

A waiter is a future. Whoever frees something an acquirer can use -- a released connection, or room
to open a new one -- *offers* it to the queue with ``Waiters.offer``. The offer goes to the
oldest waiter that still waits; a waiter that timed out or was cancelled has a finished future and
is skipped, so the offer is *refused* and the caller keeps what it offered (it goes back to the
pool). That is what keeps a timed-out waiter from swallowing a connection.

One race remains, and ``Waiters.wait`` closes it: a waiter can be cancelled *after* its future
received a connection but *before* its task resumed to take it. The waiter then owns something it
will never use, so it hands it back through the ``give_back`` callback before the cancellation
propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Waiters"]

T = TypeVar("T")


class Waiters(Generic[T]):
    """A FIFO queue of acquirers, each waiting for one grant of type ``T``."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        # Futures of the acquirers still waiting, oldest first. A waiter that gives up removes its
        # own future, so len() is exactly the number of acquirers waiting.
        self._queue: deque[asyncio.Future[T]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    async def wait(self, give_back: Callable[[T], None], *, first: bool = False) -> T:
        """Wait in line until something is offered to this waiter, and return it.

        ``first`` puts the waiter at the head of the line instead of its end: for an acquirer
        that already had its turn, but whose connection proved unusable.

        If the wait ends in an exception (timeout, cancellation) after a grant already arrived, the
        grant is passed to ``give_back`` so that nothing is lost, and the exception propagates.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if first:
            self._queue.appendleft(future)
        else:
            self._queue.append(future)
        try:
            return await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                # Granted, then cancelled before this task could resume: return the grant.
                give_back(future.result())
            else:
                self._remove(future)
            raise

    def offer(self, grant: T) -> bool:
        """Give ``grant`` to the oldest waiter still waiting. Return False if nobody took it."""
        queue = self._queue
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(grant)
                return True
        return False

    def fail_all(self, make_error: Callable[[], BaseException]) -> None:
        """Wake every waiter with an exception (the pool is closing)."""
        queue = self._queue
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_exception(make_error())

    def _remove(self, future: asyncio.Future[T]) -> None:
        # It may already be off the queue: taken by offer() or fail_all().
        with contextlib.suppress(ValueError):
            self._queue.remove(future)
