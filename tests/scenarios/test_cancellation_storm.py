"""Scenario: a cancellation storm. A thousand tasks borrow connections from a pool of ten on a real
PostgreSQL server, run statements, and are cancelled at random points: waiting in line, just
granted a connection, in the middle of a statement (inside a transaction or not), and while
giving back a connection whose transaction is still open.

What must hold afterwards: every permit is back, the books balance, every idle connection is
clean (outside any transaction, answering at once), and the server runs nothing for the pool and
has exactly the sessions the pool holds -- then none once it is closed.

Each task is cancelled by a companion that waits until the task reaches the point chosen for it,
then a small random delay more; the cancellation lands wherever the task is by then, and the
report counts where that was. The choices come from a seeded ``random.Random``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal, TypeAlias

import asyncpg
from helpers import check_books, wait_until
from tally import Tally, server_shows

from aiodbpool import Pool
from aiodbpool.drivers.postgres import PostgresDriver

SEED = 1_000
TASKS = 1_000
MAX_SIZE = 10
MIN_SIZE = 2

OPERATION_BOUND = 25.0
"""No task may take longer than this, waiting in line included: past it, it counts as hung."""

Kind: TypeAlias = Literal["select", "sleep", "transaction", "left open"]
"""What a task does with its connection: ``SELECT 1``; ``SELECT pg_sleep(...)``; a sleep inside
``async with conn.transaction()``; or ``BEGIN`` and a sleep, giving the connection back with the
transaction still open (so the release must roll it back)."""

Phase: TypeAlias = Literal["queued", "granted", "statement", "transaction", "release", "done"]
"""Where a task is: acquiring (waiting in line, or its connection being opened); holding a
connection before its first statement; running a statement; running one inside a transaction;
giving back a connection that needs a rollback; finished."""

KINDS: Final[tuple[Kind, ...]] = ("select", "sleep", "transaction", "left open")
CANCELLATION_POINTS: Final[tuple[Phase, ...]] = (
    "queued",
    "granted",
    "statement",
    "transaction",
    "release",
)

# The points at which a task of each kind may be chosen to be cancelled.
TARGETS: Final[dict[Kind, tuple[Phase, ...]]] = {
    "select": ("queued", "granted", "statement"),
    "sleep": ("queued", "granted", "statement"),
    "transaction": ("queued", "granted", "transaction"),
    "left open": ("queued", "granted", "transaction", "release"),
}

NOT_CANCELLED_SHARE = 0.15
"""Tasks left to finish, so the storm also serves ordinary work."""


@dataclass(eq=False)
class _Task:
    """One task of the storm: what it does, where it is, and where it is to be cancelled."""

    kind: Kind
    pause: float  # seconds of pg_sleep, for the kinds that sleep
    target: Phase | None  # where its companion cancels it; None: never
    delay: float  # how long after reaching ``target`` the cancellation is sent
    phase: Phase = "queued"
    cancelled_in: Phase | None = None  # where it was when the cancellation was sent
    at_target: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.phase == "done"

    def enter(self, phase: Phase) -> None:
        self.phase = phase
        if phase == self.target or phase == "done":
            self.at_target.set()


def _plan(rng: random.Random) -> list[_Task]:
    tasks = []
    for _ in range(TASKS):
        kind = rng.choice(KINDS)
        pause = rng.uniform(0.001, 0.02)
        target = None if rng.random() < NOT_CANCELLED_SHARE else rng.choice(TARGETS[kind])
        delay = 0.0 if rng.random() < 0.25 else rng.uniform(0.0, 0.01)
        tasks.append(_Task(kind, pause, target, delay))
    return tasks


async def _work(pool: Pool[asyncpg.Connection], task: _Task) -> None:
    task.enter("queued")
    conn = await pool.acquire()
    try:
        task.enter("granted")
        await asyncio.sleep(0)  # the caller's own work before its first statement
        if task.kind == "select":
            task.enter("statement")
            assert await conn.fetchval("SELECT 1") == 1
        elif task.kind == "sleep":
            task.enter("statement")
            await conn.execute("SELECT pg_sleep($1)", task.pause)
        elif task.kind == "transaction":
            async with conn.transaction():
                task.enter("transaction")
                await conn.execute("SELECT pg_sleep($1)", task.pause)
                assert await conn.fetchval("SELECT 2") == 2
        else:
            await conn.execute("BEGIN")
            task.enter("transaction")
            await conn.execute("SELECT pg_sleep($1)", task.pause)
    finally:
        if conn.is_in_transaction():
            task.enter("release")
        await pool.release(conn)
    task.enter("done")


async def _cancel_at_target(task: _Task, runner: asyncio.Task[bool]) -> None:
    await task.at_target.wait()
    if task.finished:
        return
    await asyncio.sleep(task.delay)
    if not task.finished and not runner.done():
        task.cancelled_in = task.phase
        runner.cancel()


async def test_a_thousand_cancelled_tasks_leave_every_connection_clean(postgres_url: str) -> None:
    app_name = f"aiodbpool-cancel-storm-{uuid.uuid4().hex[:12]}"
    pool = Pool(
        PostgresDriver(postgres_url, server_settings={"application_name": app_name}),
        name="cancellation-storm",
        min_size=MIN_SIZE,
        max_size=MAX_SIZE,
        acquire_timeout=OPERATION_BOUND - 5,
        # Hand idle connections out as they are, unpinged: the checks below must see what the
        # storm left behind, not what a ping would have repaired.
        validate_after_idle=None,
    )
    tally = Tally("cancellation storm", allowed=(asyncio.CancelledError,))
    plan = _plan(random.Random(SEED))

    async with pool:
        started = time.monotonic()
        runners = [
            asyncio.create_task(tally.run(partial(_work, pool, task), bound=OPERATION_BOUND))
            for task in plan
        ]
        companions = [
            asyncio.create_task(_cancel_at_target(task, runner))
            for task, runner in zip(plan, runners, strict=True)
            if task.target is not None
        ]
        await asyncio.gather(*runners, *companions)
        storm_ended = time.monotonic()

        # Every permit is back once the connects and closes the storm started have finished.
        await wait_until(
            lambda: pool.stats().opening == 0 and pool.stats().closing == 0,
            timeout=10,
            message="no connect or close under way",
        )
        stats = pool.stats()
        check_books(pool)
        assert stats.in_use == 0
        assert stats.waiting == 0
        assert stats.size <= MAX_SIZE

        # Every idle connection is clean and answers at once; the pool opens none to check them.
        held = [await pool.acquire() for _ in range(stats.idle)]
        try:
            for conn in held:
                assert not conn.is_closed()
                assert not conn.is_in_transaction()
                async with asyncio.timeout(2):
                    assert await conn.fetchval("SELECT 1") == 1
        finally:
            for conn in held:
                await pool.release(conn)
        assert pool.stats().created == stats.created

        # The server runs nothing for the pool and has exactly its sessions.
        view = await server_shows(postgres_url, app_name, lambda view: view == (stats.size, 0))
        settled = time.monotonic()
    view_after_close = await server_shows(postgres_url, app_name, lambda view: view == (0, 0))

    landed = Counter(task.cancelled_in for task in plan if task.cancelled_in is not None)
    where = ", ".join(f"{phase} {landed[phase]}" for phase in CANCELLATION_POINTS)
    leaked = (
        stats.in_use
        + stats.opening
        + stats.waiting
        + abs(view[0] - stats.size)
        + view[1]
        + view_after_close[0]
    )
    tally.report(
        faults=f"{sum(landed.values())} cancellations ({where}); pool of {MAX_SIZE}",
        leaked=leaked,
        recovery=(
            f"storm {storm_ended - started:.2f} s; settled {(settled - storm_ended) * 1000:.0f} "
            f"ms later with {stats.size} sessions, {stats.discarded} discarded"
        ),
    )

    assert tally.hung == 0
    assert tally.attempted == TASKS
    assert tally.succeeded + tally.failed_cleanly == TASKS
    assert tally.failed_cleanly == sum(landed.values())
    assert leaked == 0, f"stats {stats}; server (sessions, active): {view}, then {view_after_close}"
    # The storm reached the points it is about; the seed makes these counts large.
    assert landed["queued"] > 50
    assert landed["statement"] + landed["transaction"] > 50
