"""The books: where every connection the pool knows of is, and how many slots are taken.

Every connection lives in exactly one of these places, described by its ``Record``:

* ``idle``      open, clean, waiting to be handed out (a stack: the last released is reused first);
* ``in_use``    handed out to a caller, or being validated, reset, or handed to a waiter; the ones
                a caller holds now are also in ``lent``, filed under the handle it holds;
* ``opening``   a count of connections being opened (each holds a slot before it exists);
* ``closing``   a count of connections being closed in the background (each keeps its slot).

``size()`` is the sum of the four and never exceeds ``max_size`` while connects are under way:
that sum *is* the semaphore. A slot is taken (``reserve_slots``) before a connect starts and
given back when the connection is closed, so "how many may exist" needs no separate counter
that could drift.

Acquirers that find no idle connection queue in ``waiters`` (strict FIFO, see ``_waiters.py``).
A connection that becomes available is offered to the oldest waiter before it is parked
(``hand_over_or_park``), so a non-empty ``idle`` means nobody waits -- which is what lets the
fast path take an idle connection without looking at the queue.

Each change of the books is one method below, synchronous and small: nothing here awaits, reads
the clock or calls the driver. The pool decides with the driver and the clock, then records the
outcome here in one step, so no other task ever sees a change half made. Reading the books is
free for the pool's other modules; changing them goes through these methods, and
``tests/tooling/test_books_changes.py`` checks that nothing else does. ``invariant_errors``
lists what must hold between any two steps; ``tests/pool/test_books.py`` drives the books step
by step and checks it after each.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeAlias, TypeVar

from ._leaks import Stack
from ._waiters import Waiters
from .events import Reason
from .lease import Lease

if TYPE_CHECKING:
    import asyncio

__all__ = ["GROWTH_AT_ONCE", "Books", "Record", "Removal"]

C = TypeVar("C")

GROWTH_AT_ONCE: Final = 2
"""At most this many connects run at once for waiting acquirers (see ``Pool._grow``)."""

Removal: TypeAlias = Reason
"""Why the pool lets a connection go. Each reason but ``"closed"`` (the pool is closing) has its
counter of the same name in ``PoolStats``; ``aiodbpool.events.Removed`` reports it."""


@dataclass(slots=True, eq=False)
class Record(Generic[C]):
    """The pool's notes about one connection."""

    conn: C
    created_at: float
    retire_at: float  # when max_lifetime (with jitter) is reached; -inf: retire on return
    released_at: float  # when it last became available (or was opened)
    acquired_at: float = 0.0
    uses: int = 0
    lend: int = 0  # the number of its latest lend in the pool (see aiodbpool.events.Acquired)
    # What its borrower holds while it is lent: a weak reference to its Lease (so that a lease
    # its holder drops without a release can be collected, and the slot reclaimed), or the
    # connection itself for a driver without leases. None from its release until the next lend.
    handle: object = None
    # Where it was acquired, innermost call first (leak_timeout): code objects and line numbers.
    acquired_stack: Stack | None = None
    leak_reported: bool = False


class Books(Generic[C]):
    """Every connection of one pool, the slots they hold, and the acquirers waiting for one."""

    __slots__ = (
        "abandoned",
        "closing",
        "generation",
        "idle",
        "in_use",
        "lent",
        "max_size",
        "min_size",
        "opening",
        "shrinking",
        "waiters",
    )

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size = min_size  # kept open even when idle (changed by resize)
        self.max_size = max_size  # the bound on size() (changed by resize)
        self.idle: deque[Record[C]] = deque()  # most recently released at the right
        self.in_use: dict[int, Record[C]] = {}  # keyed by id(conn): drivers' objects need not
        # be hashable, and the record keeps the object alive, so the id cannot be reused.
        self.lent: dict[int, Record[C]] = {}  # the records callers hold, by id() of what the
        # caller holds: a lease is held weakly, but its entry goes when it is collected (the
        # pool reclaims it), so no other live object can have that id.
        self.opening = 0  # connects under way; each holds a slot
        self.closing = 0  # closes under way in the background; each still holds a slot
        self.waiters: Waiters[Record[C]] = Waiters()
        self.abandoned: dict[int, Record[C]] = {}  # off the books, terminated by close() while
        # lent without a lease, by id(conn): their late release is ignored (a lease says so).
        self.generation = 0  # bumped by expire(): connects begun before it are retired
        self.shrinking = False  # resize() went below the size: returning connections may close

    # -------------------------------------------------------------------- reading

    def size(self) -> int:
        """Connections that exist or hold a slot: idle, in use, opening and closing."""
        return len(self.idle) + len(self.in_use) + self.opening + self.closing

    def has_room(self) -> bool:
        """Whether one more connect may start without exceeding ``max_size``."""
        return self.size() < self.max_size

    def above_max_size(self) -> int:
        """How many connections exceed ``max_size`` after a ``resize`` down, not counting those
        already closing (they are on their way out); zero or less when none do."""
        return self.size() - self.closing - self.max_size

    def queued_beyond_room(self) -> int:
        """Waiters that neither the connects under way nor the free room will serve: those that
        wait for a connection in use to come back, which is what ``max_waiting`` bounds."""
        free = max(0, self.max_size - self.size())
        return len(self.waiters) - self.opening - free

    def waiters_unserved(self) -> bool:
        """Whether some waiter has no connect under way for it, while there is room for one."""
        return len(self.waiters) > self.opening and self.size() < self.max_size

    # -------------------------------------------------------------------- opening

    def reserve_slots(self, count: int = 1) -> None:
        """Take slots for connects about to start; each ends in ``give_up_slot`` or
        ``book_connected``."""
        self.opening += count

    def give_up_slot(self) -> None:
        """A connect failed or was cancelled: its slot is free again."""
        self.opening -= 1

    def book_connected(self, conn: C, begun_in: int, now: float, lifetime: float) -> Record[C]:
        """A connect begun in generation ``begun_in`` succeeded: its slot becomes its record,
        booked in use, in one step (so the connection counts in ``size()`` at every moment).

        If ``expire()`` or a ``resize()`` down happened while it connected, it is marked to be
        used once at most.
        """
        self.opening -= 1
        record = Record(conn=conn, created_at=now, retire_at=now + lifetime, released_at=now)
        if begun_in != self.generation or self.size() >= self.max_size:
            record.retire_at = -math.inf
        self.in_use[id(conn)] = record
        return record

    # -------------------------------------------------------------------- lending

    def take_top_idle(self) -> Record[C]:
        """Book the most recently released idle connection in use, to be checked and lent."""
        record = self.idle.pop()
        self.in_use[id(record.conn)] = record
        return record

    def take_idle_to_check(self, record: Record[C]) -> bool:
        """Book this idle record in use, to be checked (``Pool.check``); False if it is not idle
        any more (lent or closed meanwhile)."""
        try:
            self.idle.remove(record)
        except ValueError:
            return False
        self.in_use[id(record.conn)] = record
        return True

    def join_line(self, *, first: bool = False) -> asyncio.Future[Record[C]]:
        """Queue an acquirer (at the head if ``first``: it had its turn, but its connection
        proved unusable); it then awaits ``waiters.take`` with the ticket returned."""
        return self.waiters.join(first=first)

    def lend(self, record: Record[C], key: int, handle: object, now: float) -> None:
        """Lend a record booked in use to a caller who holds ``handle`` (filed under ``key``,
        the id of what the caller holds)."""
        self.lent[key] = record
        record.handle = handle
        record.uses += 1
        record.acquired_at = now

    def lend_idle(self, record: Record[C], key: int, handle: object, now: float) -> None:
        """Lend the top idle record, ``record``, to a caller (the fast path): ``take_top_idle``
        and ``lend`` in one step, written out because it runs on every fast acquire."""
        self.idle.pop()
        self.in_use[id(record.conn)] = record
        self.lent[key] = record
        record.handle = handle
        record.uses += 1
        record.acquired_at = now

    def end_lend(self, key: int) -> Record[C] | None:
        """The caller gave back what it holds under ``key``: return its record, still booked
        in use (to be reset), or None if nothing is lent under that key."""
        record = self.lent.pop(key, None)
        if record is not None:
            record.handle = None
        return record

    def unlend(self, record: Record[C]) -> object:
        """End the lend of ``record`` from the pool's side (a lease collected, a release from
        another loop, the forced end of close()); return what its borrower holds (the lease,
        or the connection), or None if its lease is already gone."""
        handle, record.handle = record.handle, None
        holder = _deref(handle)
        if holder is not None and self.lent.get(id(holder)) is record:
            del self.lent[id(holder)]
        elif handle is not None:
            for key in [key for key, lent in self.lent.items() if lent is record]:
                del self.lent[key]
        return holder

    # -------------------------------------------------------------------- returning

    def hand_over(self, record: Record[C]) -> bool:
        """Give a record booked in use to the oldest waiter, as it is (a new connection, which
        needs no check); it stays booked in use, now for that waiter. False if nobody waits."""
        return self.waiters.offer(record)

    def hand_over_or_park(self, record: Record[C], now: float) -> None:
        """A record booked in use is available again: give it to the oldest waiter (it stays
        booked in use, now for that waiter), or park it idle."""
        record.released_at = now
        if self.waiters.offer(record):
            return
        del self.in_use[id(record.conn)]
        self.idle.append(record)

    def still_shrinking(self) -> bool:
        """After a ``resize()`` down: whether the pool is still above its new bound, so that a
        returning connection must close. Once it is not, the check is switched off."""
        if self.above_max_size() > 0:
            return True
        self.shrinking = False
        return False

    # -------------------------------------------------------------------- removing

    def still_booked(self, record: Record[C]) -> bool:
        """Whether a record the pool took off ``lent`` (to reset, validate or hand to a waiter)
        is still booked in use. If ``close()`` abandoned it meanwhile (and terminated it), it is
        forgotten and the answer is False: nothing is left to do with it."""
        key = id(record.conn)
        if self.in_use.get(key) is record:
            return True
        self.abandoned.pop(key, None)
        return False

    def unbook(self, record: Record[C]) -> bool:
        """Take a record booked in use off the books, to be closed; False (see ``still_booked``)
        if ``close()`` already abandoned it."""
        if not self.still_booked(record):
            return False
        del self.in_use[id(record.conn)]
        return True

    def forget_abandoned(self, key: int) -> bool:
        """A connection released after close() abandoned it (lent without a lease): forget it.
        Return whether it was one."""
        return self.abandoned.pop(key, None) is not None

    def take_oldest_idle(self) -> Record[C]:
        """Take the idle connection released longest ago off the books, to be closed."""
        return self.idle.popleft()

    def take_idle_records(self, records: Iterable[Record[C]]) -> None:
        """Take these idle connections off the books, to be closed; the others stay idle in
        their order."""
        leaving = set(map(id, records))
        if leaving:
            self.idle = deque(record for record in self.idle if id(record) not in leaving)

    def take_all_idle(self) -> list[Record[C]]:
        """Take every idle connection off the books, to be closed."""
        records = list(self.idle)
        self.idle.clear()
        return records

    def fail_oldest_waiter(self, error: BaseException) -> None:
        """The oldest waiter leaves the line with ``error`` (a connect made for it failed)."""
        self.waiters.fail_oldest(error)

    def fail_all_waiters(self, make_error: Callable[[], BaseException]) -> None:
        """Every waiter leaves the line with an error of its own (the pool is closing)."""
        self.waiters.fail_all(make_error)

    def start_close(self) -> None:
        """A connection taken off the books starts closing politely in the background: it keeps
        its slot until ``close_done``."""
        self.closing += 1

    def close_done(self) -> None:
        """A background close ended (closed or terminated): its slot is free."""
        self.closing -= 1

    def abandon_in_use(self) -> list[tuple[Record[C], Lease[C] | None]]:
        """The forced end of ``close()``: take every connection still in use off the books, to
        be terminated, with the lease that must end with it (if it was lent under one). One lent
        without a lease is remembered in ``abandoned``, so that its late release is ignored."""
        leaving: list[tuple[Record[C], Lease[C] | None]] = []
        for key, record in self.in_use.items():
            holder = self.unlend(record)
            if isinstance(holder, Lease):
                leaving.append((record, holder))
            else:
                self.abandoned[key] = record
                leaving.append((record, None))
        self.in_use.clear()
        return leaving

    def forget_all(self) -> None:
        """Forget every connection without closing any (a forked child's copy of the books:
        the connections are the parent's)."""
        self.idle.clear()
        self.in_use.clear()
        self.lent.clear()
        self.abandoned.clear()
        self.opening = self.closing = 0

    # -------------------------------------------------------------------- changing the bounds

    def resize(self, min_size: int, max_size: int) -> list[Record[C]]:
        """Set new bounds; return the idle connections now in excess (oldest first), taken off
        the books to be closed. Excess still in use closes as it comes back (``shrinking``)."""
        self.min_size, self.max_size = min_size, max_size
        excess: list[Record[C]] = []
        while self.idle and self.above_max_size() > 0:
            excess.append(self.idle.popleft())
        self.shrinking = self.above_max_size() > 0
        return excess

    def expire(self) -> list[Record[C]]:
        """Start a new generation: connections in use retire when they come back, connects
        under way are used once at most. Return the idle ones, taken off the books to be
        closed."""
        self.generation += 1
        for record in self.in_use.values():
            record.retire_at = -math.inf
        return self.take_all_idle()

    # -------------------------------------------------------------------- self-check

    def invariant_errors(self, *, accepting: bool, closed: bool) -> list[str]:
        """Describe every broken invariant (empty when all hold). ``accepting``: the pool is
        open, so waiters must be served; ``closed``: it has finished closing."""
        errors: list[str] = []
        size = self.size()
        if self.opening and size > self.max_size:
            # (Without opening, size may exceed max_size only after resize() shrank the bound.)
            errors.append(f"opening connections beyond max_size {self.max_size}")
        if self.opening < 0 or self.closing < 0:
            errors.append(f"negative counts: opening={self.opening} closing={self.closing}")
        idle_ids = {id(record.conn) for record in self.idle}
        if len(idle_ids) != len(self.idle):
            errors.append("a connection is idle twice")
        if idle_ids & self.in_use.keys():
            errors.append("a connection is both idle and in use")
        if self.idle and self.waiters:
            errors.append("acquirers wait while connections are idle")
        if accepting and self.waiters_unserved() and self.opening < GROWTH_AT_ONCE:
            errors.append("acquirers wait while a connection could be opening for them")
        if closed and size:
            errors.append(f"closed pool still holds {size} connections")
        lent = {key for key, record in self.in_use.items() if record.handle is not None}
        if {id(record.conn) for record in self.lent.values()} != lent:
            errors.append("the lent records and the records with a handle differ")
        holders = [(key, _deref(record.handle)) for key, record in self.lent.items()]
        if any(holder is not None and id(holder) != key for key, holder in holders):
            errors.append("a lent record is filed under another handle")
        return errors


def _deref(handle: object) -> object:
    """What a record's ``handle`` stands for: the lease (None once collected), or the connection."""
    return handle() if isinstance(handle, weakref.ref) else handle
