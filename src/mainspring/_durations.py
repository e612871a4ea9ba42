"""Durations users pass: a ``timedelta`` or a number of seconds, checked the same way
everywhere (a NaN, an infinity or a negative number would hang or spin a loop)."""

from __future__ import annotations

import math
from datetime import timedelta

MOST = timedelta.max.total_seconds()  # the longest duration that still is a timedelta


def seconds(
    name: str,
    value: object,
    *,
    zero: bool = True,
    most: float = MOST,
    error: type[Exception] = ValueError,
) -> float:
    """``value`` (a ``timedelta`` or a number of seconds) in seconds.

    Raises ``TypeError`` if it is neither, and ``error`` (naming ``name``) unless it is
    finite, at most ``most`` and more than zero (or zero too, with ``zero``).
    """
    if isinstance(value, timedelta):
        out = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            out = float(value)
        except OverflowError:  # an int too large for a float
            out = math.inf
    else:
        raise TypeError(
            f"{name} must be a timedelta or a number of seconds, not {type(value).__name__}"
        )
    if not math.isfinite(out):
        raise error(f"{name} must be a finite duration, not {value!r}")
    if out < 0 and zero:
        raise error(f"{name} must not be negative, not {out:g} s")
    if out <= 0 and not zero:
        raise error(f"{name} must be more than 0 s, not {out:g} s")
    if out > most:
        span = f"{most / 86400:g} days ({most:g} s)" if most % 86400 == 0 else f"{most:g} s"
        raise error(f"{name} must be at most {span}, not {out:g} s")
    return out
