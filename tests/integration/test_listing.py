"""Listing runs by status and type: the right runs, newest first, found by an index."""

from __future__ import annotations

import asyncio
import itertools
import re
import sqlite3

import psycopg
import pytest

from mainspring import Client
from mainspring.runtime.commands import CompleteWorkflow, FailWorkflow
from mainspring.store import Store
from mainspring.store._pg_statements import qualified
from mainspring.store.records import WorkflowStatus, WorkflowTaskCompletion
from mainspring.store.sqlfile import load_queries
from tests import _pg
from tests._clock import ManualClock

TYPES = ["Agent", "Digest", "Rare"]
ENDS = ["RUNNING", "COMPLETED", "FAILED", "TERMINATED"]


async def _close(s: Store, wid: str, end: str) -> None:
    if end == "TERMINATED":
        await s.terminate(wid, None, "test")
        return
    [wft] = await s.claim_workflow_tasks("q", "w1", 1, 60, {})
    assert wft.workflow_id == wid
    command = (
        CompleteWorkflow(result='"done"')
        if end == "COMPLETED"
        else FailWorkflow(failure={"type": "X", "message": "no"})
    )
    out = await s.complete_workflow_task(
        WorkflowTaskCompletion(
            run_id=wft.run_id,
            fence=wft.fence,
            owner="w1",
            through=wft.history_length,
            time=0.0,
            commands=[command],
        )
    )
    assert out.accepted


async def test_every_filter_lists_exactly_its_runs_newest_first(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    s = client.store
    made: list[tuple[str, str, str]] = []  # (workflow id, type, status), oldest first
    for i, (end, wtype) in enumerate(itertools.product(ENDS, TYPES[:2])):
        for j in range(2):
            wid = f"{wtype}-{end}-{j}"
            queue = "idle" if end == "RUNNING" else "q"  # open runs nobody decides
            await s.start_workflow(
                workflow_id=wid, workflow_type=wtype, task_queue=queue, input="[]"
            )
            if end != "RUNNING":
                await _close(s, wid, end)
            made.append((wid, wtype, end))
            clock.t += 1 + i  # distinct creation times
    made.reverse()  # newest first
    listed = await s.list_runs(limit=100)
    assert len(listed) == len(made)
    assert all(r.input == "" and r.result is None for r in listed)  # not read to list
    assert (await s.describe(made[-1][0])).input == "[]"  # describe reads them

    for status, wtype, limit in itertools.product([None, *ENDS], [None, *TYPES], [1, 3, 100]):
        expected = [
            wid
            for wid, t, st in made
            if (status is None or st == status) and (wtype is None or t == wtype)
        ][:limit]
        got = await client.list_workflows(status=status, workflow_type=wtype, limit=limit)
        assert [d.workflow_id for d in got] == expected, (status, wtype, limit)
        assert all(
            d.status is WorkflowStatus(st)
            for d, (_, _, st) in zip(got, [m for m in made if m[0] in expected], strict=True)
        )


@pytest.mark.parametrize("limit", [-1, 2**31, 10**20, 2.5, True, "5", None])
async def test_a_limit_that_is_not_a_count_is_refused_the_same_on_every_store(
    client: Client, limit: object
) -> None:
    await client.store.start_workflow(
        workflow_id="w", workflow_type="W", task_queue="q", input="[]"
    )
    with pytest.raises(ValueError, match="limit must be a whole number from 0 to 2,147,483,647"):
        await client.list_workflows(limit=limit)  # type: ignore[arg-type]
    assert await client.list_workflows(limit=0) == []
    assert len(await client.list_workflows(limit=2**31 - 1)) == 1


# (query, the index it must be able to use whatever the parameters)
PLANS = [
    ("list_runs", "mainspring_runs_list"),
    ("list_open_runs", "mainspring_runs_open"),
    ("list_closed_runs", "mainspring_runs_closed_status"),
    ("list_runs_of_type", "mainspring_runs_closed_type"),
]
# SQLite lists open runs by an index of their own, in time order (it costs its steps
# nothing there; PostgreSQL would add an entry to it at every step)
SQLITE_PLANS = [
    (q, "mainspring_runs_open_by_time" if q == "list_open_runs" else i) for q, i in PLANS
]
PARAMS = {"status": "FAILED", "workflow_type": "Rare", "limit": 20}


@pytest.mark.parametrize(("query", "index"), SQLITE_PLANS)
def test_listing_reads_an_index_on_sqlite(sqlite_url: str, query: str, index: str) -> None:
    asyncio.run(_migrate(sqlite_url))
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        sql = load_queries("sqlite")[query]
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql, PARAMS).fetchall()
    steps = [str(row[-1]) for row in plan]
    assert any(f"INDEX {index}" in step for step in steps), steps
    assert "SCAN mainspring_runs" not in steps, steps  # no step reads every run


@pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())
@pytest.mark.parametrize(("query", "index"), PLANS)
def test_listing_reads_an_index_on_postgres_even_with_a_generic_plan(
    query: str, index: str
) -> None:
    sql = qualified(load_queries("postgres"), "mainspring")[query]
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}", sql)
    args = ", ".join(
        repr(PARAMS[n]) if isinstance(PARAMS[n], str) else str(PARAMS[n]) for n in names
    )
    with _pg.fresh_database() as url:
        asyncio.run(_migrate(url))
        with psycopg.connect(url) as conn:
            conn.execute("SET plan_cache_mode = force_generic_plan")
            conn.execute("SET enable_seqscan = off")  # the table is tiny: can it, not will it
            conn.execute(f"PREPARE listing AS {numbered}".replace("%", "%%"))
            plan = conn.execute(f"EXPLAIN EXECUTE listing({args})").fetchall()
    text = "\n".join(row[0] for row in plan)
    assert f"using {index}" in text.lower(), text
    assert "Seq Scan" not in text, text


async def _migrate(url: str) -> None:
    client = await Client.connect(url)
    await client.close()
