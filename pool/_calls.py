"""Calling the driver with a time limit that costs nothing when the call does not wait.

Every driver call the pool makes is bounded (``connect_timeout``, ``ping_timeout``,
``reset_timeout``, ``close_timeout``), so a black-holed server can stall nothing forever. Arming a
timeout is not free, though: ``asyncio.timeout`` schedules a timer on the event loop and cancels it
afterwards. Paying that on every release would double the cost of the fast path, where ``reset`` on
a clean connection returns without any I/O.

``call_with_timeout`` therefore takes the first step of the driver's coroutine by hand. If the
coroutine finishes in that step (it never waited on anything), its result is returned at once and no
timer was ever armed. Only if the coroutine suspends -- it is waiting for the network -- does the
timeout start, and ``_Resume`` drives the rest of the coroutine under it, exactly as ``await``
would have. The timer starts a few instructions late, which is harmless for limits measured in
seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["begin", "call_with_timeout", "describe"]

T = TypeVar("T")


async def call_with_timeout(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Await ``coro`` within ``timeout`` seconds (``None``: no limit).

    Raises ``TimeoutError`` if the time runs out; the coroutine is cancelled first, as with
    ``asyncio.timeout``.
    """
    if timeout is None:
        return await coro  # cancel: the driver's call is cancelled; the caller says what it costs
    try:
        first_yield = coro.send(None)
    except StopIteration as finished:
        # The call completed without waiting for anything: nothing to time.
        return finished.value  # type: ignore[no-any-return]
    # cancel: none: entering and leaving a timeout never suspend
    async with asyncio.timeout(timeout):
        # cancel: the driver's call is cancelled; the caller says what it costs
        result: T = await _Resume(coro, first_yield)
    return result


def begin(coro: Coroutine[Any, Any, None]) -> _Resume | None:
    """Take the first step of ``coro``; return None if that finished it, else what to await.

    For calls whose result is not needed (``reset``), on the hottest path: the caller arms its
    timeout only when this returns something to await. Exceptions of the first step propagate.
    """
    try:
        first_yield = coro.send(None)
    except StopIteration:
        return None
    return _Resume(coro, first_yield)


class _Resume:
    """Await the rest of a coroutine whose first step was already taken.

    ``await`` is a loop that passes what the coroutine yields (a future it waits on) up to the
    task, and what the task sends or throws (a result, or ``CancelledError``) back down. This
    class is that loop, written out because its first turn has already happened.
    """

    __slots__ = ("_coro", "_first_yield")

    def __init__(self, coro: Coroutine[Any, Any, Any], first_yield: Any) -> None:
        self._coro = coro
        self._first_yield = first_yield

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        to_yield = self._first_yield
        while True:
            thrown: BaseException | None = None
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as error:  # the awaited future's error, or a cancellation
                thrown = error
            # Thrown in outside the except block, as a native await would: inside it, an
            # error the coroutine raises while handling this one would get it as __context__.
            try:
                to_yield = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as finished:
                return finished.value


def describe(error: BaseException) -> str:
    """A one-line description of a driver's exception for logs and messages: its type, which
    often says more than its text (``ConnectionRefusedError``), then its text if it has one."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
