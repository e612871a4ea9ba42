"""One clock for every process on a PostgreSQL database: the server's.

Leases, timers, deadlines and sticky waits are times that one process writes and
another compares with its own "now". On many machines those would agree only as well
as the machines' clocks do: a worker whose clock runs an hour ahead would see every
other worker's lease as expired (running its activity a second time) and fire every
timer an hour early. So on PostgreSQL each process reads the server's clock now and
then, and its "now" is the server's time at the last reading plus the time elapsed
since, by a steady clock that setting the machine's time does not move. Every process
then agrees with the server, and so with every other, to within a few milliseconds,
whatever the machines' clocks say or are set to meanwhile.
"""

from __future__ import annotations

import logging
import sys
import time

from ._store_core import Clock
from ._tx import Tx

log = logging.getLogger("mainspring.store")

# seconds between two readings of the server's clock: they follow the slow drift of
# this machine's steady clock against the server's (seconds a day at worst), and a
# change of the server's clock (a failover to a server whose clock differs)
CLOCK_SYNC = 60.0
# seconds before trying again after a reading that failed or was not fair
CLOCK_RETRY = 2.0
# A reading made between this machine's times `before` and `after` places the server's
# time at their midpoint, within half their span; a reading slower than this (seconds)
# is not used.
FAIR_READING = 1.0
# seconds this machine's clock may differ from the server's before the log says so
CLOCK_SKEW_WARNING = 1.0
# unusable readings in a row (failed, or slower than FAIR_READING) before the log says so
UNREAD_WARNING = 5


# A clock that setting the time does not move and that counts the time a suspended
# machine slept: Linux's CLOCK_BOOTTIME; macOS's CLOCK_MONOTONIC (Python's monotonic()
# there stops while the machine sleeps). Elsewhere, monotonic(): a sleep it does not
# count is caught within CLOCK_RETRY seconds of waking (see PostgresStore._keep_time).
_STEADY_ID = getattr(
    time,
    "CLOCK_BOOTTIME",
    getattr(time, "CLOCK_MONOTONIC", None) if sys.platform == "darwin" else None,
)


def _steady() -> float:
    """Seconds by a clock that setting the time does not move (see ``_STEADY_ID``)."""
    return time.clock_gettime(_STEADY_ID) if _STEADY_ID is not None else time.monotonic()


def _wall() -> float:
    """This machine's own clock (seconds since the epoch)."""
    return time.time()


def _direction(seconds: float, ahead: str, behind: str) -> str:
    return f"{abs(seconds):.1f} s {ahead if seconds > 0 else behind}"


class ServerClock(Clock):
    """The database server's clock, as this process last read it.

    :meth:`now` is ``steady + offset``: ``offset`` is the server's time minus this
    machine's steady clock, measured by :meth:`read` (at open, then every
    :data:`CLOCK_SYNC` seconds). Until the first reading, it reads this machine's own
    clock.
    """

    def __init__(self, server: str) -> None:
        self.offset = _wall() - _steady()
        self.uncertainty: float | None = None  # how far off ``offset`` may be; None: unread
        self.unread = 0  # unusable readings since the last usable one
        self.readings = 0  # usable readings so far
        self._skew: float | None = None  # this machine's clock minus the server's
        self._server = server  # named in log lines

    def now(self) -> float:
        """The server's current time, as this process last measured it."""
        return _steady() + self.offset

    def read(self, tx: Tx) -> bool:
        """Read the server's clock in ``tx`` and adopt the reading (see :meth:`adopt`)."""
        before = _steady()
        rows = tx.q("server_time", {})
        after, wall = _steady(), _wall()
        return self.adopt(float(rows[0][0]), before, after, wall - (after - before) / 2)

    def adopt(self, server: float, before: float, after: float, wall: float) -> bool:
        """Take the server's time ``server``, read between the steady clock's
        ``before`` and ``after``, when this machine's own clock said ``wall``.

        Returns ``False``, changing nothing, if the reading took longer than
        :data:`FAIR_READING`. The offset changes only when the reading is more precise
        than the one it came from, or disagrees with it by more than both readings'
        uncertainty (the clocks drifted apart, or the server's was set): it does not
        jitter with the network's noise. Logs a warning when this machine's clock is
        over :data:`CLOCK_SKEW_WARNING` off the server's, when it is set by over that
        much, and when the server's clock moves by over that much.
        """
        span = after - before
        if not 0.0 <= span <= FAIR_READING:
            self.missed(f"the reading took {span:.3f} s")
            return False
        if self.unread >= UNREAD_WARNING:
            log.info("read the clock of PostgreSQL at %s again", self._server)
        self.unread = 0
        self.readings += 1
        offset, uncertainty = server - (before + after) / 2, span / 2
        skew, last_skew = wall - server, self._skew
        self._skew = skew
        if self.uncertainty is None:
            self.offset, self.uncertainty = offset, uncertainty
            if abs(skew) > CLOCK_SKEW_WARNING:
                log.warning(
                    "this machine's clock is %s that of PostgreSQL at %s; Mainspring "
                    "keeps its leases, timers and deadlines by the server's clock, so it "
                    "works on, but fix this machine's clock (NTP) for everything else",
                    _direction(skew, "ahead of", "behind"),
                    self._server,
                )
            return True
        change = offset - self.offset
        if uncertainty < self.uncertainty or abs(change) > uncertainty + self.uncertainty:
            self.offset, self.uncertainty = offset, uncertainty
        set_by = 0.0 if last_skew is None else skew - last_skew
        if abs(change) > CLOCK_SKEW_WARNING and abs(set_by) <= CLOCK_SKEW_WARNING:
            # this machine's own clock kept pace with the server's: the steady clock
            # lagged (a sleep it did not count), and the reading put it right
            log.info(
                "this machine's steady clock parted from the clock of PostgreSQL at %s by "
                "%.1f s (did the machine sleep?); put right",
                self._server,
                change,
            )
        elif abs(change) > CLOCK_SKEW_WARNING:
            log.warning(
                "the clock of PostgreSQL at %s moved %s (a failover to a server whose "
                "clock differs?); Mainspring follows it",
                self._server,
                _direction(change, "forward", "back"),
            )
        elif abs(set_by) > CLOCK_SKEW_WARNING:
            log.warning(
                "this machine's clock was set %s; Mainspring keeps time by the clock of "
                "PostgreSQL at %s, so its leases, timers and deadlines are unaffected",
                _direction(set_by, "forward", "back"),
                self._server,
            )
        return True

    def missed(self, why: str) -> None:
        """Count a reading that failed or was not used; say so after
        :data:`UNREAD_WARNING` in a row."""
        self.unread += 1
        if self.unread == UNREAD_WARNING:
            log.warning(
                "could not read the clock of PostgreSQL at %s %d times in a row (%s); "
                "keeping time by %s until a reading succeeds",
                self._server,
                self.unread,
                why,
                "the last reading"
                if self.uncertainty is not None
                else "this machine's clock as it stood when the store opened",
            )
