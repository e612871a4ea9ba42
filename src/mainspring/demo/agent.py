"""The demo's research agent: eight steps of simulated web searches and LLM calls.

Serve it with ``mainspring worker mainspring.demo.agent``. Each activity sleeps a
little (``MAINSPRING_DEMO_STEP_SECONDS``, default 0.4 s) so a run takes a few seconds,
and some steps fail deterministically on their first attempt, like a flaky API.

When ``MAINSPRING_DEMO_LEDGER`` names a file, every activity body appends one JSON line
to it per phase (``start``, ``fail``, ``done``): the side-effect ledger the demo checks
against the history to prove which steps ran once, which were retried, and that no
finished step ran again after a crash.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from typing import Any

from mainspring import ApplicationError, RetryPolicy, activity, workflow

TASK_QUEUE = "demo"
LEDGER_ENV = "MAINSPRING_DEMO_LEDGER"
WORKER_ENV = "MAINSPRING_DEMO_WORKER"

RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5, jitter=0)
# A killed worker's attempt is retried once this lapses (the lease runs out).
STEP_TIMEOUT = timedelta(seconds=2)


def _step_seconds() -> float:
    return float(os.environ.get("MAINSPRING_DEMO_STEP_SECONDS", "0.4"))


def _ledger(step: str, phase: str) -> None:
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    info = activity.info()
    line = json.dumps(
        {
            "workflow_id": info.workflow_id,
            "seq": int(info.activity_id),
            "step": step,
            "activity": info.activity_type,
            "attempt": info.attempt,
            "phase": phase,
            "worker": os.environ.get(WORKER_ENV, "?"),
            "pid": os.getpid(),
        }
    )
    # One short O_APPEND write per line: lines from concurrent activities never mix.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def _work(step: str, fail_first: bool, what: str) -> None:
    _ledger(step, "start")
    await asyncio.sleep(_step_seconds())
    if fail_first and activity.info().attempt == 1:
        _ledger(step, "fail")
        raise ApplicationError(
            f"simulated transient failure: {what} returned HTTP 503", type="TransientError"
        )
    _ledger(step, "done")


@activity.defn(start_to_close_timeout=STEP_TIMEOUT, retry_policy=RETRY)
async def web_search(step: str, query: str, fail_first: bool) -> list[str]:
    """Pretend to search the web; return two 'documents'."""
    await _work(step, fail_first, "the search API")
    return [f"{query}: finding A", f"{query}: finding B"]


@activity.defn(start_to_close_timeout=STEP_TIMEOUT, retry_policy=RETRY)
async def call_llm(step: str, prompt: str, fail_first: bool) -> str:
    """Pretend to call an LLM; return a short 'completion'."""
    await _work(step, fail_first, "the LLM API")
    return f"[{step}] " + (prompt if len(prompt) < 60 else prompt[:57] + "...")


@workflow.defn
class DemoResearchAgent:
    """Plan, search three angles, summarize, draft, review, finalize."""

    def __init__(self) -> None:
        self.stage = "starting"

    @workflow.run
    async def run(self, topic: str) -> dict[str, Any]:
        self.stage = "planning"
        plan = await call_llm("plan", f"plan a report on {topic}", False)
        notes: list[str] = []
        for i, angle in enumerate(("history", "state of the art", "open problems"), 1):
            self.stage = f"searching ({angle})"
            notes += await web_search(f"search {i}", f"{topic} {angle}", i == 2)
        self.stage = "summarizing"
        summary = await call_llm("summarize", f"summarize {len(notes)} notes", False)
        self.stage = "drafting"
        draft = await call_llm("draft", f"draft from {plan} and {summary}", True)
        self.stage = "reviewing"
        review = await call_llm("review", f"review {draft}", False)
        self.stage = "finalizing"
        report = await call_llm("finalize", f"final report on {topic} after {review}", False)
        self.stage = "done"
        return {"topic": topic, "report": report, "sources": len(notes), "steps": 8}

    @workflow.query
    def progress(self) -> str:
        """What the agent is doing now."""
        return self.stage
