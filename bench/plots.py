"""PNG plots of a run's results: one figure per group of workloads, bars with min..max whiskers.

Drawn with matplotlib's object API (``Figure``, not ``pyplot``): no backend, no screen needed.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .results import METRICS, Measurement

__all__ = ["draw"]

_OURS = "#1f77b4"
_OTHERS = "#9e9e9e"


def draw(results: list[Measurement], out: Path) -> list[Path]:
    """Write the plots for the workloads present in ``results`` into ``out``; their paths."""
    panels = [
        (
            "w1_w2.png",
            "One task: microseconds per operation (log scale; lower is better)",
            [("W1", "us_per_op", "W1: acquire + release"), ("W2", "us_per_op", "W2: + SELECT 1")],
            True,
        ),
        (
            "w3.png",
            "W3: SELECT 1, 100 tasks over 10 connections",
            [
                ("W3", "ops_per_s", "operations/s (higher is better)"),
                ("W3", "p99_ms", "p99 latency, ms, wait included (lower is better)"),
            ],
            False,
        ),
        (
            "w4.png",
            "W4: a 5 ms statement, 50 tasks over 10 connections",
            [
                ("W4", "ops_per_s", "operations/s (higher is better)"),
                ("W4", "p99_ms", "p99 latency, ms (lower is better)"),
            ],
            False,
        ),
        (
            "w5.png",
            "W5: the FastAPI demo under uvicorn, pooled vs connect per request",
            [
                ("W5", "requests_per_s", "requests/s (higher is better)"),
                ("W5", "p50_ms", "p50 latency, ms (lower is better)"),
            ],
            False,
        ),
        (
            "w6.png",
            "W6: SQLite, a row by primary key",
            [
                ("W6", "us_per_op", "one task: us/op (lower is better)"),
                ("W6", "ops_per_s", "10 tasks: operations/s (higher is better)"),
            ],
            False,
        ),
    ]
    written = []
    for filename, title, charts, log_scale in panels:
        present = [chart for chart in charts if _rows(results, chart[0], chart[1])]
        if not present:
            continue
        figure = Figure(figsize=(6.5 * len(present), 0.5 * _height(results, present) + 1.6))
        axes = figure.subplots(1, len(present), squeeze=False)
        for ax, (workload, metric, label) in zip(axes[0], present, strict=True):
            _bars(ax, _rows(results, workload, metric), metric, label, log_scale)
        figure.suptitle(title)
        figure.tight_layout()
        path = out / filename
        figure.savefig(path, dpi=110)
        written.append(path)
    return written


def _rows(results: list[Measurement], workload: str, metric: str) -> list[Measurement]:
    return [m for m in results if m.workload == workload and metric in m.runs]


def _height(results: list[Measurement], charts: list[tuple[str, str, str]]) -> int:
    return max(len(_rows(results, workload, metric)) for workload, metric, _ in charts)


def _bars(ax: Axes, rows: list[Measurement], metric: str, label: str, log_scale: bool) -> None:
    names = [m.contender for m in rows]
    summaries = [m.summary(metric) for m in rows]
    medians = [s.median for s in summaries]
    whiskers = [
        [s.median - s.low for s in summaries],
        [s.high - s.median for s in summaries],
    ]
    colours = [_OURS if name.startswith("aiodbpool") else _OTHERS for name in names]
    positions = range(len(rows))
    ax.barh(positions, medians, xerr=whiskers, color=colours, capsize=3)
    ax.set_yticks(list(positions), names)
    ax.invert_yaxis()
    ax.set_title(label, fontsize=10)
    ax.set_xlabel(METRICS[metric])
    if log_scale:
        ax.set_xscale("log")
    for position, summary in zip(positions, summaries, strict=True):
        value = summary.median
        ax.annotate(  # past the whisker, so the two never overlap
            f"{value:,.1f}" if value < 100 else f"{value:,.0f}",
            (summary.high, position),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.margins(x=0.18)
