"""``_waiters.Waiters``: a FIFO queue whose hand-offs a waiter that gave up refuses, and which hands
back a grant that arrived just before its waiter was cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from helpers import wait_until

from aiodbpool._waiters import Waiters


class _Returned:
    """The ``give_back`` callback: remembers what it was handed."""

    def __init__(self) -> None:
        self.grants: list[str] = []

    def __call__(self, grant: str) -> None:
        self.grants.append(grant)


async def _wait(waiters: Waiters[str], give_back: _Returned, *, first: bool = False) -> str:
    """Wait in line as the pool does: join, then take."""
    return await waiters.take(waiters.join(first=first), give_back)


def _length_is(waiters: Waiters[str], count: int) -> Callable[[], bool]:
    return lambda: len(waiters) == count


async def _queue(
    waiters: Waiters[str], give_back: _Returned, count: int
) -> list[asyncio.Task[str]]:
    tasks = []
    for number in range(1, count + 1):
        tasks.append(asyncio.create_task(_wait(waiters, give_back)))
        await wait_until(_length_is(waiters, number))
    return tasks


async def test_grants_go_to_waiters_in_arrival_order() -> None:
    waiters: Waiters[str] = Waiters()
    tasks = await _queue(waiters, _Returned(), 3)

    for grant in ("a", "b", "c"):
        assert waiters.offer(grant)

    assert await asyncio.gather(*tasks) == ["a", "b", "c"]
    assert len(waiters) == 0


async def test_a_waiter_that_already_had_its_turn_goes_first() -> None:
    waiters: Waiters[str] = Waiters()
    queued = await _queue(waiters, _Returned(), 2)
    again = asyncio.create_task(_wait(waiters, _Returned(), first=True))
    await wait_until(_length_is(waiters, 3))

    for grant in ("a", "b", "c"):
        assert waiters.offer(grant)

    assert await again == "a"
    assert await asyncio.gather(*queued) == ["b", "c"]


def test_an_offer_nobody_waits_for_is_refused() -> None:
    assert Waiters[str]().offer("grant") is False


async def test_a_waiter_cancelled_before_any_offer_leaves_the_queue() -> None:
    waiters: Waiters[str] = Waiters()
    give_back = _Returned()
    (task,) = await _queue(waiters, give_back, 1)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(waiters) == 0
    assert give_back.grants == []
    assert waiters.offer("grant") is False


async def test_an_offer_skips_a_waiter_cancelled_in_the_same_loop_iteration() -> None:
    waiters: Waiters[str] = Waiters()
    give_back = _Returned()
    first, second = await _queue(waiters, give_back, 2)

    first.cancel()  # its future is cancelled now; its task has not run its clean-up yet
    assert waiters.offer("grant")

    assert await second == "grant"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert give_back.grants == []


async def test_an_offer_to_only_cancelled_waiters_is_refused() -> None:
    waiters: Waiters[str] = Waiters()
    (task,) = await _queue(waiters, _Returned(), 1)

    task.cancel()

    assert waiters.offer("grant") is False
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_give_back_receives_a_grant_when_cancelled_after_the_offer() -> None:
    waiters: Waiters[str] = Waiters()
    give_back = _Returned()
    (task,) = await _queue(waiters, give_back, 1)

    assert waiters.offer("grant")  # accepted: the waiter's task has not resumed yet
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert give_back.grants == ["grant"]
    assert len(waiters) == 0


async def test_a_waiter_timing_out_leaves_the_queue() -> None:
    waiters: Waiters[str] = Waiters()
    give_back = _Returned()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await _wait(waiters, give_back)

    assert len(waiters) == 0
    assert give_back.grants == []


async def test_fail_all_wakes_every_waiter_with_its_own_error() -> None:
    waiters: Waiters[str] = Waiters()
    give_back = _Returned()
    cancelled, *failing = await _queue(waiters, give_back, 3)
    cancelled.cancel()

    waiters.fail_all(lambda: LookupError("closing"))

    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(result, LookupError) for result in results)
    assert results[0] is not results[1]
    assert cancelled.cancelled()
    assert len(waiters) == 0
    assert give_back.grants == []


class _ComparedFuture(asyncio.Future[str]):
    """A future that counts how often it is compared: a search through the queue compares
    futures one by one, a hash lookup does not."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        _ComparedFuture.comparisons += 1
        return self is other

    __hash__ = asyncio.Future.__hash__


@pytest.mark.parametrize("order", ["newest first", "oldest first"])
async def test_leaving_the_queue_does_not_search_it(
    order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "create_future", lambda: _ComparedFuture(loop=loop))
    monkeypatch.setattr(_ComparedFuture, "comparisons", 0)
    waiters: Waiters[str] = Waiters()
    count = 2_000
    tasks = [asyncio.create_task(_wait(waiters, _Returned())) for _ in range(count)]
    await wait_until(_length_is(waiters, count))

    for task in reversed(tasks) if order == "newest first" else tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert len(waiters) == 0
    # A search per leave would compare about count**2 / 2 = 2,000,000 times.
    assert _ComparedFuture.comparisons <= count


async def test_fail_oldest_skips_waiters_that_gave_up() -> None:
    waiters: Waiters[str] = Waiters()
    first, second = await _queue(waiters, _Returned(), 2)
    first.cancel()

    assert waiters.fail_oldest(LookupError("no connection"))

    with pytest.raises(LookupError):
        await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert waiters.fail_oldest(LookupError("nobody")) is False
