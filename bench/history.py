"""What a long history costs: listing runs by filter, and pruning closed runs.

A busy deployment piles up closed runs (at 1,000 workflows a second, a million in 17
minutes) until they are pruned. This fills a fresh database with ``N`` runs (1 % open,
1 in 50 of a rare type, 20 failed, the rest completed; 10 events each) and times::

    python bench/history.py [--store sqlite|postgres] [--sizes 100000,1000000]

- ``Client.list_workflows(limit=20)`` with each filter (median of 20 calls);
- ``Client.prune_closed_runs`` deleting every closed run with its history (runs/s).

The rows go in with one ``INSERT … SELECT`` per table, not through workflows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from _common import create_pg_database, workdir

from mainspring import Client

SERIES = {
    "sqlite": "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n}) ",
    "postgres": "WITH g(x) AS (SELECT generate_series(1, {n})) ",
}
RUNS = (
    "INSERT INTO {s}mainspring_runs (run_id, workflow_id, workflow_type, task_queue, status,"
    " input, created_at, closed_at, next_event_id) "
    "SELECT 'r' || x, 'w' || x, CASE WHEN x % 50 = 0 THEN 'Rare' ELSE 'Agent' END, 'q',"
    " CASE WHEN x % 100 = 0 THEN 'RUNNING' WHEN x < 20 THEN 'FAILED' ELSE 'COMPLETED' END,"
    " '[]', {t0} + x * 0.001, CASE WHEN x % 100 = 0 THEN NULL ELSE {t0} + x * 0.001 + 1 END,"
    " 11 FROM g"
)
EVENTS = (
    "INSERT INTO {s}mainspring_events (run_id, event_id, event_type, time, data) "
    "SELECT 'r' || x, e.y, 'ActivityTaskCompleted', {t0}, '{data}' FROM g, "
    "(SELECT 1 AS y UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL "
    "SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL "
    "SELECT 9 UNION ALL SELECT 10) AS e"
)
FILTERS: list[dict[str, Any]] = [
    {},
    {"status": "RUNNING"},
    {"status": "FAILED"},
    {"status": "COMPLETED"},
    {"workflow_type": "Rare"},
    {"status": "FAILED", "workflow_type": "Agent"},
]


def fill(url: str, store: str, n: int, t0: float) -> None:
    """Put ``n`` runs and their events in the database at ``url`` directly."""
    s = "mainspring." if store == "postgres" else ""
    data = '{"result": "' + "x" * 150 + '"}'
    statements = [
        SERIES[store].format(n=n) + RUNS.format(s=s, t0=t0),
        SERIES[store].format(n=n) + EVENTS.format(s=s, t0=t0, data=data),
    ]
    if store == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)  # type: ignore[arg-type]
            conn.execute("ANALYZE")
    else:
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            for sql in statements:
                conn.execute(sql)
        conn.close()


async def measure(store: str, n: int) -> None:
    """Print the listing times and the pruning rate over ``n`` runs."""
    drop: Callable[[], None]
    if store == "postgres":
        url, drop = create_pg_database()
    else:
        url, drop = f"sqlite:///{os.path.join(workdir('history'), 'history.db')}", lambda: None
    try:
        client = await Client.connect(url)  # creates the schema
        t0 = time.time() - 86400 * 30
        fill(url, store, n, t0)
        print(f"  {n:,} runs, {n * 10:,} events")
        for kw in FILTERS:
            times = []
            for _ in range(21):
                start = time.perf_counter()
                await client.list_workflows(limit=20, **kw)
                times.append((time.perf_counter() - start) * 1000)
            label = ", ".join(f"{k}={v}" for k, v in kw.items()) or "no filter"
            print(f"    list {label:<34} {statistics.median(times[1:]):8.2f} ms")
        start = time.perf_counter()
        deleted = await client.prune_closed_runs(timedelta(days=1))
        took = time.perf_counter() - start
        print(f"    prune {deleted:,} closed runs: {took:.1f} s, {deleted / took:,.0f} runs/s")
        await client.close()
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    print(f"store {args.store}: listing (median of 20) and pruning")
    for n in (int(x) for x in args.sizes.split(",")):
        asyncio.run(measure(args.store, n))


if __name__ == "__main__":
    main()
