"""How a worker's loops report what failed: database trouble in one line, bugs in full.

While the database is away (a restart, a failover, a network blip) every loop of every
worker fails on each retry. A :class:`~mainspring.errors.StoreError` already says in
one line what went wrong and what to do, so it is logged as a warning without a
traceback, and the same message at most once per :data:`REPEAT_EVERY` seconds (saying
how many like it were held back). Anything else is a bug or an unexpected condition and
is logged with its traceback, every time.
"""

from __future__ import annotations

import logging
import time

from .errors import StoreError

REPEAT_EVERY = 30.0  # seconds between two log lines with the same database error

_last: dict[str, tuple[float, int]] = {}  # message -> (when last logged, held back since)


def report(log: logging.Logger, what: str, exc: BaseException, then: str = "retrying") -> None:
    """Log that ``what`` failed with ``exc`` and what happens next (``then``)."""
    if not isinstance(exc, StoreError):
        log.error("%s failed; %s", what, then, exc_info=exc)
        return
    message = str(exc)
    now = time.monotonic()
    last, held = _last.get(message, (None, 0))
    if last is not None and now - last < REPEAT_EVERY:
        _last[message] = (last, held + 1)
        log.debug("%s failed (%s); %s", what, message, then)
        return
    if len(_last) > 100:  # messages name runs and queries at times: keep few
        _last.clear()
    _last[message] = (now, 0)
    more = f" ({held} more like it in the last {REPEAT_EVERY:g} s)" if held else ""
    log.warning("%s failed: %s; %s%s", what, message, then, more)
