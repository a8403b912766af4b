"""The books alone, driven step by step: every named change, and the invariants after each.

No pool, no driver, no clock: what ``_books.py`` promises is that each step leaves the books
balanced when the pool calls the steps in the order it does. The pool's own tests show that it
does; these show what each step does to the books.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import pytest

from aiodbpool import Lease
from aiodbpool._books import GROWTH_AT_ONCE, Books, Record


class Conn:
    """A stand-in connection: the books only ever use its identity."""


def balanced(books: Books[Any], *, accepting: bool = True) -> None:
    assert books.invariant_errors(accepting=accepting, closed=False) == []


def connected(books: Books[Conn], now: float = 0.0, lifetime: float = 100.0) -> Record[Conn]:
    """Reserve a slot and book a new connection in it, as a connect does."""
    books.reserve_slots()
    return books.book_connected(Conn(), books.generation, now, lifetime)


def parked(books: Books[Conn], count: int) -> list[Record[Conn]]:
    """``count`` new connections, parked idle in the order made."""
    records = [connected(books) for _ in range(count)]
    for record in records:
        books.hand_over_or_park(record, 0.0)
    return records


def test_a_connection_goes_from_slot_to_idle_to_lent_and_back() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=2)
    books.reserve_slots()
    assert (books.size(), books.opening) == (1, 1)
    balanced(books)
    record = books.book_connected(Conn(), books.generation, now=5.0, lifetime=60.0)
    assert (books.opening, list(books.in_use.values())) == (0, [record])
    assert (record.created_at, record.released_at, record.retire_at) == (5.0, 5.0, 65.0)
    balanced(books)
    books.hand_over_or_park(record, now=6.0)
    assert (list(books.idle), books.in_use, record.released_at) == ([record], {}, 6.0)
    balanced(books)
    assert books.take_top_idle() is record
    handle = object()
    books.lend(record, id(handle), handle, now=7.0)
    assert (books.lent, record.handle, record.uses, record.acquired_at) == (
        {id(handle): record},
        handle,
        1,
        7.0,
    )
    balanced(books)
    assert books.end_lend(id(handle)) is record
    assert (books.lent, record.handle, books.size()) == ({}, None, 1)
    balanced(books)
    books.hand_over_or_park(record, now=8.0)
    assert books.size() == 1
    balanced(books)


def test_the_fast_path_lends_the_top_idle_connection_in_one_step() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=2)
    below, top = parked(books, 2)
    handle = object()
    books.lend_idle(top, id(handle), handle, now=3.0)
    assert (list(books.idle), books.in_use, books.lent) == (
        [below],
        {id(top.conn): top},
        {id(handle): top},
    )
    assert (top.handle, top.uses, top.acquired_at) == (handle, 1, 3.0)
    balanced(books)


def test_a_failed_connect_gives_its_slot_back() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=1)
    books.reserve_slots(1)
    assert not books.has_room()
    books.give_up_slot()
    assert (books.size(), books.has_room()) == (0, True)
    balanced(books)


def test_ending_a_lend_that_does_not_exist_changes_nothing() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=1)
    record = connected(books)
    assert books.end_lend(id(record.conn)) is None
    assert books.in_use == {id(record.conn): record}


def test_a_connect_begun_before_expire_or_a_resize_down_is_used_once() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=2)
    books.reserve_slots()
    begun_in = books.generation
    assert books.expire() == []
    assert books.book_connected(Conn(), begun_in, 0.0, 100.0).retire_at == -math.inf
    books.reserve_slots()
    books.resize(0, 1)  # one in use already fills the new bound
    assert books.book_connected(Conn(), books.generation, 0.0, 100.0).retire_at == -math.inf


async def test_a_returning_connection_goes_to_the_oldest_waiter_that_still_waits() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=2)
    gave_up = books.join_line()
    oldest = books.join_line()
    newest = books.join_line()
    gave_up.cancel()
    record = connected(books)
    assert books.waiters_unserved()
    books.hand_over_or_park(record, 0.0)
    assert oldest.result() is record
    assert not newest.done()
    assert books.in_use == {id(record.conn): record}  # booked in use, now for the waiter
    assert not books.idle
    first = books.join_line(first=True)  # an acquirer whose connection proved unusable
    second = connected(books)
    assert books.hand_over(second)
    assert first.result() is second
    assert not newest.done()
    books.fail_all_waiters(lambda: RuntimeError("closing"))
    assert isinstance(newest.exception(), RuntimeError)
    assert not books.hand_over(second)  # nobody waits any more


async def test_the_line_beyond_the_room_counts_only_waiters_nothing_will_serve() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=3)
    parked(books, 1)
    books.take_top_idle()
    tickets = [books.join_line() for _ in range(4)]
    books.reserve_slots()  # one connect under way
    # 4 waiters: one served by the connect, one by the free room; 2 wait for a return.
    assert books.queued_beyond_room() == 2
    assert books.waiters_unserved()
    books.reserve_slots()
    assert not books.waiters_unserved()  # no room left for another connect
    for ticket in tickets:
        ticket.cancel()


def test_unbook_takes_a_record_off_the_books_unless_close_abandoned_it() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=2)
    record = connected(books)
    assert books.unbook(record)
    assert books.size() == 0
    abandoned = connected(books)
    assert books.abandon_in_use() == [(abandoned, None)]
    assert books.abandoned == {id(abandoned.conn): abandoned}
    assert not books.still_booked(abandoned)  # and it is forgotten now
    assert books.abandoned == {}
    assert not books.unbook(abandoned)


def test_a_late_release_of_an_abandoned_connection_is_recognized_once() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=1)
    record = connected(books)
    books.lend(record, id(record.conn), record.conn, 0.0)
    books.abandon_in_use()
    assert (books.lent, books.in_use) == ({}, {})
    assert books.forget_abandoned(id(record.conn))
    assert not books.forget_abandoned(id(record.conn))


def test_abandoning_returns_the_leases_that_must_end() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=1)
    record = connected(books)
    lease: Lease[Conn] = Lease(record.conn, None)  # type: ignore[arg-type]  # no pool needed
    books.lend(record, id(lease), weakref.ref(lease), 0.0)
    assert books.abandon_in_use() == [(record, lease)]
    assert books.abandoned == {}  # the lease itself will say "closed"


def test_unlend_finds_the_record_of_a_collected_lease() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=1)
    record = connected(books)
    lease: Lease[Conn] = Lease(record.conn, None)  # type: ignore[arg-type]
    key = id(lease)
    books.lend(record, key, weakref.ref(lease), 0.0)
    del lease  # collected: the weak reference is dead, the entry is still filed under its id
    assert books.unlend(record) is None
    assert (books.lent, record.handle) == ({}, None)
    balanced(books)


def test_resize_down_returns_the_oldest_idle_excess_and_marks_the_rest() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=4)
    oldest, middle, newest = parked(books, 3)
    lent = connected(books)
    assert books.resize(0, 2) == [oldest, middle]
    assert (list(books.idle), books.size(), books.shrinking) == ([newest], 2, False)
    more: Books[Conn] = Books(min_size=0, max_size=3)
    parked(more, 1)
    in_use = [connected(more), connected(more)]
    assert len(more.resize(0, 1)) == 1
    assert more.shrinking  # two in use for a bound of one: the first back must close
    assert more.still_shrinking()
    more.unbook(in_use[0])
    assert (more.still_shrinking(), more.shrinking) == (False, False)  # and it stays off
    assert lent.retire_at == 100.0


def test_expire_starts_a_generation_and_returns_every_idle_connection() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=3)
    idle = parked(books, 2)
    in_use = connected(books)
    assert sorted(map(id, books.expire())) == sorted(map(id, idle))
    assert (books.generation, in_use.retire_at, len(books.idle)) == (1, -math.inf, 0)


def test_taking_chosen_idle_connections_keeps_the_others_in_order() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=4)
    first, second, third, fourth = parked(books, 4)
    books.take_idle_records([second, fourth])
    assert list(books.idle) == [first, third]
    books.take_idle_records([])
    assert books.take_oldest_idle() is first
    assert books.take_all_idle() == [third]


def test_a_polite_close_keeps_its_slot_until_it_ends() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=1)
    record = connected(books)
    books.unbook(record)
    books.start_close()
    assert (books.size(), books.above_max_size()) == (1, -1)
    books.close_done()
    assert books.size() == 0


def test_forget_all_leaves_nothing() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=3)
    parked(books, 1)
    connected(books)
    books.reserve_slots()
    books.start_close()
    books.forget_all()
    assert books.size() == 0
    assert books.invariant_errors(accepting=False, closed=True) == []


@pytest.mark.parametrize(
    ("break_it", "complaint"),
    [
        (lambda books: books.reserve_slots(3), "opening connections beyond max_size"),
        (lambda books: books.give_up_slot(), "negative counts"),
        (lambda books: books.idle.append(books.idle[0]), "idle twice"),
        (lambda books: books.in_use.update({id(books.idle[0].conn): books.idle[0]}), "both idle"),
        (lambda books: books.join_line(), "acquirers wait while connections are idle"),
        (lambda books: books.lent.update({1: books.idle[0]}), "lent records"),
    ],
)
async def test_the_invariant_check_finds_each_broken_rule(break_it: Any, complaint: str) -> None:
    books: Books[Conn] = Books(min_size=0, max_size=2)
    parked(books, 1)
    balanced(books)
    break_it(books)
    assert any(
        complaint in error for error in books.invariant_errors(accepting=False, closed=False)
    )


async def test_the_invariant_check_finds_waiters_nobody_opens_for() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=GROWTH_AT_ONCE + 1)
    books.join_line()
    assert books.invariant_errors(accepting=False, closed=False) == []
    assert books.invariant_errors(accepting=True, closed=False) == [
        "acquirers wait while a connection could be opening for them"
    ]
    books.reserve_slots()
    balanced(books)


def test_the_invariant_check_finds_a_closed_pool_holding_connections() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=1)
    connected(books)
    assert books.invariant_errors(accepting=False, closed=True) == [
        "closed pool still holds 1 connections"
    ]


def test_a_record_filed_under_another_handle_is_found() -> None:
    books: Books[Conn] = Books(min_size=0, max_size=1)
    record = connected(books)
    handle = object()
    books.lend(record, id(handle) + 1, handle, 0.0)
    assert books.invariant_errors(accepting=False, closed=False) == [
        "a lent record is filed under another handle"
    ]
