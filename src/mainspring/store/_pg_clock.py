"""One clock for every process on a PostgreSQL database: the server's.

Leases, timers, deadlines and sticky waits are times that one process writes and
another compares with its own "now". On many machines those would agree only as well
as the machines' clocks do: a worker whose clock runs an hour ahead would see every
other worker's lease as expired (running its activity a second time) and fire every
timer an hour early. So on PostgreSQL each process reads the server's clock now and
then, and its "now" is its own clock moved by the difference: every process then agrees
with the server, and so with every other, to within a few milliseconds, whatever the
machines' clocks say.
"""

from __future__ import annotations

import logging
import time

from ._store_core import Clock
from ._tx import Tx

log = logging.getLogger("mainspring.store")

# seconds between two readings of the server's clock: a clock that NTP does not keep
# drifts by seconds a day, so this only bounds how long a clock that is set or stepped
# meanwhile (by hand, by an NTP daemon starting) goes uncorrected
CLOCK_SYNC = 60.0
# seconds before trying again after a reading that failed or was not fair
CLOCK_RETRY = 2.0
# A reading made between this machine's times `before` and `after` places the server's
# time at their midpoint, within half their span; a reading slower than this (seconds)
# is not used.
FAIR_READING = 1.0
# seconds this machine's clock may differ from the server's before the log says so
CLOCK_SKEW_WARNING = 1.0


class ServerClock(Clock):
    """This machine's wall clock, moved onto the database server's.

    :meth:`now` is ``time.time() + offset``, where ``offset`` is the server's clock
    minus this machine's, measured by :meth:`read` (at open, then every
    :data:`CLOCK_SYNC` seconds). Until the first reading the offset is 0.
    """

    def __init__(self, server: str) -> None:
        self.offset = 0.0
        self.uncertainty: float | None = None  # how far off ``offset`` may be; None: unread
        self._server = server  # named in log lines

    def now(self) -> float:
        """The server's current time, as this machine last measured it."""
        return self.machine() + self.offset

    def machine(self) -> float:
        """This machine's own clock."""
        return time.time()

    def read(self, tx: Tx) -> bool:
        """Read the server's clock in ``tx`` and adopt the reading (see :meth:`adopt`)."""
        before = self.machine()
        rows = tx.q("server_time", {})
        after = self.machine()
        return self.adopt(float(rows[0][0]), before, after)

    def adopt(self, server: float, before: float, after: float) -> bool:
        """Take the server's time ``server``, read between this machine's times
        ``before`` and ``after``. Returns ``False``, changing nothing, if the reading
        took longer than :data:`FAIR_READING` (or this clock went back meanwhile).

        The offset changes only when the reading is more precise than the one it came
        from, or disagrees with it by more than both readings' uncertainty (the clock
        drifted or was set): it does not jitter with the network's noise.
        """
        span = after - before
        if not 0.0 <= span <= FAIR_READING:
            return False
        offset, uncertainty = server - (before + after) / 2, span / 2
        first = self.uncertainty is None
        change = offset - self.offset
        if (
            self.uncertainty is None
            or uncertainty < self.uncertainty
            or abs(change) > uncertainty + self.uncertainty
        ):
            self.offset, self.uncertainty = offset, uncertainty
        else:
            return True
        if first and abs(offset) > CLOCK_SKEW_WARNING:
            log.warning(
                "this machine's clock is %.1f s %s that of PostgreSQL at %s; Mainspring "
                "keeps its leases, timers and deadlines by the server's clock, so it "
                "works on, but fix this machine's clock (NTP) for everything else",
                abs(offset),
                "behind" if offset > 0 else "ahead of",
                self._server,
            )
        elif not first and abs(change) > CLOCK_SKEW_WARNING:
            log.warning(
                "this machine's clock jumped %.1f s %s against that of PostgreSQL at %s; "
                "Mainspring follows the server's clock",
                abs(change),
                "back" if change > 0 else "forward",
                self._server,
            )
        return True
