"""DBOS's side of the benchmark: W1–W6 (see README.md) with DBOS Transact on SQLite or PostgreSQL.

Async workflows and steps, DBOS's default configuration (so SQLite's default
``synchronous=FULL`` with a rollback journal, and its default notification polling);
only the client's result polling interval is shortened so the client is not what is
measured.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    PEER_WORKLOADS,
    SCALING_PROCESSES,
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
from dbos import DBOS, DBOSClient, DBOSConfig, SetWorkflowID

POLL = 0.01  # seconds between a client's result polls


# ---------------------------------------------------------------- workflows


@DBOS.step()
async def noop(i: int) -> int:
    return i


@DBOS.workflow()
async def chain(n: int) -> int:
    for i in range(n):
        await noop(i)
    return n


@DBOS.workflow()
async def empty() -> int:
    return 0


@DBOS.workflow()
async def fanout(n: int) -> int:
    results = await asyncio.gather(*(noop(i) for i in range(n)))
    return len(results)


@DBOS.workflow()
async def recovery(n: int) -> int:
    done = 0
    while done < n:
        batch = min(100, n - done)
        await asyncio.gather(*(noop(done + i) for i in range(batch)))
        done += batch
    await DBOS.set_event_async("ready", done)
    await DBOS.recv_async("go", timeout_seconds=600)
    return done


@DBOS.workflow()
async def wait_signal() -> int:
    await DBOS.recv_async("go", timeout_seconds=600)
    return 1


@DBOS.workflow()
async def timer(seconds: float) -> int:
    await DBOS.sleep_async(seconds)
    return 1


def launch(url: str) -> None:
    config: DBOSConfig = {"name": "bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()


# ---------------------------------------------------------------- workloads


async def _start(wf: Any, *args: Any) -> Any:
    with SetWorkflowID(new_id("w")):
        return await DBOS.start_workflow_async(wf, *args)


async def _many(wf: Any, count: int, *args: Any) -> float:
    t0 = time.perf_counter()
    handles = await asyncio.gather(*(_start(wf, *args) for _ in range(count)))
    await asyncio.gather(*(h.get_result() for h in handles))
    return time.perf_counter() - t0


async def _alone(wf: Any, samples: int, *args: Any) -> float:
    async def one() -> None:
        await (await _start(wf, *args)).get_result()

    return await median_latency_ms(one, samples)


async def w1(s: Sizes) -> dict[str, float]:
    await (await _start(chain, s.chain_length)).get_result()
    elapsed = await _many(chain, s.chain_workflows, s.chain_length)
    return {
        "w1_wf_s": s.chain_workflows / elapsed,
        "w1_act_s": s.chain_workflows * s.chain_length / elapsed,
        "w1_lat_ms": await _alone(chain, s.latency_samples, s.chain_length),
    }


async def w2(s: Sizes) -> dict[str, float]:
    await (await _start(empty)).get_result()
    elapsed = await _many(empty, s.empty_workflows)
    return {
        "w2_wf_s": s.empty_workflows / elapsed,
        "w2_lat_ms": await _alone(empty, s.latency_samples),
    }


async def w3(s: Sizes) -> dict[str, float]:
    return {"w3_lat_ms": await _alone(fanout, s.latency_samples, s.fanout)}


async def w5(s: Sizes) -> dict[str, float]:
    times = []
    for i in range(s.latency_samples + 1):
        handle = await _start(wait_signal)
        await asyncio.sleep(0.2)  # let it park on recv
        t0 = time.perf_counter()
        await DBOS.send_async(handle.get_workflow_id(), "x", "go")
        await handle.get_result()
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"w5_lat_ms": times[len(times) // 2]}


async def w6(s: Sizes) -> dict[str, float]:
    await (await _start(timer, 0.01)).get_result()
    elapsed = await _many(timer, s.timer_workflows, s.timer_seconds)
    return {"w6_overhead_s": elapsed - s.timer_seconds}


IN_PROCESS: dict[str, Callable[[Sizes], Any]] = {"W1": w1, "W2": w2, "W3": w3, "W5": w5, "W6": w6}


def w4(url: str, s: Sizes) -> dict[str, float]:
    wf_id = new_id("rec")
    me = os.path.abspath(__file__)
    common = ["--workload", "W4", "--db", url, "--wf-id", wf_id, "--n", str(s.recovery_activities)]
    doomed = subprocess.Popen(
        [sys.executable, me, *common, "--child", "doomed"], stdout=subprocess.PIPE
    )
    try:
        wait_line(doomed, "READY", timeout=600)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    client = DBOSClient(system_database_url=url)
    try:
        t0 = time.perf_counter()
        fresh = subprocess.Popen([sys.executable, me, *common, "--child", "fresh"])
        try:
            client.send(wf_id, "x", "go")
            done = client.retrieve_workflow(wf_id).get_result(polling_interval_sec=POLL)
            elapsed = time.perf_counter() - t0
        finally:
            fresh.terminate()
            fresh.wait()
    finally:
        client.destroy()
    if done != s.recovery_activities:
        raise RuntimeError(f"recovered run returned {done}, expected {s.recovery_activities}")
    return {"w4_recovery_s": elapsed}


async def w4_child(role: str, url: str, wf_id: str, n: int) -> None:
    launch(url)  # a fresh process recovers the killed one's pending workflow here
    if role == "fresh":
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        return
    with SetWorkflowID(wf_id):
        await DBOS.start_workflow_async(recovery, n)
    await DBOS.get_event_async(wf_id, "ready", timeout_seconds=600)
    print("READY", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


# ---------------------------------------------------------------- W1P: workers in processes

SCALING_QUEUE = "bench_w1p"


async def worker_child(url: str) -> None:
    """A W1P worker process: runs the workflows enqueued on :data:`SCALING_QUEUE`."""
    launch(url)
    await DBOS.register_queue_async(SCALING_QUEUE, polling_interval_sec=0.05)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    DBOS.destroy()


async def _burst(client: DBOSClient, url: str, count: int, n: int) -> None:
    """Enqueue ``count`` chains at once and wait until all have succeeded.

    DBOS runs work in other processes through a queue: a client enqueues, any worker
    process dequeues. Completion is read with one query every 50 ms (one result poll per
    workflow would make the client what is measured).
    """
    import psycopg

    ids = [new_id("w") for _ in range(count)]
    await asyncio.gather(
        *(
            client.enqueue_async(
                {"queue_name": SCALING_QUEUE, "workflow_name": "chain", "workflow_id": wid}, n
            )
            for wid in ids
        )
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM dbos.workflow_status "
                "WHERE status = 'SUCCESS' AND workflow_uuid = ANY(%s)",
                (ids,),
            )
            row = await cur.fetchone()
            if row is not None and row[0] == count:
                return
            await asyncio.sleep(0.05)


def w1p(url: str, s: Sizes) -> dict[str, float]:
    """W1's burst with the workers in 1, 2 and 4 processes (DBOS queues), as Mainspring's."""
    me = os.path.abspath(__file__)
    cmd = [
        sys.executable,
        me,
        "--workload",
        "W1P",
        "--store",
        "postgres",
        "--child",
        "worker",
        "--db",
        url,
    ]
    out: dict[str, float] = {}
    for n in SCALING_PROCESSES:
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for _ in range(n)]
        client = DBOSClient(system_database_url=url)
        try:
            for p in procs:
                wait_line(p, "READY", timeout=120)
            asyncio.run(_burst(client, url, 1, s.chain_length))  # warm-up
            pids = [p.pid for p in procs]
            before = cpu_ticks(pids)
            t0 = time.perf_counter()
            asyncio.run(_burst(client, url, s.scaling_workflows, s.chain_length))
            elapsed = time.perf_counter() - t0
            after = cpu_ticks(pids)
        finally:
            client.destroy()
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()
        out[f"w1p{n}_act_s"] = s.scaling_workflows * s.chain_length / elapsed
        out.update(scaling_cpu(n, before, after))
    return scaling_summary(out)


def store_url(store: str) -> tuple[str, Callable[[], None]]:
    if store == "postgres":
        return create_pg_database()
    return f"sqlite:///{os.path.join(workdir('dbos'), 'bench.db')}", lambda: None


async def _in_process(name: str, url: str, s: Sizes) -> dict[str, float]:
    launch(url)
    try:
        result: dict[str, float] = await IN_PROCESS[name](s)
        return result
    finally:
        DBOS.destroy()


def main() -> None:
    args = workload_args(__doc__ or "", (*PEER_WORKLOADS, "W1P"))
    if args.child == "worker":
        asyncio.run(worker_child(args.db))
        return
    if args.child:
        asyncio.run(w4_child(args.child, args.db, args.wf_id, args.n))
        return
    if args.workload == "W1P" and args.store != "postgres":
        skip("DBOS's W1P is measured on PostgreSQL (its queues across processes)")
    url, cleanup = store_url(args.store)
    try:
        s = sizes(args.quick)
        if args.workload == "W4":
            emit(w4(url, s))
        elif args.workload == "W1P":
            emit(w1p(url, s))
        else:
            emit(asyncio.run(_in_process(args.workload, url, s)))
    finally:
        cleanup()


if __name__ == "__main__":
    main()
