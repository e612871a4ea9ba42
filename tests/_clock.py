"""A clock that tests move by hand (leases, deadlines, sticky waits without sleeping)."""

from __future__ import annotations

import time

from mainspring.store import Clock


class ManualClock(Clock):
    """Starts at the real time; moves only when a test adds to :attr:`t`."""

    def __init__(self) -> None:
        self.t = time.time()

    def now(self) -> float:
        return self.t
