"""What a maintenance pass costs while a backlog of activities waits to be claimed.

Every worker runs a maintenance pass (fire due timers, time out lapsed leases and
schedule-to-close deadlines, find when work next falls due) at least every poll
interval, so its cost must not grow with the backlog. This fills a fresh database with
``N`` queued activities (half of them with a schedule-to-close deadline, as a burst of
LLM calls held back by a rate limit would leave them) and times ``Store.maintain``::

    python bench/backlog.py [--store sqlite|postgres] [--sizes 1000,10000,100000]

The rows go in with one ``INSERT … SELECT`` each, not through workflows: only the
maintenance pass is measured. Prints the median of 50 passes per size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from _common import create_pg_database, workdir

from mainspring.store import store_from_url

SERIES = {
    "sqlite": "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n}) ",
    "postgres": "WITH g(x) AS (SELECT generate_series(1, {n})) ",
}
BACKLOG = (
    "INSERT INTO {s}mainspring_activities (run_id, seq, workflow_id, workflow_type, "
    "activity_type, task_queue, input, options, scheduled_at, ready_at, deadline) "
    "SELECT 'r' || x, 1, 'w' || x, 'T', 'llm', 'q', '[]', '{{}}', {now}, {now}, "
    "CASE WHEN x % 2 = 0 THEN {now} + 86400 + x END FROM g"
)


def fill(url: str, store: str, n: int) -> None:
    """Put ``n`` queued activities in the database at ``url`` directly."""
    sql = SERIES[store].format(n=n) + BACKLOG.format(
        s="mainspring." if store == "postgres" else "", now=time.time()
    )
    if store == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
            conn.execute("ANALYZE")
    else:
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(sql)
        conn.close()


async def measure(store: str, n: int) -> float:
    """Median milliseconds of one maintenance pass over a backlog of ``n``."""
    if store == "postgres":
        url, drop = create_pg_database()
    else:
        url, drop = f"sqlite:///{os.path.join(workdir('backlog'), 'backlog.db')}", lambda: None
    try:
        s: Any = store_from_url(url)
        await s.open()  # creates the schema
        fill(url, store, n)
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            await s.maintain("q")
            times.append((time.perf_counter() - t0) * 1000)
        await s.close()
        return statistics.median(times)
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    print(f"store {args.store}: one maintenance pass, median of 50")
    for n in (int(x) for x in args.sizes.split(",")):
        print(f"  {n:>8,} queued activities: {asyncio.run(measure(args.store, n)):8.2f} ms")


if __name__ == "__main__":
    main()
