"""The workflow and activity of the crash test (``test_crash.py``).

Worker processes (``crash_worker.py``) serve :class:`CrashAgent` and :func:`step`; the
test process imports this module to start workflows, compute the expected results and
replay the final histories.

Every body of :func:`step` appends lines to a *side-effect ledger*: one file per worker
process (``ledger-<pid>.jsonl`` in the directory named by :data:`LEDGER_ENV`), written
with ``O_APPEND`` and one ``write`` per line, so a SIGKILL can cut a body short but never
a line. A line says which body ran (workflow id, activity seq, attempt, pid, time) and how far
it got: ``start``, then ``end`` (it returned a result) or ``fail`` (it raised on purpose).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from datetime import timedelta
from typing import Any

from mainspring import ApplicationError, RetryPolicy, activity, workflow

TASK_QUEUE = "crash"
ACTIVITIES = 10
TIMER_SECONDS = 0.2
LEDGER_ENV = "MAINSPRING_CRASH_LEDGER"

_ledger_fd: int | None = None


def expected_step(n: int, i: int) -> int:
    """The result of activity ``i`` of workflow number ``n``."""
    return n * 1000 + i * i + 7


def bonus_for(n: int) -> int:
    """The amount signalled to workflow number ``n``."""
    return 100_000 + n


def expected_result(n: int) -> dict[str, Any]:
    """What workflow number ``n`` returns once signalled exactly once."""
    values = [expected_step(n, i) for i in range(ACTIVITIES)]
    bonus = bonus_for(n)
    return {"n": n, "values": values, "bonuses": [bonus], "total": sum(values) + bonus}


def flaky(n: int, i: int) -> bool:
    """Whether the first attempt of activity ``i`` of workflow ``n`` fails on purpose."""
    return n % 10 == 3 and i == 5


def _write_ledger(phase: str, n: int, i: int) -> None:
    global _ledger_fd
    if _ledger_fd is None:
        folder = os.environ[LEDGER_ENV]
        path = os.path.join(folder, f"ledger-{os.getpid()}.jsonl")
        _ledger_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    info = activity.info()
    line = json.dumps(
        {
            "phase": phase,
            "workflow_id": info.workflow_id,
            "run_id": info.run_id,
            "seq": int(info.activity_id),
            "attempt": info.attempt,
            "pid": os.getpid(),
            "time": round(time.time(), 4),
            "n": n,
            "i": i,
        }
    )
    os.write(_ledger_fd, (line + "\n").encode())


@activity.defn(
    start_to_close_timeout=timedelta(seconds=2),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=100), maximum_interval=timedelta(seconds=1)
    ),
)
async def step(n: int, i: int) -> int:
    """A few milliseconds of "work" with a side effect recorded in the ledger."""
    _write_ledger("start", n, i)
    await asyncio.sleep(random.uniform(0.003, 0.015))
    if flaky(n, i) and activity.info().attempt == 1:
        _write_ledger("fail", n, i)
        raise ApplicationError("flaky first attempt", type="Flaky")
    _write_ledger("end", n, i)
    return expected_step(n, i)


@workflow.defn
class CrashAgent:
    """Ten activities (three in a row, four at once, a timer, three in a row), then a signal."""

    def __init__(self) -> None:
        self.bonuses: list[int] = []

    @workflow.run
    async def run(self, n: int) -> dict[str, Any]:
        values: list[int] = []
        for i in range(3):
            values.append(await step(n, i))
        values.extend(await asyncio.gather(*(step(n, i) for i in range(3, 7))))
        await workflow.sleep(TIMER_SECONDS)
        for i in range(7, ACTIVITIES):
            values.append(await step(n, i))
        await workflow.wait_condition(lambda: bool(self.bonuses))
        return {
            "n": n,
            "values": values,
            "bonuses": list(self.bonuses),
            "total": sum(values) + sum(self.bonuses),
        }

    @workflow.signal
    def bonus(self, amount: int) -> None:
        self.bonuses.append(amount)
