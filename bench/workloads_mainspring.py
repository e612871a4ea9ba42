"""Mainspring's side of the benchmark: W1–W6 (see README.md) on SQLite or PostgreSQL.

Run by ``run.py`` (one subprocess per measurement); ``run.py --profile W1`` imports
:func:`run_workload` and runs it in-process under cProfile.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    SCALING_PROCESSES,
    WORKLOADS,
    Sizes,
    cpu_ticks,
    create_pg_database,
    emit,
    median_latency_ms,
    new_id,
    scaling_cpu,
    scaling_summary,
    sizes,
    skip,
    wait_line,
    workdir,
    workload_args,
)

from mainspring import Client, Worker, activity, workflow

# ---------------------------------------------------------------- workflows


@activity.defn
async def noop(i: int) -> int:
    return i


@workflow.defn(name="bench-chain")
class Chain:
    @workflow.run
    async def run(self, n: int) -> int:
        for i in range(n):
            await noop(i)
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
        results = await asyncio.gather(*(noop(i) for i in range(n)))
        return len(results)


@workflow.defn(name="bench-recovery")
class Recovery:
    """``n`` finished activities (in batches of 100 parallel ones), then wait for a signal."""

    def __init__(self) -> None:
        self.done = 0
        self.go = False

    @workflow.run
    async def run(self, n: int) -> int:
        while self.done < n:
            batch = min(100, n - self.done)
            await asyncio.gather(*(noop(self.done + i) for i in range(batch)))
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
        await workflow.sleep(seconds)
        return 1


WORKFLOWS = [Chain, Empty, Fanout, Recovery, WaitSignal, Timer]


def _worker(client: Client, task_queue: str) -> Worker:
    return Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=[noop])


# ---------------------------------------------------------------- workloads


async def _many(client: Client, tq: str, wf: Any, count: int, *args: Any) -> float:
    """Start ``count`` workflows at once and wait for all results; the elapsed seconds."""
    t0 = time.perf_counter()
    handles = await asyncio.gather(
        *(client.start_workflow(wf, *args, id=new_id("w"), task_queue=tq) for _ in range(count))
    )
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - t0


async def _alone(client: Client, tq: str, wf: Any, samples: int, *args: Any) -> float:
    async def one() -> None:
        await client.execute_workflow(wf, *args, id=new_id("w"), task_queue=tq)

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
        await asyncio.sleep(0.2)  # let it park on the signal
        t0 = time.perf_counter()
        await handle.signal(WaitSignal.proceed)
        await handle.result()
        if i:  # the first is a warm-up
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


async def w4(url: str, s: Sizes) -> dict[str, float]:
    """Kill a worker holding a run of many finished activities; time a fresh one's recovery."""
    wf_id, tq = new_id("rec"), new_id("tq")
    me = os.path.abspath(__file__)
    common = ["--workload", "W4", "--db", url, "--wf-id", wf_id, "--task-queue", tq]
    n = ["--n", str(s.recovery_activities)]
    doomed = subprocess.Popen(
        [sys.executable, me, *common, *n, "--child", "doomed"], stdout=subprocess.PIPE
    )
    try:
        wait_line(doomed, "READY", timeout=600)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    client = await Client.connect(url)
    try:
        handle = client.get_workflow_handle(wf_id)
        t0 = time.perf_counter()
        fresh = subprocess.Popen([sys.executable, me, *common, "--child", "fresh"])
        try:
            await handle.signal(Recovery.proceed)
            done = await handle.result(timeout=600)
            elapsed = time.perf_counter() - t0
        finally:
            fresh.terminate()
            fresh.wait()
    finally:
        await client.close()
    if done != s.recovery_activities:
        raise RuntimeError(f"recovered run returned {done}, expected {s.recovery_activities}")
    return {"w4_recovery_s": elapsed}


async def w4_child(role: str, url: str, wf_id: str, tq: str, n: int) -> None:
    client = await Client.connect(url)
    worker = _worker(client, tq)
    if role == "fresh":
        await worker.run()  # until SIGTERM
        await client.close()
        return
    await worker.start()
    handle = await client.start_workflow(Recovery.run, n, id=wf_id, task_queue=tq)
    while await handle.query(Recovery.progress) < n:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # let the last workflow task (now waiting) commit
    print("READY", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


# ---------------------------------------------------------------- workers in other processes


class _Workers:
    """``n`` worker processes of one task queue; the client stays in this process."""

    def __init__(self, url: str, task_queue: str, n: int) -> None:
        me = os.path.abspath(__file__)
        cmd = [
            sys.executable,
            me,
            "--workload",
            "W1P",
            "--child",
            "worker",
            "--db",
            url,
            "--task-queue",
            task_queue,
        ]
        self.procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for _ in range(n)]

    def __enter__(self) -> _Workers:
        try:
            for p in self.procs:
                wait_line(p, "READY", timeout=120)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def worker_child(url: str, tq: str) -> None:
    """A worker process for W1P/W5P: serves ``tq`` until SIGTERM."""
    client = await Client.connect(url)
    worker = _worker(client, tq)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    print("READY", flush=True)
    await stop.wait()
    await worker.shutdown()
    await client.close()


async def w1p(url: str, s: Sizes) -> dict[str, float]:
    """W1's burst with the workers in 1, 2 and 4 processes of their own (a client without one)."""
    out: dict[str, float] = {}
    client = await Client.connect(url)
    try:
        for n in SCALING_PROCESSES:
            tq = new_id("tq")
            with _Workers(url, tq, n) as workers:
                await client.execute_workflow(
                    Chain.run, s.chain_length, id=new_id("warm"), task_queue=tq
                )
                pids = [p.pid for p in workers.procs]
                before = cpu_ticks(pids)
                elapsed = await _many(client, tq, Chain.run, s.scaling_workflows, s.chain_length)
                after = cpu_ticks(pids)
            out[f"w1p{n}_act_s"] = s.scaling_workflows * s.chain_length / elapsed
            out.update(scaling_cpu(n, before, after))
    finally:
        await client.close()
    return scaling_summary(out)


async def w5p(url: str, s: Sizes) -> dict[str, float]:
    """W5 with the worker in another process: the signal and the result cross processes."""
    client = await Client.connect(url)
    try:
        tq = new_id("tq")
        with _Workers(url, tq, 1):
            return {"w5p_lat_ms": (await w5(client, tq, s))["w5_lat_ms"]}
    finally:
        await client.close()


async def run_workload(name: str, url: str, s: Sizes) -> dict[str, float]:
    """Measure one workload against the store at ``url``."""
    if name == "W4":
        return await w4(url, s)
    if name == "W1P":
        return await w1p(url, s)
    if name == "W5P":
        return await w5p(url, s)
    client = await Client.connect(url)
    try:
        tq = new_id("tq")
        async with _worker(client, tq):
            result: dict[str, float] = await IN_PROCESS[name](client, tq, s)
            return result
    finally:
        await client.close()


def store_url(store: str) -> tuple[str, Callable[[], None]]:
    """A fresh database of the given kind: (URL, cleanup)."""
    if store == "postgres":
        if importlib.util.find_spec("mainspring.store.postgres") is None:
            skip("Mainspring has no PostgreSQL store yet (mainspring.store.postgres is missing)")
        return create_pg_database()
    return f"sqlite:///{os.path.join(workdir('mainspring'), 'bench.db')}", lambda: None


def main() -> None:
    args = workload_args(__doc__ or "", WORKLOADS)
    if args.child == "worker":
        asyncio.run(worker_child(args.db, args.task_queue))
        return
    if args.child:
        asyncio.run(w4_child(args.child, args.db, args.wf_id, args.task_queue, args.n))
        return
    url, cleanup = store_url(args.store)
    try:
        emit(asyncio.run(run_workload(args.workload, url, sizes(args.quick))))
    finally:
        cleanup()


if __name__ == "__main__":
    main()
