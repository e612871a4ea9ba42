"""Workflows and activities used by the integration tests."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import threading
import time
from datetime import datetime, timedelta
from uuid import UUID

from mainspring import ActivityError, ApplicationError, RetryPolicy, activity, workflow

FAST = RetryPolicy(initial_interval=timedelta(milliseconds=5), jitter=0)
TQ = "tests"

calls: dict[str, int] = {}
lock = threading.Lock()


def bump(key: str) -> int:
    """Count a call of ``key``; return the new count."""
    with lock:
        calls[key] = calls.get(key, 0) + 1
        return calls[key]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Order:
    id: UUID
    placed: datetime
    color: Color
    items: list[str]
    total: float


@activity.defn
async def echo(value: str) -> str:
    return value


@activity.defn
def sync_upper(value: str) -> str:
    return value.upper()


@activity.defn(retry_policy=FAST)
async def flaky(key: str, failures: int) -> str:
    n = bump(key)
    if n <= failures:
        raise RuntimeError(f"transient failure {n}")
    return f"ok after {n}"


@activity.defn(
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=5), jitter=0, maximum_attempts=3
    )
)
async def always_fails(key: str) -> str:
    bump(key)
    raise ValueError("boom")


@activity.defn(retry_policy=FAST)
async def refuses(key: str) -> str:
    bump(key)
    raise ApplicationError("bad input", type="BadInput", non_retryable=True)


@activity.defn(retry_policy=FAST)
async def resumable(key: str) -> int:
    """Heartbeats progress; the first attempt dies after step 3, the next resumes."""
    info = activity.info()
    start = activity.heartbeat_details()[0] if activity.heartbeat_details() else 0
    for step in range(start, 6):
        activity.heartbeat(step)
        if info.attempt == 1 and step == 3:
            raise RuntimeError("crash mid-way")
    return int(start)


@activity.defn
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@activity.defn
async def wait_for_cancel(key: str) -> str:
    for _ in range(2000):
        activity.heartbeat()
        await asyncio.sleep(0.01)
    return "never cancelled"


@activity.defn(retry_policy=RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=30)))
async def stops_heartbeating(key: str) -> str:
    """Heartbeats once, then goes silent for longer than its heartbeat timeout."""
    n = bump(key)
    activity.heartbeat("started")
    if n == 1:
        await asyncio.sleep(5)
    return f"attempt {activity.info().attempt}"


@activity.defn(retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(hours=1)))
async def asks_for_quick_retry(key: str) -> str:
    """Fails once asking to be retried after 10 ms (the policy alone would wait an hour)."""
    if bump(key) == 1:
        raise ApplicationError(
            "rate limited", type="RateLimited", next_retry_delay=timedelta(milliseconds=10)
        )
    return "retried quickly"


@activity.defn
async def activity_info() -> dict[str, object]:
    i = activity.info()
    return {
        "attempt": i.attempt,
        "workflow_id": i.workflow_id,
        "activity_id": i.activity_id,
        "key": i.idempotency_key,
    }


@activity.defn
async def make_order(order: Order) -> Order:
    return dataclasses.replace(order, items=[*order.items, "gift"])


@workflow.defn
class Hello:
    @workflow.run
    async def run(self, name: str) -> str:
        a = await workflow.execute_activity(echo, f"hello {name}")
        b = await sync_upper(a)
        return b


@workflow.defn(name="custom-name")
class Named:
    @workflow.run
    async def run(self) -> str:
        return "named"


@workflow.defn
class Approval:
    def __init__(self) -> None:
        self.decision: str | None = None
        self.signals: list[str] = []

    @workflow.run
    async def run(self, timeout: float) -> str:
        ok = await workflow.wait_condition(lambda: self.decision is not None, timeout=timeout)
        if not ok:
            return "expired"
        return f"decided {self.decision} after {len(self.signals)} signal(s)"

    @workflow.signal
    def decide(self, decision: str) -> None:
        self.signals.append(decision)
        if self.decision is None:
            self.decision = decision

    @workflow.query
    def status(self) -> str:
        return "waiting" if self.decision is None else f"decided {self.decision}"

    @workflow.query
    def broken(self) -> str:
        raise ValueError("query blew up")


@workflow.defn
class Retrying:
    @workflow.run
    async def run(self, key: str, failures: int) -> str:
        return str(await flaky(key, failures))


@workflow.defn
class Failing:
    @workflow.run
    async def run(self, key: str, which: str) -> str:
        if which == "always":
            return str(await always_fails(key))
        if which == "refuses":
            return str(await refuses(key))
        raise ApplicationError("workflow gave up", type="GaveUp")


@workflow.defn
class CatchesActivityError:
    @workflow.run
    async def run(self, key: str) -> str:
        try:
            await always_fails(key)
        except ActivityError as err:
            cause = err.__cause__
            return f"{type(err).__name__}<-{type(cause).__name__}:{cause}"
        return "no error"


@workflow.defn
class Parallel:
    @workflow.run
    async def run(self, n: int) -> list[str]:
        results = await asyncio.gather(*(echo(str(i)) for i in range(n)))
        return list(results)


@workflow.defn
class Primitives:
    """asyncio tasks, Event, Lock, Queue and wait_for inside a workflow."""

    @workflow.run
    async def run(self) -> list[str]:
        out: list[str] = []
        event = asyncio.Event()
        lock_ = asyncio.Lock()
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def producer() -> None:
            for i in range(3):
                await queue.put(await echo(f"item{i}"))
            event.set()

        async def consumer() -> None:
            await event.wait()
            while not queue.empty():
                async with lock_:
                    out.append(queue.get_nowait())

        await asyncio.gather(asyncio.create_task(producer()), consumer())
        try:
            await asyncio.wait_for(slow(5.0), timeout=0.1)
            out.append("no timeout")
        except TimeoutError:
            out.append("timed out")
        await asyncio.sleep(0.05)
        out.append("slept")
        return out


@workflow.defn
class Deterministic:
    @workflow.run
    async def run(self) -> dict[str, object]:
        before = workflow.now()
        r = workflow.random().randint(0, 10**9)
        u = str(workflow.uuid4())
        info = workflow.info()
        await workflow.sleep(timedelta(milliseconds=50))
        after = workflow.now()
        return {
            "r": r,
            "u": u,
            "workflow_id": info.workflow_id,
            "task_queue": info.task_queue,
            "advanced": after > before,
        }


@workflow.defn
class Sleeper:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        return "awake"


@workflow.defn
class Cancellable:
    def __init__(self) -> None:
        self.stage = "started"

    @workflow.run
    async def run(self, key: str) -> str:
        try:
            self.stage = "waiting"
            await wait_for_cancel(key)
            return "finished"
        except asyncio.CancelledError:
            self.stage = "cleaning up"
            await echo("cleanup")
            self.stage = "cleaned"
            raise

    @workflow.query
    def where(self) -> str:
        return self.stage


@workflow.defn
class Heartbeats:
    @workflow.run
    async def run(self, key: str) -> int:
        return int(await resumable(key))


@workflow.defn
class Timeouts:
    @workflow.run
    async def run(self, kind: str) -> str:
        try:
            if kind == "start_to_close":
                await workflow.execute_activity(
                    slow,
                    5.0,
                    start_to_close_timeout=timedelta(milliseconds=100),
                    retry_policy=RetryPolicy(
                        maximum_attempts=2, initial_interval=timedelta(milliseconds=5)
                    ),
                )
            else:
                await workflow.execute_activity(
                    slow,
                    5.0,
                    schedule_to_close_timeout=timedelta(milliseconds=300),
                    retry_policy=FAST,
                )
        except ActivityError as err:
            cause = err.__cause__
            return f"{type(cause).__name__}:{getattr(cause, 'timeout_type', '')}"
        return "no timeout"


@workflow.defn
class HeartbeatTimeout:
    @workflow.run
    async def run(self, key: str) -> str:
        return str(
            await workflow.execute_activity(
                stops_heartbeating,
                key,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=timedelta(milliseconds=300),
                retry_policy=RetryPolicy(
                    maximum_attempts=2, initial_interval=timedelta(milliseconds=10)
                ),
            )
        )


@workflow.defn
class QuickRetry:
    @workflow.run
    async def run(self, key: str) -> str:
        return str(await asks_for_quick_retry(key))


@workflow.defn
class Info:
    @workflow.run
    async def run(self) -> dict[str, object]:
        return dict(await activity_info())


@workflow.defn
class Orders:
    @workflow.run
    async def run(self, order: Order) -> Order:
        return await make_order(order)


@workflow.defn
class Buggy:
    """Raises a plain bug until ``fixed`` is set: the task fails and is retried."""

    fixed = False

    @workflow.run
    async def run(self) -> str:
        await echo("step 1")
        if not Buggy.fixed:
            raise KeyError("a bug")
        return "fixed"


@workflow.defn
class Hangs:
    @workflow.run
    async def run(self) -> str:
        time.sleep(1.0)  # blocks the thread: the deadlock detector must notice
        return "done"


@workflow.defn
class SpinsLater:
    """Busy-loops in its second activation (a cached run, decided on the worker's thread)."""

    @workflow.run
    async def run(self) -> str:
        await echo("first")
        while True:
            pass


@workflow.defn
class Evolving:
    """Its code changes between versions (``version`` is set by tests)."""

    version = 1

    @workflow.run
    async def run(self) -> str:
        await echo("a")
        if Evolving.version == 1:
            await echo("b")
        elif Evolving.version == 2:
            await sync_upper("b")  # a different activity: nondeterministic
        else:
            if workflow.patched("use-upper"):
                await sync_upper("b")
            else:
                await echo("b")
        await workflow.wait_condition(lambda: False, timeout=0.2)
        return f"v{Evolving.version}"


ALL_WORKFLOWS = [
    SpinsLater,
    HeartbeatTimeout,
    QuickRetry,
    Hello,
    Named,
    Approval,
    Retrying,
    Failing,
    CatchesActivityError,
    Parallel,
    Primitives,
    Deterministic,
    Sleeper,
    Cancellable,
    Heartbeats,
    Timeouts,
    Info,
    Orders,
    Buggy,
    Hangs,
    Evolving,
]
ALL_ACTIVITIES = [
    stops_heartbeating,
    asks_for_quick_retry,
    echo,
    sync_upper,
    flaky,
    always_fails,
    refuses,
    resumable,
    slow,
    wait_for_cancel,
    activity_info,
    make_order,
]
