"""A research agent: search, summarize, wait for a human decision, then finish.

    python examples/research_agent.py

Every step is recorded: kill the process at any point and a worker started on the
same database resumes from the last recorded event, without re-running (or re-paying
for) finished steps. ``main()`` runs an embedded worker and client on a temporary
SQLite file and sends the human's decision itself, so it finishes in about a second.
To serve the agent from a separate process instead:

    mainspring worker examples/research_agent.py --db sqlite:///agents.db
    mainspring workflow start ResearchAgent --id r1 -q research --arg '"durable execution"'
    mainspring workflow signal r1 decide --arg '"approved"'
    mainspring workflow result r1
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

from mainspring import Client, RetryPolicy, Worker, activity, workflow

TASK_QUEUE = "research"


@activity.defn(start_to_close_timeout=timedelta(seconds=30))
async def search(query: str) -> list[str]:
    """Search the web (simulated)."""
    await asyncio.sleep(0.05)
    return [f"{query}: survey", f"{query}: benchmark", f"{query}: critique"]


@activity.defn(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5),
)
async def summarize(documents: list[str]) -> str:
    """Ask an LLM for a summary (simulated; a real one is retried on 429s and 5xx)."""
    await asyncio.sleep(0.05)
    return f"{len(documents)} sources agree that it matters"


@workflow.defn
class ResearchAgent:
    """Research a topic, then wait up to a week for a human to approve the summary."""

    def __init__(self) -> None:
        self.decision: str | None = None
        self.stage = "starting"

    @workflow.run
    async def run(self, topic: str) -> str:
        self.stage = "searching"
        documents = await search(topic)
        self.stage = "summarizing"
        summary = await summarize(documents)
        self.stage = "waiting for a decision"
        decided = await workflow.wait_condition(
            lambda: self.decision is not None, timeout=timedelta(days=7)
        )
        if not decided:
            return f"{topic}: no decision within a week; summary dropped"
        self.stage = "publishing"
        await workflow.sleep(timedelta(milliseconds=200))  # a durable timer
        self.stage = "done"
        return f"{topic}: {summary} ({self.decision})"

    @workflow.signal
    def decide(self, decision: str) -> None:
        self.decision = decision

    @workflow.query
    def progress(self) -> str:
        return self.stage


async def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        client = await Client.connect(f"sqlite:///{Path(tmp) / 'agents.db'}")
        try:
            async with Worker(
                client,
                task_queue=TASK_QUEUE,
                workflows=[ResearchAgent],
                activities=[search, summarize],
            ):
                handle = await client.start_workflow(
                    ResearchAgent.run,
                    "durable execution",
                    id="research-1",
                    task_queue=TASK_QUEUE,
                )
                while await handle.query(ResearchAgent.progress) != "waiting for a decision":
                    await asyncio.sleep(0.05)
                print("agent is waiting; a human approves")
                await handle.signal(ResearchAgent.decide, "approved")
                result: str = await handle.result(timeout=30)
        finally:
            await client.close()
    print(result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
