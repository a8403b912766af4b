"""The benchmark program runs from end to end and writes what its documentation promises.

A short run (``--quick``) on the test server: every contender on every workload, the table,
the JSON file and the plots. Nothing here judges speed: figures from a busy test machine mean
nothing, and a timed assertion would flake. Speed is for ``python -m bench`` itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiodbpool.integrations.testing import PostgresServer

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "W1": {
        "aiodbpool",
        "aiodbpool, no lease",
        'aiodbpool reset="full"',
        "aiodbpool (psycopg)",
        "asyncpg.Pool",
        "asyncpg.Pool, no reset",
        "psycopg_pool, autocommit",
        "psycopg_pool",
        "SQLAlchemy",
        "no pool (connect per use)",
    },
    "W5": {"aiodbpool", "no pool (connect per request)"},
    "W6": {"aiodbpool (SQLite)", "no pool (connect per use)"},
    "fast path": {"aiodbpool (fake driver)"},
}
EXPECTED["W2"] = EXPECTED["W1"] | {"raw asyncpg connection"}
EXPECTED["W3"] = EXPECTED["W4"] = EXPECTED["W1"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def bench_server() -> Iterator[PostgresServer]:
    """A server of the benchmark's own, as ``python -m bench`` starts it: the suite's shared
    server may have connections left in use (PgBouncer's), and the benchmark holds every
    contender's pools at once."""
    with PostgresServer(max_connections=300) as server:  # as bench/server.py starts it
        yield server


@pytest.mark.slow
def test_a_quick_run_measures_every_contender_and_writes_the_report(
    bench_server: PostgresServer, tmp_path: Path
) -> None:
    environment = {**os.environ, "AIODBPOOL_BENCH_DSN": bench_server.dsn}
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-4000:]

    report = json.loads((tmp_path / "results.json").read_text())
    measured: dict[str, set[str]] = {}
    for result in report["results"]:
        measured.setdefault(result["workload"], set()).add(result["contender"])
        for metric in result["metrics"].values():
            assert len(metric["runs"]) == report["settings"]["repeats"]
            assert metric["min"] <= metric["median"] <= metric["max"]
            assert all(value > 0 for value in metric["runs"])
    assert measured == EXPECTED
    assert {target["met"] is None for target in report["targets"]} == {False}, report["targets"]
    assert report["machine"]["postgresql"]
    assert bench_server.password not in json.dumps(report)

    table = (tmp_path / "results.md").read_text()
    for workload in EXPECTED:
        assert f"**{workload}**" in table
    assert "**Targets**" in table
    assert bench_server.password not in table
    for plot in ("w1_w2.png", "w3.png", "w4.png", "w5.png", "w6.png"):
        assert (tmp_path / plot).read_bytes().startswith(PNG_SIGNATURE), plot
