"""Workflows whose recorded histories live in ``histories/``: change them only with a patch."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from mainspring import activity, workflow

TQ = "replay"


@activity.defn
async def search(query: str) -> list[str]:
    return [f"{query}: result {i}" for i in range(3)]


@activity.defn
def summarize(texts: list[str]) -> str:
    return f"{len(texts)} texts"


@workflow.defn
class ResearchAgent:
    def __init__(self) -> None:
        self.decision: str | None = None

    @workflow.run
    async def run(self, topic: str) -> str:
        hits = await workflow.execute_activity(
            search, topic, start_to_close_timeout=timedelta(seconds=10)
        )
        summary = await summarize(hits)
        if not await workflow.wait_condition(lambda: self.decision is not None, timeout=5):
            return "expired"
        await workflow.sleep(timedelta(milliseconds=50))
        return f"{summary} ({self.decision})"

    @workflow.signal
    def decide(self, decision: str) -> None:
        self.decision = decision


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, n: int) -> list[str]:
        parts = await asyncio.gather(*(search(f"q{i}") for i in range(n)))
        return [p[0] for p in parts]


@workflow.defn(name="ResearchAgent")
class ResearchAgentChanged:
    """ResearchAgent after an unguarded change: it no longer searches first."""

    def __init__(self) -> None:
        self.decision: str | None = None

    @workflow.run
    async def run(self, topic: str) -> str:
        summary = await summarize([topic])
        return summary

    @workflow.signal
    def decide(self, decision: str) -> None:
        self.decision = decision


async def record(directory: str) -> None:
    """Run each workflow once and export its history (``python -m tests.replay.workflows``)."""
    import json
    import pathlib
    import tempfile

    from mainspring import Client, Worker
    from mainspring.history import histories_to_json

    out = pathlib.Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        client = await Client.connect(f"sqlite:///{tmp}/r.db")
        async with Worker(
            client, task_queue=TQ, workflows=[ResearchAgent, FanOut], activities=[search, summarize]
        ):
            h = await client.start_workflow(
                ResearchAgent.run, "agents", id="research", task_queue=TQ
            )
            await h.signal(ResearchAgent.decide, "approved")
            await h.result()
            f = await client.start_workflow(FanOut.run, 5, id="fanout", task_queue=TQ)
            await f.result()
            for handle, name in ((h, "research_agent"), (f, "fanout")):
                events = await handle.fetch_history()
                doc = histories_to_json(handle.id, handle.run_id or "", events)
                (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        await client.close()


if __name__ == "__main__":
    import pathlib

    asyncio.run(record(str(pathlib.Path(__file__).parent / "histories")))
