"""When the pool may try a connect while connects fail: the backoff and the circuit breaker.

A pool whose database refuses connections must neither hammer it nor keep every acquirer waiting
for a connect doomed to fail. Two mechanisms share that job, and ``Breaker`` holds both:

* The **backoff** (``Backoff``) spaces out the pool's own attempts: after a failed background
  refill, the next one waits ``backoff_initial``, then twice that, up to ``backoff_max``.
* The **circuit breaker** opens after ``breaker_threshold`` failed connects in a row, whoever
  made them: then an acquirer that needs a new connection is refused at once, and the first
  connect that succeeds closes it again.

While connects fail, one connect at a time tests the database: the **probe**. The maintenance
job's refill starts one once the backoff delay has passed; with the breaker open, a connect for
waiting acquirers may be the probe sooner (see ``Breaker.may_probe_for_waiters``). A failed
connect **backs off** -- pushes the next attempt further away -- if it was a probe or a
background refill, or if it opened the breaker; a failure of an acquirer's own connect before
then does not, so a database back after a short restart is tried again soon.

Everything here is synchronous and reads no clock: the pool passes ``now`` in, decides, then acts
(and logs). So every change of the breaker's state is one named method below, and the tests can
drive it step by step.
"""

from __future__ import annotations

import math
import random

__all__ = ["Backoff", "Breaker"]


class Backoff:
    """Exponential backoff with jitter for reconnect attempts.

    After the n-th consecutive failure the next attempt waits ``initial * 2**(n-1)`` seconds, capped
    at ``maximum``, of which a random half is kept ("equal jitter"): many pools that lost the same
    database do not all retry at the same instant.
    """

    __slots__ = ("_initial", "_maximum", "_rng", "failed_at", "failures", "not_before")

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng or random.Random()
        self.failures = 0
        """Consecutive failed attempts."""
        self.not_before = -math.inf
        """The clock reading before which no new attempt should start."""
        self.failed_at = -math.inf
        """When the last attempt failed."""

    @property
    def initial(self) -> float:
        """The delay after a first failure (``backoff_initial``)."""
        return self._initial

    def failed(self, now: float) -> float:
        """Record a failed attempt at ``now``; return the delay before the next one."""
        # (The exponent is capped: 2.0**1024 overflows, and a long outage gets that far.)
        ceiling = min(self._maximum, self._initial * 2.0 ** min(self.failures, 64))
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        self.failures += 1
        self.not_before = now + delay
        self.failed_at = now
        return delay

    def succeeded(self) -> None:
        """Record a successful attempt: the next failure starts from the initial delay again."""
        self.failures = 0
        self.not_before = -math.inf
        self.failed_at = -math.inf


class Breaker:
    """The circuit breaker's state, the backoff, and the probe slot; the pool holds one.

    The breaker is not a state variable of its own: it is *open* while ``errors_in_a_row``
    reaches ``threshold``, so the two cannot disagree.
    """

    __slots__ = (
        "backoff",
        "errors_in_a_row",
        "failing_since",
        "last_error",
        "outage_reported",
        "probes",
        "rejections",
        "threshold",
    )

    def __init__(self, threshold: int | None, backoff: Backoff) -> None:
        self.threshold = threshold
        """``breaker_threshold``; None: the breaker never opens."""
        self.backoff = backoff
        """When the next background connect (a refill, or the probe) may start."""
        self.errors_in_a_row = 0
        """Connects failed since the last success, whoever made them."""
        self.last_error: BaseException | None = None
        """The last of those failures: the cause the breaker reports."""
        self.probes = 0
        """Probes under way: 0 or 1. Counted from the moment one is claimed, so two acquirers
        cannot both become the probe."""
        self.rejections = 0
        """Acquirers refused a new connection because the breaker was open."""
        self.failing_since: float | None = None
        """When the first of the connects failed in a row failed; None after a success."""
        self.outage_reported = False
        """Whether the pool has told its ``reconnect_failed`` hook of this run of failures."""

    # ------------------------------------------------------------------ questions

    def is_open(self) -> bool:
        """Whether acquirers that need a new connection are refused at once."""
        threshold = self.threshold
        return threshold is not None and self.errors_in_a_row >= threshold

    def backoff_left(self, now: float) -> float:
        """Seconds until a background connect may start; 0 when one may start now."""
        return max(0.0, self.backoff.not_before - now)

    def next_probe_for_waiters_at(self) -> float:
        """When, with the breaker open, a connect for waiting acquirers may probe next."""
        backoff = self.backoff
        return min(backoff.not_before, backoff.failed_at + backoff.initial)

    def may_probe_for_waiters(self, now: float) -> bool:
        """Whether, with the breaker open, a connect for waiting acquirers may probe now.

        One connect at a time may try. The backoff spaces out the background's probes, growing
        up to ``backoff_max`` while the outage lasts; but while acquirers are asking, a connect
        for them may probe as soon as ``backoff_initial`` has passed since the last probe
        failed, so that the pool recovers within about that long after the database is back,
        however long it was away. Every other acquirer that needs a new connection is refused
        at once. Connects that were under way when the breaker opened do not count: one stuck
        on a dead server until its ``connect_timeout`` must not hold up the probe.
        """
        return not self.probes and now >= self.next_probe_for_waiters_at()

    # ------------------------------------------------------------------ changes

    def claim_refills(self, missing: int, now: float) -> tuple[int, bool]:
        """How many of ``missing`` background refills may start at ``now``, and whether the one
        allowed is the probe (then claimed here).

        None while the backoff delay runs. While connects fail (a refill failed, or the breaker
        is open) only the probe may start, and only if no other probe is under way.
        """
        backoff = self.backoff
        if missing <= 0 or now < backoff.not_before:
            return 0, False
        if not (backoff.failures or self.is_open()):
            return missing, False
        if self.probes:
            return 0, False  # a probe is already under way
        self.probes += 1
        return 1, True

    def claim_probe_for_waiters(self) -> None:
        """A connect for waiting acquirers becomes the probe (``may_probe_for_waiters`` said so)."""
        self.probes += 1

    def probe_ended(self) -> None:
        """The probe's connect has finished, whatever its outcome."""
        self.probes -= 1

    def refuse(self, now: float) -> float:
        """Count an acquirer refused a new connection; return the seconds until the next probe
        for waiters may start, for its error message."""
        self.rejections += 1
        return max(0.0, self.next_probe_for_waiters_at() - now)

    def connect_failed(self, error: BaseException, now: float, *, backs_off: bool) -> bool:
        """Count a failed connect; return whether it opened the breaker.

        A failure that ``backs_off`` (a probe's or a background refill's) and the failure that
        opens the breaker push the next attempt further away (exponential backoff). Other
        failures do not: acquirers failing before the breaker opened, or connects still under
        way when it opened. So a database back after a short restart is probed after about
        ``backoff_initial``, not after a delay grown by every failed request.
        """
        was_open = self.is_open()
        if not self.errors_in_a_row:
            self.failing_since = now
        self.errors_in_a_row += 1
        self.last_error = error
        opened = not was_open and self.is_open()
        if backs_off or opened:
            self.backoff.failed(now)
        return opened

    def connect_succeeded(self) -> bool:
        """A connect succeeded: reset the count and the backoff; return whether this closed the
        breaker. The last error is forgotten, so nothing keeps its traceback (and its frames)
        alive."""
        was_open = self.is_open()
        self.errors_in_a_row = 0
        self.last_error = None
        self.failing_since = None
        self.outage_reported = False
        self.backoff.succeeded()
        return was_open

    def outage_to_report(self, now: float, after: float) -> bool:
        """Whether connects have failed, with no success, for ``after`` seconds by ``now`` and
        nobody has been told yet; if so, it counts as told from now on."""
        since = self.failing_since
        if since is None or self.outage_reported or now - since < after:
            return False
        self.outage_reported = True
        return True

    def forget_last_error(self) -> None:
        """Drop the last connect error (the pool closed): its traceback would keep frames alive."""
        self.last_error = None
