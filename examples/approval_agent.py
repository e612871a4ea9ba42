"""Human in the loop: an agent drafts an email and sends it only once a human approves.

    python examples/approval_agent.py

The workflow waits in the database, not in memory, for an ``approve`` or ``reject``
signal; the ``status`` query shows what it is waiting for. A rejection's comment goes
back to the LLM for a new draft. ``main()`` plays the reviewer: it rejects the first
draft and approves the second.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mainspring import Client, Worker, WorkflowHandle, activity, workflow

TASK_QUEUE = "approvals"


@dataclass
class Review:
    approved: bool
    reviewer: str
    comment: str = ""


@activity.defn(start_to_close_timeout=timedelta(seconds=60))
async def draft_email(request: str, feedback: list[str]) -> str:
    """Ask an LLM for a draft (simulated), taking earlier feedback into account."""
    await asyncio.sleep(0.05)
    tone = " ".join(f"[{f}]" for f in feedback)
    return f"Dear customer, about {request!r}: we are on it. {tone}".strip()


@activity.defn(start_to_close_timeout=timedelta(seconds=30))
async def send_email(body: str) -> str:
    """Send the email (simulated). Runs once the draft is approved, never before."""
    await asyncio.sleep(0.05)
    return f"sent {len(body)} characters"


@workflow.defn
class ApprovalAgent:
    """Draft → wait for review → redraft on rejection (up to 3 rounds) → send."""

    def __init__(self) -> None:
        self.stage = "drafting"
        self.draft = ""
        self.review: Review | None = None
        self.round = 0

    @workflow.run
    async def run(self, request: str) -> str:
        feedback: list[str] = []
        for self.round in range(1, 4):
            self.stage = "drafting"
            self.draft = await draft_email(request, feedback)
            self.stage = "awaiting approval"
            self.review = None
            if not await workflow.wait_condition(
                lambda: self.review is not None, timeout=timedelta(days=2)
            ):
                return "no review within two days; nothing sent"
            assert self.review is not None
            if self.review.approved:
                self.stage = "sending"
                receipt = await send_email(self.draft)
                self.stage = "sent"
                return f"{receipt}, approved by {self.review.reviewer}"
            feedback.append(self.review.comment)
        self.stage = "gave up"
        return "rejected three times; nothing sent"

    @workflow.signal
    def approve(self, reviewer: str) -> None:
        self.review = Review(approved=True, reviewer=reviewer)

    @workflow.signal
    def reject(self, reviewer: str, comment: str) -> None:
        self.review = Review(approved=False, reviewer=reviewer, comment=comment)

    @workflow.query
    def status(self) -> dict[str, str]:
        return {"stage": self.stage, "draft": self.draft, "round": str(self.round)}


async def wait_for_review(handle: WorkflowHandle, round_: int) -> str:
    """Poll the status query until draft ``round_`` awaits review (a UI would show it)."""
    while True:
        status: dict[str, str] = await handle.query(ApprovalAgent.status)
        if status["stage"] == "awaiting approval" and status["round"] == str(round_):
            return status["draft"]
        await asyncio.sleep(0.05)


async def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        client = await Client.connect(f"sqlite:///{Path(tmp) / 'approvals.db'}")
        try:
            async with Worker(
                client,
                task_queue=TASK_QUEUE,
                workflows=[ApprovalAgent],
                activities=[draft_email, send_email],
            ):
                handle = await client.start_workflow(
                    ApprovalAgent.run,
                    "refund for order 1042",
                    id="approval-1",
                    task_queue=TASK_QUEUE,
                )
                print(f"review requested: {await wait_for_review(handle, 1)}")
                await handle.signal(ApprovalAgent.reject, "ana", "mention the refund date")
                print(f"review requested: {await wait_for_review(handle, 2)}")
                await handle.signal(ApprovalAgent.approve, "ana")
                result: str = await handle.result(timeout=30)
        finally:
            await client.close()
    print(result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
