"""The scenarios' tally tells a clean failure from a hang, PoolTimeout included."""

from __future__ import annotations

import asyncio

import pytest
from tally import REPORT_VARIABLE, Tally

from aiodbpool import Pool, PoolError
from aiodbpool.drivers.fake import FakeConnection, FakeDriver


async def test_a_pool_timeout_within_the_bound_fails_cleanly() -> None:
    async with Pool(FakeDriver(), max_size=1) as pool:
        held = await pool.acquire()
        tally = Tally("timeouts", allowed=(PoolError,))
        assert not await tally.run(lambda: pool.acquire(timeout=0.01), bound=30)
        await pool.release(held)
        assert await tally.run(lambda: _borrow(pool), bound=30)
    assert (tally.attempted, tally.succeeded, tally.failed_cleanly, tally.hung) == (2, 1, 1, 0)
    assert tally.errors == {"PoolTimeout": 1}


async def test_an_operation_past_its_bound_is_counted_as_hung() -> None:
    tally = Tally("hangs", allowed=(PoolError,))
    assert not await tally.run(lambda: asyncio.sleep(30), bound=0.01)
    assert tally.hung == 1


async def test_an_error_the_scenario_does_not_allow_fails_the_test() -> None:
    tally = Tally("strict", allowed=(PoolError,))
    with pytest.raises(TimeoutError):
        await tally.run(_time_out_by_itself, bound=30)
    with pytest.raises(KeyError):
        await tally.run(_raise_key_error, bound=30)


def test_the_report_row_names_the_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REPORT_VARIABLE, raising=False)  # not a row of the real report
    tally = Tally("row", allowed=(PoolError,), attempted=3, succeeded=2, failed_cleanly=1)
    tally.errors["PoolTimeout"] = 1
    row = tally.report(faults="none", leaked=0, recovery="at once")
    assert row == "| row | none | 3 | 2 | 1 (PoolTimeout 1) | 0 | 0 | at once |"
    assert row in capsys.readouterr().out


async def _borrow(pool: Pool[FakeConnection]) -> None:
    async with pool.acquire():
        pass


async def _time_out_by_itself() -> None:
    raise TimeoutError("not the tally's bound")


async def _raise_key_error() -> None:
    raise KeyError("unexpected")
