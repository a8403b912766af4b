"""``_calls``: driver calls bounded by a timeout that costs nothing when the call does not wait.

"Arms no timer" is shown by running the call with no event loop at all: ``asyncio.timeout`` needs
a running task, so a call that finishes in its first step can only succeed there if it never
armed one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from aiodbpool._calls import begin, call_with_timeout


class _Suspend:
    """Suspends its awaiter once, yielding ``label``; resumes with whatever is sent in."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __await__(self) -> Generator[str, Any, Any]:
        return (yield self.label)


async def _instant(value: int) -> int:
    return value


async def _two_steps(log: list[str]) -> tuple[Any, Any]:
    try:
        first = await _Suspend("first")
        second = await _Suspend("second")
        return first, second
    except KeyError:
        log.append("caught KeyError")
        return "recovered", None
    finally:
        log.append("finished")


def test_call_that_completes_without_suspending_arms_no_timer() -> None:
    steps = call_with_timeout(_instant(7), 1.0)

    with pytest.raises(StopIteration) as finished:
        steps.send(None)  # no event loop, no task: a timer could not even be created

    assert finished.value.value == 7


def test_begin_returns_none_for_a_call_that_completes_without_suspending() -> None:
    log: list[str] = []

    async def clean_reset() -> None:
        log.append("reset")

    assert begin(clean_reset()) is None
    assert log == ["reset"]


def test_begin_raises_what_the_first_step_raises() -> None:
    async def failing_reset() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):
        begin(failing_reset())


def test_begun_call_resumes_exactly_as_await_would() -> None:
    log: list[str] = []
    rest = begin(_two_steps(log))  # type: ignore[arg-type]
    assert rest is not None
    steps = rest.__await__()

    assert steps.send(None) == "first"  # the first step's yield, passed up to the task
    assert steps.send(1) == "second"
    with pytest.raises(StopIteration) as finished:
        steps.send(2)

    assert finished.value.value == (1, 2)
    assert log == ["finished"]


def test_begun_call_receives_what_is_thrown_into_it() -> None:
    log: list[str] = []
    rest = begin(_two_steps(log))  # type: ignore[arg-type]
    assert rest is not None
    steps = rest.__await__()
    steps.send(None)

    with pytest.raises(StopIteration) as finished:
        steps.throw(KeyError("thrown"))

    assert finished.value.value == ("recovered", None)
    assert log == ["caught KeyError", "finished"]


def test_begun_call_that_does_not_handle_a_thrown_error_propagates_it() -> None:
    log: list[str] = []
    rest = begin(_two_steps(log))  # type: ignore[arg-type]
    assert rest is not None
    steps = rest.__await__()
    steps.send(None)

    with pytest.raises(ValueError, match="not handled"):
        steps.throw(ValueError("not handled"))
    assert log == ["finished"]


def test_closing_a_begun_call_closes_the_driver_coroutine() -> None:
    log: list[str] = []
    rest = begin(_two_steps(log))  # type: ignore[arg-type]
    assert rest is not None
    steps = rest.__await__()
    steps.send(None)

    steps.close()

    assert log == ["finished"]


async def test_suspended_call_is_cancelled_at_the_deadline() -> None:
    log: list[str] = []

    async def black_hole() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    with pytest.raises(TimeoutError):
        await call_with_timeout(black_hole(), 0.01)

    assert log == ["cancelled"]


async def test_suspended_call_that_finishes_in_time_returns_its_result() -> None:
    async def round_trip() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return "pong"

    assert await call_with_timeout(round_trip(), 5.0) == "pong"


async def test_call_without_a_timeout_is_simply_awaited() -> None:
    async def slowish() -> int:
        await asyncio.sleep(0.001)
        return 3

    assert await call_with_timeout(slowish(), None) == 3


async def test_suspended_call_error_propagates_unchanged() -> None:
    async def refused() -> None:
        await asyncio.sleep(0)
        raise ConnectionRefusedError("nope")

    with pytest.raises(ConnectionRefusedError, match="nope"):
        await call_with_timeout(refused(), 5.0)


async def test_caller_cancellation_reaches_the_suspended_call() -> None:
    log: list[str] = []

    async def black_hole() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            log.append("ended")

    task = asyncio.create_task(call_with_timeout(black_hole(), 30.0))
    await asyncio.sleep(0)  # the task takes its first step and waits
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["ended"]


async def _replace_what_is_thrown_in(future: asyncio.Future[None]) -> None:
    try:
        await future
    except ValueError:
        replacement = RuntimeError("raised after handling the ValueError")
    raise replacement


@pytest.mark.parametrize("timeout", [None, 10.0])
async def test_an_error_raised_after_handling_a_thrown_one_is_not_chained_to_it(
    timeout: float | None,
) -> None:
    """As with a native ``await``: the resumed call raises outside its ``except`` block, so its
    error has no ``__context__`` (a driver relies on this to drop an error it replaced)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_exception, ValueError("thrown in"))

    with pytest.raises(RuntimeError) as raised:
        await call_with_timeout(_replace_what_is_thrown_in(future), timeout)

    assert raised.value.__context__ is None
