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
    Sizes,
    create_pg_database,
    emit,
    median_latency_ms,
    new_id,
    sizes,
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
    args = workload_args(__doc__ or "")
    if args.child:
        asyncio.run(w4_child(args.child, args.db, args.wf_id, args.n))
        return
    url, cleanup = store_url(args.store)
    try:
        s = sizes(args.quick)
        if args.workload == "W4":
            emit(w4(url, s))
        else:
            emit(asyncio.run(_in_process(args.workload, url, s)))
    finally:
        cleanup()


if __name__ == "__main__":
    main()
