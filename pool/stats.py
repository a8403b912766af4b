"""A frozen snapshot of a pool's state and running counters, as returned by ``Pool.stats()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, assert_never

from .histogram import DurationHistogram

if TYPE_CHECKING:
    from ._books import Removal

__all__ = ["PoolStats"]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """What a pool looked like at one instant.

    Gauges describe the pool now; counters only grow over the pool's life. A snapshot never changes
    after it is taken, so it is safe to keep, compare and log.
    """

    name: str
    """The pool's name."""

    # Gauges.
    size: int
    """Connections that exist or are being opened or closed: ``idle + in_use + opening + closing``.
    Never more than ``max_size`` (except just after a ``resize`` down, until the excess returns)."""
    idle: int
    """Open connections waiting in the pool, ready to hand out."""
    in_use: int
    """Connections handed out and not yet returned (including those being reset or validated)."""
    opening: int
    """Connections being opened right now."""
    closing: int
    """Connections being closed right now."""
    waiting: int
    """Acquirers queued for a connection."""
    min_size: int
    """The configured minimum number of connections."""
    max_size: int
    """The configured maximum number of connections."""

    # Counters.
    acquired: int
    """Connections handed out, in total."""
    waited: int
    """Acquisitions that could not take a ready idle connection at once: they queued, opened a
    connection or validated one first."""
    timeouts: int
    """Acquisitions that failed with ``PoolTimeout``."""
    exhausted: int
    """Acquisitions refused at once with ``PoolExhausted``: ``max_waiting`` acquirers already
    waited."""
    created: int
    """Connections opened successfully."""
    closed: int
    """Connections closed, for any reason."""
    connect_errors: int
    """Attempts to open a connection that failed or timed out."""
    validation_failures: int
    """Idle connections that failed their ping before being handed out."""
    discarded: int
    """Connections thrown away because they were broken: closed, failed ``reset``, failed ping."""
    evicted_idle: int
    """Connections closed because they stayed idle longer than ``max_idle``."""
    evicted_lifetime: int
    """Connections retired for age (``max_lifetime``), use count (``max_uses``), ``expire()``
    or a ``resize`` below the current size."""
    wait_time_total: float
    """Seconds spent in acquisitions counted by ``waited``, summed."""
    wait_time_max: float
    """The longest of those acquisitions, in seconds."""
    stale_releases: int
    """Releases (and detaches) refused because the connection had already been given back:
    a second release, or one through a handle kept from an earlier lend."""
    stale_uses: int
    """Uses of a lent connection after its lease ended, refused with ``ConnectionReleased``
    (nothing was sent to the database)."""
    reclaimed: int
    """Connections whose lease was garbage-collected without a release: the pool closed them
    and took their slots back (each also logged as a warning)."""

    # The circuit breaker.
    breaker_open: bool
    """Whether the circuit breaker is open: acquirers needing a new connection fail at once."""
    connect_errors_in_a_row: int
    """Connects that failed since the last one that succeeded."""
    breaker_rejections: int
    """Acquisitions that failed at once with ``PoolConnectError`` because the breaker was open."""

    # Histograms.
    create_time: DurationHistogram
    """How long successful connects took."""
    wait_time: DurationHistogram
    """How long successful acquisitions took, waiting, validating and connecting included; those
    that took an idle connection at once are counted in the first bucket."""
    use_time: DurationHistogram
    """How long connections were held, from hand-out to release."""

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dictionary, ready for JSON."""
        data = asdict(self)
        for name in ("create_time", "wait_time", "use_time"):
            histogram: DurationHistogram = getattr(self, name)
            data[name] = histogram.as_dict()
        return data


@dataclass(slots=True)
class Counters:
    """The running counters behind ``PoolStats``, live; only the pool changes them."""

    acquired: int = 0
    waited: int = 0
    timeouts: int = 0
    exhausted: int = 0
    created: int = 0
    closed: int = 0
    connect_errors: int = 0
    validation_failures: int = 0
    discarded: int = 0
    evicted_idle: int = 0
    evicted_lifetime: int = 0
    wait_time_total: float = 0.0
    wait_time_max: float = 0.0
    stale_releases: int = 0
    stale_uses: int = 0
    reclaimed: int = 0

    def count_wait(self, seconds: float) -> None:
        """Count an acquire that took the slow path and waited ``seconds`` in all."""
        self.waited += 1
        self.wait_time_total += seconds
        self.wait_time_max = max(self.wait_time_max, seconds)

    def count_removal(self, reason: Removal) -> None:
        """Count a connection the pool lets go under its reason's counter."""
        match reason:
            case "discarded":
                self.discarded += 1
            case "evicted_idle":
                self.evicted_idle += 1
            case "evicted_lifetime":
                self.evicted_lifetime += 1
            case "reclaimed":
                self.reclaimed += 1
            case "closed":
                pass  # the pool is closing: counted in ``closed`` once the close is done
            case _:
                assert_never(reason)
