"""The targets the project sets itself against the peer pools, checked on one run's figures.

Each target compares medians from the same run on the same machine. A target whose figures are
missing (a workload left out with ``--only``) is reported as not measured, never as met.
"""

from __future__ import annotations

from dataclasses import dataclass

from .results import Measurement

__all__ = ["PEERS", "Verdict", "check"]

PEERS = (
    "asyncpg.Pool",
    "asyncpg.Pool, no reset",
    "psycopg_pool, autocommit",
    "psycopg_pool",
    "SQLAlchemy",
)
"""The peer pools: the "fastest peer" and "best peer" of the targets are among these."""

FAST_PATH_LIMIT_US = 5.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: what it asks, what was measured, and whether it was met (None: not measured)."""

    target: str
    measured: str
    met: bool | None


def check(results: list[Measurement]) -> list[Verdict]:
    """Every target, judged on ``results``."""
    found = {(m.workload, m.contender): m for m in results}

    def median(workload: str, contender: str, metric: str) -> float | None:
        measurement = found.get((workload, contender))
        if measurement is None or metric not in measurement.runs:
            return None
        return measurement.median(metric)

    def peers(workload: str, metric: str) -> dict[str, float]:
        figures = {peer: median(workload, peer, metric) for peer in PEERS}
        return {peer: value for peer, value in figures.items() if value is not None}

    verdicts: list[Verdict] = []

    # W1: at most half the fastest peer's time.
    ours = median("W1", "aiodbpool", "us_per_op")
    w1_peers = peers("W1", "us_per_op")
    if ours is None or not w1_peers:
        verdicts.append(Verdict("W1: at most half the fastest peer's time", "not measured", None))
    else:
        fastest = min(w1_peers, key=w1_peers.__getitem__)
        ratio = ours / w1_peers[fastest]
        verdicts.append(
            Verdict(
                "W1: at most half the fastest peer's time",
                f"{ours:.1f} us vs {fastest} {w1_peers[fastest]:.1f} us: {ratio:.2f}x",
                ratio <= 0.5,
            )
        )

    # W2: within 10% of one raw connection.
    ours = median("W2", "aiodbpool", "us_per_op")
    raw = median("W2", "raw asyncpg connection", "us_per_op")
    if ours is None or raw is None:
        verdicts.append(Verdict("W2: within 10% of a raw connection", "not measured", None))
    else:
        verdicts.append(
            Verdict(
                "W2: within 10% of a raw connection",
                f"{ours:.1f} us vs raw {raw:.1f} us: {ours / raw:.2f}x",
                ours <= 1.10 * raw,
            )
        )

    # W3: the best peer's throughput at least, and p99 at most 1.5x our own p50.
    ours = median("W3", "aiodbpool", "ops_per_s")
    p50 = median("W3", "aiodbpool", "p50_ms")
    p99 = median("W3", "aiodbpool", "p99_ms")
    w3_peers = peers("W3", "ops_per_s")
    if ours is None or p50 is None or p99 is None or not w3_peers:
        verdicts.append(
            Verdict("W3: best peer's throughput, p99 <= 1.5 x p50", "not measured", None)
        )
    else:
        best = max(w3_peers, key=w3_peers.__getitem__)
        verdicts.append(
            Verdict(
                "W3: at least the best peer's throughput",
                f"{ours:,.0f} ops/s vs {best} {w3_peers[best]:,.0f}: {ours / w3_peers[best]:.2f}x",
                ours >= w3_peers[best],
            )
        )
        verdicts.append(
            Verdict(
                "W3: p99 at most 1.5x its own p50 (fair FIFO)",
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms: {p99 / p50:.2f}x",
                p99 <= 1.5 * p50,
            )
        )

    # W5: the pooled demo faster than connect-per-request by the connect cost, and 5x the rate.
    per_request = "no pool (connect per request)"
    w5 = _present(
        median("W5", "aiodbpool", "p50_ms"),
        median("W5", per_request, "p50_ms"),
        median("W5", "aiodbpool", "requests_per_s"),
        median("W5", per_request, "requests_per_s"),
        median("W1", "no pool (connect per use)", "us_per_op"),
    )
    if w5 is None:
        verdicts.append(
            Verdict("W5: p50 and requests/s against connect per request", "not measured", None)
        )
    else:
        pooled_p50, naive_p50, pooled_rate, naive_rate, connect_us = w5
        connect_ms = connect_us / 1e3
        verdicts.append(
            Verdict(
                "W5: p50 lower than connect per request's by the connect cost",
                f"{pooled_p50:.2f} ms vs {naive_p50:.2f} ms: {naive_p50 - pooled_p50:.2f} ms "
                f"saved; a connect + close costs {connect_ms:.2f} ms",
                naive_p50 - pooled_p50 >= connect_ms,
            )
        )
        verdicts.append(
            Verdict(
                "W5: at least 5x the requests/s of connect per request",
                f"{pooled_rate:,.0f} vs {naive_rate:,.0f} req/s: {pooled_rate / naive_rate:.1f}x",
                pooled_rate >= 5 * naive_rate,
            )
        )

    # The fast path alone, fake driver.
    fast = median("fast path", "aiodbpool (fake driver)", "us_per_op")
    verdicts.append(
        Verdict(
            f"fast path: under {FAST_PATH_LIMIT_US:g} us per acquire + release",
            "not measured" if fast is None else f"{fast:.2f} us",
            None if fast is None else fast < FAST_PATH_LIMIT_US,
        )
    )
    return verdicts


def _present(*figures: float | None) -> list[float] | None:
    """The figures, or None if any of them was not measured."""
    found = [figure for figure in figures if figure is not None]
    return found if len(found) == len(figures) else None
