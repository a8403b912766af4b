"""Checks for the pool's options, so a bad value fails at construction with a message naming it.

Each function returns the value in the form the pool stores (``None`` becomes ``math.inf`` where
"no limit" is meant), so the hot path compares numbers without testing for ``None``.
"""

from __future__ import annotations

import math

__all__ = ["check_clock", "check_count", "check_interval", "check_seconds", "seconds_or_inf"]


def _is_number(value: object) -> bool:
    # bool is an int subclass, but `max_size=True` is always a mistake.
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_count(name: str, value: object, *, minimum: int, allow_none: bool = False) -> int | None:
    """An integer option such as ``max_size``: a whole number, at least ``minimum``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


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
    assert seconds is not None  # (None is not allowed)
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
