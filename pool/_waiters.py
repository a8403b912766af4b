"""The queue of acquirers waiting for a connection: strictly first in, first out.

A waiter is a future. Whoever frees something an acquirer can use -- a released connection, or a
new one -- *offers* it to the queue with ``Waiters.offer``. The offer goes to the oldest waiter
that still waits; a waiter that timed out or was cancelled has a finished future and is skipped,
so the offer is *refused* and the caller keeps what it offered (it goes back to the pool). That is
what keeps a timed-out waiter from swallowing a connection.

One race remains, and ``Waiters.take`` closes it: a waiter can be cancelled *after* its future
received a connection but *before* its task resumed to take it. The waiter then owns something it
will never use, so it hands it back through the ``give_back`` callback before the cancellation
propagates.

Every step is O(1), whatever the queue's length and whichever waiter leaves: the futures are kept
in an ``OrderedDict`` (a hash table threaded on a linked list), so a waiter that gives up unlinks
itself without a search. A ``deque`` would have to search for it: with 40,000 acquirers leaving
newest first (a cancelled task group, a storm of disconnects), that search blocked the event loop
for seconds. ``python -m bench.waiters`` measures it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Waiters"]

T = TypeVar("T")


class Waiters(Generic[T]):
    """A FIFO queue of acquirers, each waiting for one grant of type ``T``."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        # Futures of the acquirers still waiting, oldest first (the values are unused). A waiter
        # that gives up removes its own future, so len() is exactly the number still waiting.
        self._queue: OrderedDict[asyncio.Future[T], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queue)

    def join(self, *, first: bool = False) -> asyncio.Future[T]:
        """Queue a new waiter and return its future, to be awaited with ``take``.

        ``first`` puts the waiter at the head of the line instead of its end: for an acquirer
        that already had its turn, but whose connection proved unusable. (Joining and taking are
        two steps so that the pool can act on the longer queue before the waiter suspends.)
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue[future] = None
        if first:
            self._queue.move_to_end(future, last=False)
        return future

    async def take(self, future: asyncio.Future[T], give_back: Callable[[T], None]) -> T:
        """Wait until something is offered to the waiter of ``future``, and return it.

        If the wait ends in an exception (timeout, cancellation) after a grant already arrived, the
        grant is passed to ``give_back`` so that nothing is lost, and the exception propagates.
        """
        try:
            # cancel: the waiter leaves the queue, or hands back what it was just given (below)
            return await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                # Granted, then cancelled before this task could resume: return the grant.
                give_back(future.result())
            else:
                # It may already be off the queue: taken by an offer, or failed.
                self._queue.pop(future, None)
            raise

    def offer(self, grant: T) -> bool:
        """Give ``grant`` to the oldest waiter still waiting. Return False if nobody took it."""
        queue = self._queue
        while queue:
            future, _ = queue.popitem(last=False)
            if not future.done():
                future.set_result(grant)
                return True
        return False

    def fail_oldest(self, error: BaseException) -> bool:
        """Wake the oldest waiter still waiting with ``error``. Return False if there is none."""
        queue = self._queue
        while queue:
            future, _ = queue.popitem(last=False)
            if not future.done():
                future.set_exception(error)
                return True
        return False

    def fail_all(self, make_error: Callable[[], BaseException]) -> None:
        """Wake every waiter with an exception (the pool is closing)."""
        while self.fail_oldest(make_error()):
            pass
