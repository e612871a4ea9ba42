"""Fan-out: research several angles in parallel with asyncio.gather, then combine.

    python examples/fanout_agent.py

Each angle is its own activity, so each is retried on its own and recorded on its
own: if the worker dies halfway, the angles already researched are not paid for again.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

from mainspring import Client, Worker, activity, workflow

TASK_QUEUE = "fanout"


@activity.defn(start_to_close_timeout=timedelta(seconds=60))
async def research(topic: str, angle: str) -> str:
    """Research one angle (simulated LLM call)."""
    await asyncio.sleep(0.1)
    return f"{angle}: notes on {topic}"


@activity.defn(start_to_close_timeout=timedelta(seconds=60))
async def combine(notes: list[str]) -> str:
    """Merge the notes into one brief (simulated LLM call)."""
    await asyncio.sleep(0.05)
    return " | ".join(notes)


@workflow.defn
class FanoutAgent:
    @workflow.run
    async def run(self, topic: str, angles: list[str]) -> str:
        notes = await asyncio.gather(*(research(topic, angle) for angle in angles))
        brief: str = await combine(list(notes))
        return brief


async def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        client = await Client.connect(f"sqlite:///{Path(tmp) / 'fanout.db'}")
        try:
            async with Worker(
                client,
                task_queue=TASK_QUEUE,
                workflows=[FanoutAgent],
                activities=[research, combine],
            ):
                result: str = await client.execute_workflow(
                    FanoutAgent.run,
                    "AI agents",
                    ["cost", "latency", "safety", "evals"],
                    id="fanout-1",
                    task_queue=TASK_QUEUE,
                )
        finally:
            await client.close()
    print(result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
