"""What every workload module shares: sizes, timing helpers and the result protocol.

A workload module (``workloads_mainspring.py``, ``peers_dbos.py``, ``peers_temporal.py``)
is run by ``run.py`` as a fresh subprocess per measurement, so no system's state (DBOS's
global instance, a Temporal worker, a Mainspring cache) leaks into the next one. It
prints one line ``RESULT {json}`` of metric name → value on stdout; anything else it
prints is ignored (and shown if the run fails).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

PEER_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
# Mainspring only: W1 with its workers in 1, 2 and 4 separate processes (scaling), and
# W5 with the client and the worker in separate processes.
WORKLOADS = (*PEER_WORKLOADS, "W1P", "W5P")
SCALING_PROCESSES = (1, 2, 4)

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each workload is (the issue's sizes, or smaller ones with ``--quick``)."""

    chain_workflows: int = 200  # W1 concurrent workflows
    scaling_workflows: int = 600  # W1P: more, so each process count runs for seconds
    chain_length: int = 10  # W1 activities per workflow
    empty_workflows: int = 500  # W2 concurrent workflows
    fanout: int = 100  # W3 parallel activities
    recovery_activities: int = 1000  # W4 finished activities before the kill
    timer_workflows: int = 200  # W6 concurrent sleeping workflows
    timer_seconds: float = 1.0  # W6 sleep of each
    latency_samples: int = 10  # one-alone latencies measured (median reported)


FULL = Sizes()
QUICK = Sizes(
    chain_workflows=50,
    scaling_workflows=150,
    empty_workflows=100,
    recovery_activities=200,
    timer_workflows=50,
    latency_samples=5,
)


def sizes(quick: bool) -> Sizes:
    return QUICK if quick else FULL


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def workdir(prefix: str) -> str:
    """A fresh temporary directory (removed by the OS's tmp cleaning, kept for post-mortems)."""
    return tempfile.mkdtemp(prefix=f"bench-{prefix}-")


async def median_latency_ms(one: Callable[[], Awaitable[None]], samples: int) -> float:
    """Run ``one`` once to warm up, then ``samples`` times; the median in milliseconds."""
    await one()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await one()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def emit(result: dict[str, float]) -> None:
    """Report the measurement to ``run.py``."""
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


def workload_args(
    description: str, supported: tuple[str, ...] = PEER_WORKLOADS
) -> argparse.Namespace:
    """The command line every workload module takes; skips a workload not ``supported``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workload", choices=WORKLOADS, required=True)
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--temporal-address", default=os.environ.get("BENCH_TEMPORAL", "127.0.0.1:7233"))
    # Internal: the role of a child process (W4's, or a W1P/W5P worker) and its arguments.
    p.add_argument("--child", choices=("doomed", "fresh", "worker"), default=None)
    p.add_argument("--db", default=None)
    p.add_argument("--wf-id", default=None)
    p.add_argument("--task-queue", default=None)
    p.add_argument("--n", type=int, default=0)
    args = p.parse_args()
    if args.workload not in supported:
        skip(f"{args.workload} is measured for Mainspring only")
    return args


def create_pg_database() -> tuple[str, Callable[[], None]]:
    """A fresh PostgreSQL database: (its URL, a function that drops it)."""
    import psycopg

    name = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, drop


def wait_line(proc: object, expected: str, timeout: float) -> None:
    """Read a child's stdout until a line equal to ``expected``; raise if it exits or stalls."""
    import select
    import subprocess

    assert isinstance(proc, subprocess.Popen)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            line = line.decode() if isinstance(line, bytes) else line
            if line.strip() == expected:
                return
            seen.append(line)
        elif proc.poll() is not None:
            break
    raise RuntimeError(
        f"child did not print {expected!r} (exit code {proc.poll()}); output:\n"
        + "".join(seen[-20:])
    )


def skip(reason: str) -> None:
    """Tell ``run.py`` this system cannot run this workload, and why; then exit."""
    print("SKIP " + reason, flush=True)
    raise SystemExit(0)


def _process_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_ticks(pids: list[int]) -> tuple[int, int, int, int] | None:
    """(machine busy, machine total, ``pids``' own, this process's own) CPU ticks so far
    (Linux), else None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        own = sum(_process_ticks(pid) for pid in pids)
        client = _process_ticks(os.getpid())
    except (OSError, ValueError, IndexError):
        return None
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks), own, client  # busy: minus idle, iowait


def scaling_cpu(
    n: int,
    before: tuple[int, int, int, int] | None,
    after: tuple[int, int, int, int] | None,
) -> dict[str, float]:
    """W1P's CPU figures for ``n`` worker processes, from :func:`cpu_ticks` around a burst."""
    if not before or not after or after[1] <= before[1]:
        return {}
    busy, total, own, client = (a - b for a, b in zip(after, before, strict=True))
    cores = os.cpu_count() or 1
    return {
        f"w1p{n}_cpu_pct": 100 * busy / total,  # the machine: all its CPUs
        # in % of one core: the worker processes; the client (this process, which starts
        # the workflows and waits for their results); all the rest (the database server
        # when it shares the machine, the OS)
        f"w1p{n}_workers_pct": 100 * cores * own / total,
        f"w1p{n}_client_pct": 100 * cores * client / total,
        f"w1p{n}_rest_pct": 100 * cores * (busy - own - client) / total,
    }


def scaling_summary(out: dict[str, float]) -> dict[str, float]:
    """W1P's ratio of 2 processes to 1, and the most the machine's CPUs allow: what 2
    processes would reach if an activity cost them the CPU it cost one."""
    out["w1p_scaling_2"] = out["w1p2_act_s"] / out["w1p1_act_s"]
    if "w1p1_cpu_pct" in out:
        out["w1p_ceiling_2"] = min(2.0, 100 / out["w1p1_cpu_pct"])
    return out
