"""Retention: deleting runs that closed long ago, with everything recorded for them.

A run is only ever deleted whole, in one transaction: its row, its history, and any
activity attempts, timers and queries left of it. An open run is never touched.
"""

from __future__ import annotations

from .core import Tx

_CHILDREN = ("prune_events", "prune_activities", "prune_timers", "prune_queries")


def prune_closed_runs(
    tx: Tx, *, closed_before: float, after: tuple[float, str], limit: int
) -> tuple[int, tuple[float, str] | None]:
    """Delete up to ``limit`` runs that closed before ``closed_before``, the oldest
    first after the key ``after`` (``(created_at, run_id)``; ``(-1.0, "")`` to begin).

    The statements deleting them get both the runs' ids and their range of keys: a
    dialect uses whichever its planner handles best.

    Returns how many it deleted and the key to continue after (``None`` once no run is
    left after ``after``). The runs are locked before anything of theirs is deleted, so
    concurrent pruners never count a run twice.
    """
    rows = tx.q(
        "prunable_runs",
        {"cutoff": closed_before, "after_at": after[0], "after_id": after[1], "limit": limit},
    )
    if not rows:
        return 0, None
    last = (float(rows[-1][1]), str(rows[-1][0]))
    span = {
        "cutoff": closed_before,
        "after_at": after[0],
        "after_id": after[1],
        "last_at": last[0],
        "last_id": last[1],
        "ids": [str(r[0]) for r in rows],
    }
    for name in _CHILDREN:
        tx.w(name, span)
    tx.w("prune_runs", span)
    return len(rows), last


def count_prunable(tx: Tx, *, closed_before: float) -> int:
    """How many runs closed before ``closed_before`` (what pruning would delete now)."""
    return int(tx.q("count_prunable", {"cutoff": closed_before})[0][0])
