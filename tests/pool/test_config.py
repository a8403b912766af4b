"""Bad configuration fails at construction, with an error that names the option."""

from __future__ import annotations

import math
from typing import Any

import pytest
from helpers import MinimalDriver

from aiodbpool import Pool
from aiodbpool.drivers.fake import FakeDriver

NAN, INF = math.nan, math.inf

SIZES = ["min_size", "max_size", "max_waiting", "max_uses"]
"""Whole numbers."""
TIMEOUTS = [
    "acquire_timeout",
    "connect_timeout",
    "ping_timeout",
    "reset_timeout",
    "close_timeout",
    "leak_timeout",
]
"""Seconds above zero, or None for no limit."""
DURATIONS = ["max_idle", "max_lifetime", "validate_after_idle"]
"""Seconds, or None for never."""
REQUIRED_SECONDS = ["maintenance_interval", "backoff_initial", "backoff_max"]
"""Seconds above zero; None is not allowed."""

BAD_VALUES: list[tuple[str, object]] = [
    *[(name, value) for name in SIZES for value in (-1, 1.5, True, "3", NAN)],
    ("max_size", 0),
    ("max_uses", 0),
    ("min_size", None),
    ("max_size", None),
    *[(name, value) for name in TIMEOUTS for value in (0, -1, NAN, INF, True, "5")],
    *[(name, value) for name in DURATIONS for value in (-1, NAN, INF, False, "5")],
    ("max_idle", 0),
    ("max_lifetime", 0),
    *[(name, value) for name in REQUIRED_SECONDS for value in (0, -0.5, None, NAN, INF, True)],
]


@pytest.mark.parametrize(("option", "value"), BAD_VALUES)
def test_a_bad_option_value_is_refused_naming_the_option(option: str, value: object) -> None:
    options: dict[str, Any] = {option: value}
    if option == "min_size" and isinstance(value, int) and value > 0:
        options["max_size"] = 10

    with pytest.raises((ValueError, TypeError), match=option):
        Pool(FakeDriver(), **options)


@pytest.mark.parametrize(
    "options",
    [
        {"min_size": 0, "max_size": 1},
        {"min_size": 5, "max_size": 5},
        {"max_waiting": 0, "max_uses": 1},
        {"validate_after_idle": 0},
        dict.fromkeys(TIMEOUTS + DURATIONS + ["max_waiting", "max_uses"]),
        {"acquire_timeout": 0.001, "maintenance_interval": 0.01},
        {"backoff_initial": 2, "backoff_max": 2},
    ],
)
def test_edge_values_are_accepted(options: dict[str, Any]) -> None:
    Pool(FakeDriver(), **options)


def test_min_size_above_max_size_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"min_size \(5\) must not exceed max_size \(4\)"):
        Pool(FakeDriver(), min_size=5, max_size=4)


def test_backoff_initial_above_backoff_max_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"backoff_initial \(3.0\) must not exceed backoff_max"):
        Pool(FakeDriver(), backoff_initial=3, backoff_max=2)


@pytest.mark.parametrize("name", ["", 3, None, b"app"])
def test_a_name_must_be_a_non_empty_string(name: object) -> None:
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Pool(FakeDriver(), name=name)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1, "yes", None])
def test_close_driver_must_be_a_bool(value: object) -> None:
    with pytest.raises(TypeError, match="close_driver must be True or False"):
        Pool(FakeDriver(), close_driver=value)  # type: ignore[arg-type]


def test_a_clock_must_be_callable() -> None:
    with pytest.raises(ValueError, match="clock must be a callable"):
        Pool(FakeDriver(), clock=5.0)  # type: ignore[arg-type]


def _broken_clock() -> float:
    raise OSError("no time today")


@pytest.mark.parametrize(
    ("clock", "says"),
    [
        (lambda: "x", "it returned 'x'"),
        (lambda: None, "it returned None"),
        (lambda: float("nan"), "it returned nan"),
        (lambda: True, "it returned True"),
        (_broken_clock, "calling it raised OSError"),
    ],
)
def test_a_clock_is_tried_when_the_pool_is_built(clock: Any, says: str) -> None:
    with pytest.raises(ValueError, match=f"clock must be a callable returning seconds.*{says}"):
        Pool(FakeDriver(), clock=clock)


@pytest.mark.parametrize("interval", [1e-9, 0.009, 0.0])
def test_a_maintenance_interval_below_10_ms_is_refused(interval: float) -> None:
    """Shorter, an idle pool would keep a core busy running maintenance rounds for nothing."""
    with pytest.raises(ValueError, match=r"maintenance_interval must be"):
        Pool(FakeDriver(), maintenance_interval=interval)


def test_the_smallest_maintenance_interval_names_its_floor() -> None:
    with pytest.raises(ValueError, match=r"at least 0.01 seconds \(10 ms\), got 1e-09"):
        Pool(FakeDriver(), maintenance_interval=1e-9)


def test_an_object_that_is_not_a_driver_is_refused() -> None:
    with pytest.raises(TypeError, match=r"driver object has no connect\(\) method"):
        Pool(object())  # type: ignore[arg-type]


def test_a_driver_missing_one_method_is_refused_naming_it() -> None:
    class NoPing(MinimalDriver):
        ping = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"driver NoPing has no ping\(\) method"):
        Pool(NoPing())  # type: ignore[arg-type]
