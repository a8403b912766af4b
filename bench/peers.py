"""aiodbpool against asyncpg's pool, psycopg_pool and SQLAlchemy's pool, in one run.

One command measures every contender on the same server, with the same pool size, in the same
run, and writes a Markdown table, a JSON file with every repeat's figure, and PNG plots::

    .venv/bin/python -m bench                        # everything, about 6 minutes
    .venv/bin/python -m bench --quick --out /tmp/b   # a smoke run: seconds, noisy figures

It needs the ``bench`` extra (``pip install -e '.[bench]'``). The PostgreSQL server is
``$AIODBPOOL_BENCH_DSN``, or a throwaway one started for the run (see ``bench/server.py``).

Method: every contender is opened first, with all its connections; then each repeat runs every
contender in turn (round-robin, so a machine that speeds up or slows down during the run
affects all of them alike), after one warm-up pass. Figures are medians over the repeats, with
the lowest and highest repeat as the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg

from . import fastpath, http_load
from .contenders import SLEEP_SECONDS, close_all, contenders, open_all
from .plots import draw
from .results import METRICS, Measurement
from .server import postgres
from .targets import Verdict, check
from .workloads import W3_TASKS, W4_TASKS, W6_TASKS, concurrent, single, sqlite_workload

POOL_SIZE = 10
W5_CLIENTS = 32
ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "fast path")

_DESCRIPTIONS = {
    "W1": "acquire + release, no statement, 1 task",
    "W2": "acquire + `SELECT 1` + release, 1 task",
    "W3": f"acquire + `SELECT 1` + release, {W3_TASKS} tasks over {POOL_SIZE} connections "
    "(latency includes the wait for a connection)",
    "W4": f"a {SLEEP_SECONDS * 1000:g} ms statement (`pg_sleep`), {W4_TASKS} tasks over "
    f"{POOL_SIZE} connections",
    "W5": f"the FastAPI demo under uvicorn, `GET /notes/{{id}}`, {W5_CLIENTS} keep-alive HTTP "
    "clients",
    "W6": f"SQLite, a row by primary key: 1 task (us/op), then {W6_TASKS} tasks (ops/s, latencies)",
    "fast path": "acquire + release on the fake driver: the pool's own overhead",
}


async def _postgres_workloads(
    dsn: str, only: set[str], seconds: float, repeats: int
) -> list[Measurement]:
    """W1-W4 for every contender."""
    every = contenders(dsn, POOL_SIZE)
    results: list[Measurement] = []
    try:
        await open_all(every)
        for contender in every:  # warm up: statement caches, first-use allocations
            await single(contender, True, seconds / 4)
        plan: list[tuple[str, Any]] = []
        for contender in every:
            if "W1" in only and contender.name != "raw asyncpg connection":
                plan.append(("W1", contender))
            if "W2" in only:
                plan.append(("W2", contender))
        for workload in ("W3", "W4"):
            if workload in only:
                plan += [(workload, c) for c in every if c.concurrent]
        by_key = {(w, c.name): Measurement(w, c.name) for w, c in plan}
        for repeat in range(repeats):
            print(f"  PostgreSQL workloads, repeat {repeat + 1} of {repeats}", file=sys.stderr)
            for workload, contender in plan:
                measurement = by_key[workload, contender.name]
                if workload in ("W1", "W2"):
                    us = await single(contender, workload == "W2", seconds)
                    measurement.add(us_per_op=us)
                else:
                    tasks = W3_TASKS if workload == "W3" else W4_TASKS
                    rate, p50, p99 = await concurrent(
                        contender, tasks, seconds, slow=workload == "W4"
                    )
                    measurement.add(ops_per_s=rate, p50_ms=p50, p99_ms=p99)
        results = list(by_key.values())
    finally:
        await close_all(every)
    return sorted(results, key=lambda m: WORKLOADS.index(m.workload))


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        shown: str = await conn.fetchval("SHOW server_version")
        return shown
    finally:
        await conn.close()


def _machine(server_version: str, server: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = [
        "aiodbpool",
        "asyncpg",
        "psycopg",
        "psycopg-pool",
        "sqlalchemy",
        "aiosqlite",
        "fastapi",
        "uvicorn",
    ]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "postgresql": server_version,
        "server": server,
        "packages": {name: version(name) for name in packages},
    }


def _table(results: list[Measurement]) -> str:
    """The results as Markdown: one table per workload, median (min..max) per metric."""
    lines: list[str] = []
    for workload in WORKLOADS:
        rows = [m for m in results if m.workload == workload]
        if not rows:
            continue
        metrics = [metric for metric in METRICS if any(metric in m.runs for m in rows)]
        lines += [f"**{workload}**: {_DESCRIPTIONS[workload]}", ""]
        lines.append("| contender | " + " | ".join(METRICS[m] for m in metrics) + " |")
        lines.append("| --- |" + " ---: |" * len(metrics))
        for m in rows:
            cells = []
            for metric in metrics:
                if metric not in m.runs:
                    cells.append("")
                    continue
                s = m.summary(metric)
                cells.append(f"{_figure(s.median)} ({_figure(s.low)}..{_figure(s.high)})")
            lines.append(f"| {m.contender} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _figure(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdicts(verdicts: list[Verdict]) -> str:
    lines = ["| target | measured | met |", "| --- | --- | --- |"]
    for v in verdicts:
        met = "not measured" if v.met is None else ("yes" if v.met else "**no**")
        lines.append(f"| {v.target} | {v.measured} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "benchmarks",
        help="where results.md, results.json and the plots go",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timed round")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per contender")
    parser.add_argument(
        "--quick", action="store_true", help="0.2 s rounds, 2 repeats: checks that everything runs"
    )
    parser.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        help=f"comma-separated workloads (default: all of {', '.join(WORKLOADS)})",
    )
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",")}
    unknown = only - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    seconds, repeats = (0.2, 2) if args.quick else (args.seconds, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    results: list[Measurement] = []
    with postgres() as server:
        server_version = asyncio.run(_server_version(server.dsn))
        if only & {"W1", "W2", "W3", "W4"}:
            results += asyncio.run(_postgres_workloads(server.dsn, only, seconds, repeats))
        if "W5" in only:
            print("  W5: the demo under uvicorn", file=sys.stderr)
            results += http_load.run(
                server.dsn, seconds=seconds * 2, repeats=repeats, clients=W5_CLIENTS
            )
    if "W6" in only:
        print("  W6: SQLite", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="aiodbpool-bench-") as directory:
            results += asyncio.run(sqlite_workload(Path(directory), seconds, repeats))
    if "fast path" in only:
        fast = Measurement("fast path", "aiodbpool (fake driver)")
        for us in fastpath.cycle_times(20_000 if args.quick else 200_000, repeats):
            fast.add(us_per_op=us)
        results.append(fast)

    machine = _machine(server_version, server.description)
    verdicts = check(results)
    took = time.monotonic() - started
    settings = {
        "pool_size": POOL_SIZE,
        "seconds": seconds,
        "repeats": repeats,
        "w5_clients": W5_CLIENTS,
        "took_seconds": round(took, 1),
    }
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "settings": settings,
                "results": [m.as_dict() for m in results],
                "targets": [asdict(v) for v in verdicts],
            },
            indent=2,
        )
        + "\n"
    )
    describe = (
        f"{machine['cpu']}, {machine['cores']} cores; {machine['os']}; Python "
        f"{machine['python']}; PostgreSQL {server_version} ({server.description}); "
        + ", ".join(f"{name} {v}" for name, v in machine["packages"].items())
    )
    report = (
        f"Measured on {describe}. Pool size {POOL_SIZE}; {repeats} repeats of {seconds:g} s "
        f"per contender and workload (W5: {seconds * 2:g} s); median (min..max).\n\n"
        + _table(results)
        + "\n**Targets**\n\n"
        + _verdicts(verdicts)
    )
    plots = draw(results, args.out)
    report += "\n" + "\n".join(f"![{path.stem}]({path.name})\n" for path in plots)
    (args.out / "results.md").write_text(report)
    print(report)
    written = [args.out / "results.md", args.out / "results.json", *plots]
    print("written: " + ", ".join(str(path) for path in written))
    print(f"took {took:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
