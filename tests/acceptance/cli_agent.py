"""A tiny agent the CLI acceptance tests serve with `mainspring worker`."""

from __future__ import annotations

from datetime import timedelta

from mainspring import RetryPolicy, activity, workflow

TASK_QUEUE = "cli-tests"


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn
class Greeter:
    """Greets, then waits for an `approve` signal (or a `stop` cancel/terminate)."""

    def __init__(self) -> None:
        self.approved_by: str | None = None

    @workflow.run
    async def run(self, name: str) -> dict[str, str]:
        greeting = await greet(name)
        await workflow.wait_condition(lambda: self.approved_by is not None)
        return {"greeting": greeting, "approved_by": str(self.approved_by)}

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.query
    def status(self) -> str:
        return "waiting" if self.approved_by is None else "approved"

    @workflow.query
    def echo(self, value: int) -> int:
        return value * 2


@workflow.defn(name="Sleeper")
class Sleeper:
    """Waits a long time, so it can be cancelled or terminated."""

    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(hours=1))
        return "woke"


@activity.defn
async def throttled() -> str:
    raise RuntimeError("429 Too Many Requests")


@workflow.defn(name="Throttled")
class Throttled:
    """Its one activity fails and then waits out an hour's backoff (for describe)."""

    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            throttled,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(hours=1), maximum_attempts=3, jitter=0
            ),
        )
