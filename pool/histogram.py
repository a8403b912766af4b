"""Durations counted in fixed buckets: how long connects, waits and uses take.

A histogram answers "how often did an acquire wait longer than 100 ms?", which a total and a
maximum cannot. The pool records three of them (create, wait and use time, after OpenTelemetry's
``db.client.connection.*`` metrics) and ``aiodbpool.Pool.stats`` returns snapshots of them,
ready for Prometheus or any other exporter.

Recording is one binary search over the bucket bounds and two additions: cheap enough for the
release fast path, and with no lock (the pool lives in one event loop thread).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

__all__ = ["DURATION_BUCKETS", "DurationHistogram"]

DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds, in seconds, of the buckets; one more bucket above the last catches the rest."""


@dataclass(frozen=True, slots=True)
class DurationHistogram:
    """A snapshot of durations counted per bucket.

    ``counts[i]`` is the number of durations ``d`` with ``bounds[i-1] < d <= bounds[i]``; the
    last count, one past the bounds, holds those above the last bound. Prometheus wants
    cumulative counts: see ``cumulative``.
    """

    bounds: tuple[float, ...]
    """Upper bounds of the buckets, in seconds, increasing."""
    counts: tuple[int, ...]
    """Durations per bucket; ``len(counts) == len(bounds) + 1``."""
    total: float
    """The sum of all durations recorded, in seconds."""

    @property
    def count(self) -> int:
        """How many durations were recorded."""
        return sum(self.counts)

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain lists and numbers, ready for JSON."""
        return {
            "bounds": list(self.bounds),
            "counts": list(self.counts),
            "count": self.count,
            "total": self.total,
        }

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, durations at or below it)`` for each bucket, ending with infinity."""
        running = 0
        result = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


class _Recorder:
    """The live counts behind a ``DurationHistogram``; only the pool records into it."""

    __slots__ = ("_bounds", "_counts", "_total")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0

    def record(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._total += seconds

    def snapshot(self, *, extra_in_first_bucket: int = 0) -> DurationHistogram:
        """The counts now; ``extra_in_first_bucket`` adds durations known to be (near) zero
        without having been recorded one by one."""
        counts = list(self._counts)
        counts[0] += extra_in_first_bucket
        return DurationHistogram(bounds=self._bounds, counts=tuple(counts), total=self._total)
