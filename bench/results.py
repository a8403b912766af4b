"""What a benchmark run produces: one :class:`Measurement` per workload and contender.

A measurement keeps every repeat's figure, so the report can give the median and the spread
(min..max) and the JSON file keeps the raw numbers for anyone who wants to check them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

__all__ = ["METRICS", "Measurement", "Summary"]

METRICS: dict[str, str] = {
    "us_per_op": "us/op",
    "ops_per_s": "ops/s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "requests_per_s": "req/s",
}
"""Every metric a workload may report, and its short label for tables and plots. Lower is better
for times, higher for rates."""


@dataclass(frozen=True, slots=True)
class Summary:
    """The median of the repeats, and the lowest and highest repeat."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values))


@dataclass(slots=True)
class Measurement:
    """One contender's figures on one workload: a list of values per metric, one per repeat."""

    workload: str
    contender: str
    runs: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **figures: float) -> None:
        """Record one repeat: ``add(ops_per_s=..., p50_ms=..., p99_ms=...)``."""
        for metric, value in figures.items():
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
            self.runs.setdefault(metric, []).append(value)

    def summary(self, metric: str) -> Summary:
        return Summary.of(self.runs[metric])

    def median(self, metric: str) -> float:
        return statistics.median(self.runs[metric])

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "contender": self.contender,
            "metrics": {
                metric: {
                    "median": summary.median,
                    "min": summary.low,
                    "max": summary.high,
                    "runs": values,
                }
                for metric, values in self.runs.items()
                for summary in (Summary.of(values),)
            },
        }
