"""The live pool view: one self-contained page that shows each pool of an app as it runs.

``install(app, dashboard_path="/pool/dashboard")`` serves two routes: the page itself
(``dashboard.html``, next to this module: plain HTML, CSS and a script, nothing fetched from
anywhere else) and ``<dashboard_path>/data``, the JSON the page polls once a second. The data
holds each pool's ``stats()`` and its recent history: connects, failed connects, connections
let go, timeouts and lends per ``BUCKET`` seconds over the last ``WINDOW`` seconds.

The history is kept by a listener on each pool (``_History``), attached when the app opens the
pool (``lifespan`` runs the hooks ``install`` registers) or, failing that, at the first request
for the data. Counting an event is a dictionary lookup and an addition; nothing is kept beyond
the window.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Final

from aiodbpool import Pool
from aiodbpool.events import (
    Acquired,
    Connected,
    ConnectFailed,
    PoolEvent,
    Removed,
    TimedOut,
)

__all__ = ["BUCKET", "WINDOW", "Dashboard"]

BUCKET: Final = 5.0
"""Seconds per bar of the history."""

WINDOW: Final = 600.0
"""Seconds of history kept and shown (ten minutes)."""

_KINDS: Final = ("connects", "connect_errors", "removed", "timeouts", "lends")
"""What the history counts, in the order of its series."""


@dataclass(slots=True)
class _History:
    """One pool's recent events, counted per ``BUCKET`` seconds of ``clock()``."""

    clock: Callable[[], float] = time.monotonic
    # Bucket number (time // BUCKET) -> counts in the order of _KINDS.
    buckets: dict[int, list[int]] = field(default_factory=dict)

    def __call__(self, event: PoolEvent) -> None:
        match event:
            case Connected():
                kind = 0
            case ConnectFailed():
                kind = 1
            case Removed(reason=reason) if reason != "closed":
                kind = 2
            case TimedOut():
                kind = 3
            case Acquired():
                kind = 4
            case _:
                return
        bucket = int(self.clock() // BUCKET)
        counts = self.buckets.get(bucket)
        if counts is None:
            counts = self.buckets[bucket] = [0] * len(_KINDS)
            self._forget_before(bucket - int(WINDOW // BUCKET))
        counts[kind] += 1

    def _forget_before(self, oldest: int) -> None:
        for bucket in [bucket for bucket in self.buckets if bucket < oldest]:
            del self.buckets[bucket]

    def series(self) -> dict[str, Any]:
        """The window as one list per kind, oldest bucket first, and the bucket's length."""
        newest = int(self.clock() // BUCKET)
        span = range(newest - int(WINDOW // BUCKET) + 1, newest + 1)
        empty = [0] * len(_KINDS)
        rows = [self.buckets.get(bucket, empty) for bucket in span]
        return {
            "bucket_seconds": BUCKET,
            **{kind: [row[index] for row in rows] for index, kind in enumerate(_KINDS)},
        }


class Dashboard:
    """The dashboard of one app: the page, and each pool's history."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._histories: weakref.WeakKeyDictionary[Pool[Any], _History] = (
            weakref.WeakKeyDictionary()
        )
        self.page: Final = (
            files("aiodbpool.integrations").joinpath("dashboard.html").read_text(encoding="utf-8")
        )

    def watch(self, pool: Pool[Any]) -> None:
        """Keep the history of ``pool`` from now on (once per pool)."""
        if pool not in self._histories:
            history = self._histories[pool] = _History(self._clock)
            pool.add_listener(history)

    def data(self, pools: Iterable[Pool[Any]]) -> dict[str, Any]:
        """What the page shows: each pool's stats and history, by name, in the app's order."""
        shown: dict[str, Any] = {}
        for pool in pools:
            self.watch(pool)
            history = self._histories[pool].series()
            shown[pool.name] = {"stats": pool.stats().as_dict(), "history": history}
        return {"pools": shown, "window_seconds": WINDOW}
