"""The pool's options, checked once into one frozen ``PoolOptions``, so a bad value fails at
construction with a message naming it, and the pool reads typed values afterwards, never ``None``
where a value is needed, and never an ``assert`` to tell a type checker so.

Each check returns the value in the form the pool reads (``None`` becomes ``math.inf`` where
"no limit" is meant), so the hot path compares numbers without testing for ``None``. The checks
are also used alone, for the arguments of ``resize``, ``acquire`` and ``close``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Literal, overload

from ._clock import Clock, monotonic

__all__ = [
    "MIN_MAINTENANCE_INTERVAL",
    "PoolOptions",
    "check_clock",
    "check_count",
    "check_interval",
    "check_sizes",
    "check_seconds",
    "seconds_or_inf",
]

MIN_MAINTENANCE_INTERVAL: Final = 0.01
"""The shortest ``maintenance_interval`` accepted: 10 ms is short enough for tests, while a
shorter one would keep an idle pool busy on the CPU for nothing."""


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Pool's keyword arguments, checked (see ``Pool`` for what each one means).

    Frozen: nothing changes them while the pool runs. ``min_size`` and ``max_size`` are the
    sizes the pool was built with; ``resize()`` changes the pool's live sizes, which the books
    keep (``Books.min_size`` and ``max_size``), not these. Built only by ``check``, which tests
    every value in the order of ``Pool``'s signature, so that of several bad values the first
    is reported.
    """

    name: str
    min_size: int
    max_size: int
    acquire_timeout: float | None  # None: wait as long as it takes
    max_waiting: int | None  # None: no bound
    max_idle: float  # inf: never
    max_lifetime: float  # inf: never
    max_uses: float  # inf: no bound (a float, to compare with a count without a None test)
    validate_after_idle: float  # inf: never
    connect_timeout: float | None
    ping_timeout: float | None
    reset_timeout: float | None
    close_timeout: float | None
    leak_timeout: float | None  # None: leaks are not looked for
    maintenance_interval: float
    backoff_initial: float
    backoff_max: float
    breaker_threshold: int | None  # None: no circuit breaker
    clock: Clock
    close_driver: bool
    setup: Callable[[Any], Awaitable[None]] | None  # run on every lend (the option ``setup``)
    connection_check: Callable[[Any], Coroutine[Any, Any, None]] | None  # replaces the ping
    reconnect_timeout: float  # how long connects may fail before reconnect_failed is called
    reconnect_failed: Callable[[Any], None] | None  # told of an outage that long

    @classmethod
    def check(
        cls,
        driver: object,
        *,
        name: object,
        min_size: object,
        max_size: object,
        acquire_timeout: object,
        max_waiting: object,
        max_idle: object,
        max_lifetime: object,
        max_uses: object,
        validate_after_idle: object,
        connect_timeout: object,
        ping_timeout: object,
        reset_timeout: object,
        close_timeout: object,
        leak_timeout: object,
        maintenance_interval: object,
        backoff_initial: object,
        backoff_max: object,
        breaker_threshold: object,
        clock: Clock | None,
        close_driver: object,
        setup: object = None,
        check: object = None,
        reconnect_timeout: object = 300.0,
        reconnect_failed: object = None,
    ) -> PoolOptions:
        """Check every option, raise for the first bad one, and return them typed.

        ``driver`` is not an option, but its contract is checked here, right after the name, so
        that errors keep the order they have always had.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"name must be a non-empty string (it names the pool in logs, stats and errors), "
                f"got {name!r}"
            )
        check_driver(driver)
        min_ = check_count("min_size", min_size, minimum=0)
        max_ = check_count("max_size", max_size, minimum=1)
        check_sizes(min_, max_)
        if clock is not None:
            check_clock(clock)
        if not isinstance(close_driver, bool):
            raise TypeError(f"close_driver must be True or False, got {close_driver!r}")
        acquire = check_seconds("acquire_timeout", acquire_timeout, allow_none=True)
        waiting = check_count("max_waiting", max_waiting, minimum=0, allow_none=True)
        idle = seconds_or_inf("max_idle", max_idle)
        lifetime = seconds_or_inf("max_lifetime", max_lifetime)
        uses = check_count("max_uses", max_uses, minimum=1, allow_none=True)
        validate = seconds_or_inf("validate_after_idle", validate_after_idle, allow_zero=True)
        connect = check_seconds("connect_timeout", connect_timeout, allow_none=True)
        ping = check_seconds("ping_timeout", ping_timeout, allow_none=True)
        reset = check_seconds("reset_timeout", reset_timeout, allow_none=True)
        close = check_seconds("close_timeout", close_timeout, allow_none=True)
        leak = check_seconds("leak_timeout", leak_timeout, allow_none=True)
        interval = check_interval(
            "maintenance_interval", maintenance_interval, floor=MIN_MAINTENANCE_INTERVAL
        )
        backoff_first = check_seconds("backoff_initial", backoff_initial)
        backoff_cap = check_seconds("backoff_max", backoff_max)
        if backoff_first > backoff_cap:
            raise ValueError(
                f"backoff_initial ({backoff_first}) must not exceed backoff_max ({backoff_cap}): "
                "lower backoff_initial or raise backoff_max"
            )
        threshold = check_count("breaker_threshold", breaker_threshold, minimum=1, allow_none=True)
        for option, hook in (("setup", setup), ("check", check)):
            if hook is not None and not callable(hook):
                raise TypeError(
                    f"{option} must be an async function of one connection, or None; got {hook!r}"
                )
        reconnect = check_seconds("reconnect_timeout", reconnect_timeout)
        if reconnect_failed is not None and not callable(reconnect_failed):
            raise TypeError(
                f"reconnect_failed must be a function of the pool, or None; got "
                f"{reconnect_failed!r}"
            )
        return cls(
            name=name,
            min_size=min_,
            max_size=max_,
            acquire_timeout=acquire,
            max_waiting=waiting,
            max_idle=idle,
            max_lifetime=lifetime,
            max_uses=math.inf if uses is None else uses,
            validate_after_idle=validate,
            connect_timeout=connect,
            ping_timeout=ping,
            reset_timeout=reset,
            close_timeout=close,
            leak_timeout=leak,
            maintenance_interval=interval,
            backoff_initial=backoff_first,
            backoff_max=backoff_cap,
            breaker_threshold=threshold,
            clock=clock or monotonic,
            close_driver=close_driver,
            setup=setup,  # type: ignore[arg-type]  # checked callable above
            connection_check=check,  # type: ignore[arg-type]  # checked callable above
            reconnect_timeout=reconnect,
            reconnect_failed=reconnect_failed,
        )


def check_driver(driver: object) -> None:
    """The driver has the methods of the contract (``aiodbpool.Driver``), so that a missing one
    fails here rather than at the pool's first connect."""
    for method in ("connect", "close", "ping", "reset", "is_closed"):
        if not callable(getattr(driver, method, None)):
            raise TypeError(
                f"driver {type(driver).__name__} has no {method}() method: a driver needs "
                "connect, close, ping, reset and is_closed (see aiodbpool.Driver)"
            )


def _is_number(value: object) -> bool:
    # bool is an int subclass, but `max_size=True` is always a mistake.
    return isinstance(value, int | float) and not isinstance(value, bool)


@overload
def check_count(
    name: str, value: object, *, minimum: int, allow_none: Literal[False] = False
) -> int: ...
@overload
def check_count(name: str, value: object, *, minimum: int, allow_none: bool) -> int | None: ...
def check_count(name: str, value: object, *, minimum: int, allow_none: bool = False) -> int | None:
    """An integer option such as ``max_size``: a whole number, at least ``minimum``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_sizes(min_size: int, max_size: int) -> None:
    """Refuse a ``min_size`` above ``max_size`` (for the constructor and ``resize``)."""
    if min_size > max_size:
        raise ValueError(
            f"min_size ({min_size}) must not exceed max_size ({max_size}): lower min_size or "
            "raise max_size"
        )


@overload
def check_seconds(
    name: str, value: object, *, allow_none: Literal[False] = False, allow_zero: bool = False
) -> float: ...
@overload
def check_seconds(
    name: str, value: object, *, allow_none: bool, allow_zero: bool = False
) -> float | None: ...
def check_seconds(
    name: str, value: object, *, allow_none: bool = False, allow_zero: bool = False
) -> float | None:
    """A duration option such as ``acquire_timeout``: a finite number of seconds above zero."""
    if value is None and allow_none:
        return None
    if not _is_number(value):
        expected = "a number of seconds" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return seconds


def check_interval(name: str, value: object, *, floor: float) -> float:
    """A period such as ``maintenance_interval``: a number of seconds, at least ``floor``."""
    seconds = check_seconds(name, value)
    if seconds < floor:
        raise ValueError(
            f"{name} must be at least {floor:g} seconds ({floor * 1000:g} ms), got {value!r}"
        )
    return seconds


def check_clock(clock: object) -> None:
    """The ``clock`` option: a callable returning a finite number of seconds, checked by calling
    it once, so that a wrong one fails here rather than at the pool's first use of it."""
    if not callable(clock):
        raise ValueError(f"clock must be a callable returning seconds, got {clock!r}")
    try:
        now = clock()
    except Exception as error:
        raise ValueError(
            f"clock must be a callable returning seconds; calling it raised {error!r}"
        ) from error
    if not _is_number(now) or not math.isfinite(now):
        raise ValueError(f"clock must be a callable returning seconds, and it returned {now!r}")


def seconds_or_inf(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A duration where ``None`` means "never": returned as ``math.inf``."""
    seconds = check_seconds(name, value, allow_none=True, allow_zero=allow_zero)
    return math.inf if seconds is None else seconds
