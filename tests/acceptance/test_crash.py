"""Crash test: worker processes SIGKILLed at random moments lose and duplicate nothing.

Two worker processes (``crash_worker.py``) serve one database. The test starts
:data:`WORKFLOWS` runs of :class:`~tests.acceptance.crash_agent.CrashAgent` (ten
activities, a timer, a signal each) over :data:`START_SPAN` seconds. As the recorded
history (polled through the client) grows past thresholds drawn from a seeded RNG, it
SIGKILLs a random worker :data:`KILLS` times, each at a moment when that worker is
running an activity body, and starts a replacement at once; it also signals every run
once, at random moments. Then it checks the promises of ``DESIGN.md``:

- every run completed with the right result, reflecting its one signal once;
- every activity was scheduled once and its result recorded exactly once (one
  ``ActivityTaskCompleted`` per seq, with the right value);
- every activity body ran at least once, and each extra run is explained: it ran in a
  worker that was then killed, or it failed on purpose (a recorded failed attempt);
  the body whose result was recorded ran to its end. (A live worker's attempt that
  finished but was re-run because its result did not commit within the attempt's
  2 s lease is reported: it means commits are stalling.)
- every signal was recorded once (one ``WorkflowExecutionSignaled`` per run);
- every final history replays cleanly with :class:`mainspring.Replayer`.

``MAINSPRING_CRASH_SEED`` picks another seed (the seed is in the failure message).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mainspring import Client, EventType, Replayer, WorkflowHandle, WorkflowStatus

from . import crash_agent

WORKFLOWS = 200
KILLS = 6
LIVE_WORKERS = 2
SEED = int(os.environ.get("MAINSPRING_CRASH_SEED", "1729"))
WORKER_SCRIPT = Path(__file__).with_name("crash_worker.py")
# Events every run records whether or not it was signalled: started, 10 scheduled,
# 10 completed, timer started and fired, and the 8 workflow tasks that issue the
# commands (schedule 1, 2, 3, 4-7, start the timer, schedule 8, 9, 10). Kill and
# signal thresholds are fractions of this total, so each is reached.
EVENTS_BEFORE_SIGNAL = 1 + 2 * crash_agent.ACTIVITIES + 2 + 8
# Runs are started in batches over this many seconds, so that work is in flight
# through all the kills.
START_SPAN = 8.0
START_BATCH = 10
RESULT_DEADLINE = 200.0


class WorkerPool:
    """Worker subprocesses: spawned, SIGKILLed, reaped, and always cleaned up."""

    def __init__(self, db_url: str, ledger: Path, logs: Path) -> None:
        self.db_url = db_url
        self.ledger = ledger
        self.logs = logs
        self.live: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        self.unexpected_exits: list[tuple[int, int | None]] = []
        self.spawned: list[int] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.spawned)}.log").open("wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT), self.db_url, str(self.ledger)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self.live.append(proc)
        self.spawned.append(proc.pid)
        return proc

    def ready(self, proc: subprocess.Popen[bytes]) -> bool:
        return (self.ledger / f"ready-{proc.pid}").exists()

    def check_alive(self) -> None:
        """Note workers that died without being killed by the test."""
        for proc in list(self.live):
            if proc.poll() is not None:
                self.live.remove(proc)
                self.unexpected_exits.append((proc.pid, proc.returncode))

    async def pick_victim(self, rng: random.Random) -> subprocess.Popen[bytes]:
        """A random live worker that is up and serving (waits for one)."""
        while True:
            self.check_alive()
            ready = [p for p in self.live if self.ready(p)]
            if ready:
                return rng.choice(ready)
            await asyncio.sleep(0.02)

    def bodies_running(self, proc: subprocess.Popen[bytes]) -> int:
        """Activity bodies the worker has started and not yet finished (from its ledger)."""
        path = self.ledger / f"ledger-{proc.pid}.jsonl"
        if not path.exists():
            return 0
        text = path.read_text()
        return (
            text.count('"phase": "start"')
            - text.count('"phase": "end"')
            - text.count('"phase": "fail"')
        )

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.live.remove(proc)
        self.killed.add(proc.pid)

    def stop_all(self) -> list[tuple[int, int | None]]:
        """SIGTERM every live worker, SIGKILL any that will not stop; return exit codes."""
        codes = []
        for proc in self.live:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.live:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            codes.append((proc.pid, proc.returncode))
        self.live.clear()
        return codes

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.logs.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()
            if text:
                out.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


class Progress:
    """Polls the database through the client: events recorded over all runs."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events = 0
        self.timeline: list[str] = []  # events and closed runs, once a second

    async def poll(self) -> None:
        began = time.monotonic()
        while True:
            runs = await self.client.list_workflows(limit=WORKFLOWS + 10)
            self.events = sum(r.history_length for r in runs)
            second = int(time.monotonic() - began)
            if len(self.timeline) <= second:
                closed = sum(r.status is not WorkflowStatus.RUNNING for r in runs)
                self.timeline.append(f"{second}s:{self.events}ev/{closed}done")
            await asyncio.sleep(0.03)

    async def reach(self, fraction: float) -> None:
        target = fraction * WORKFLOWS * EVENTS_BEFORE_SIGNAL
        while self.events < target:
            await asyncio.sleep(0.01)


async def kill_workers(
    pool: WorkerPool, progress: Progress, rng: random.Random, log: list[str], began: float
) -> None:
    # One kill in each of KILLS equal slices of [3 %, 90 %] of the pre-signal events.
    lo, hi = 0.03, 0.90
    width = (hi - lo) / KILLS
    thresholds = [rng.uniform(lo + k * width, lo + (k + 1) * width) for k in range(KILLS)]
    for threshold in thresholds:
        await progress.reach(threshold)
        victim = await pool.pick_victim(rng)
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        # Aim for a moment when an activity body is running (give up after 2 s).
        aim = time.monotonic() + 2.0
        while pool.bodies_running(victim) == 0 and time.monotonic() < aim:
            await asyncio.sleep(0.002)
        pool.kill(victim)
        pool.spawn()
        log.append(
            f"{time.monotonic() - began:5.1f} s: killed worker {victim.pid} at "
            f"{progress.events} events (threshold {threshold:.2f})"
        )


async def start_workflows(client: Client, started: list[WorkflowHandle]) -> None:
    pause = START_SPAN / (WORKFLOWS / START_BATCH)
    for first in range(0, WORKFLOWS, START_BATCH):
        for n in range(first, min(first + START_BATCH, WORKFLOWS)):
            started.append(
                await client.start_workflow(
                    crash_agent.CrashAgent.run,
                    n,
                    id=f"crash-{n:03d}",
                    task_queue=crash_agent.TASK_QUEUE,
                )
            )
        await asyncio.sleep(pause)


async def send_signals(
    progress: Progress, rng: random.Random, started: list[WorkflowHandle]
) -> None:
    plan = sorted((rng.uniform(0.0, 0.95), n) for n in range(WORKFLOWS))
    for threshold, n in plan:
        await progress.reach(threshold)
        while len(started) <= n:
            await asyncio.sleep(0.01)
        await started[n].signal(crash_agent.CrashAgent.bonus, crash_agent.bonus_for(n))


def read_ledger(folder: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(folder.glob("ledger-*.jsonl")):
        for line in path.read_text().splitlines():
            entries.append(json.loads(line))
    return entries


class Problems:
    """Broken promises, grouped by kind, so a failure reads as a diagnosis."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, kind: str, detail: str = "") -> None:
        self.by_kind[kind].append(detail)

    def __bool__(self) -> bool:
        return bool(self.by_kind)

    def report(self, examples: int = 4) -> str:
        out = []
        for kind, details in self.by_kind.items():
            out.append(f"* {kind}: {len(details)}")
            out.extend(f"    {d}" for d in details[:examples] if d)
        return "\n".join(out)


def bodies_text(lines: list[dict[str, Any]]) -> str:
    """Ledger lines of one activity, readably: ``a1 start pid 12 +0.000s, ...``."""
    t0 = min(b["time"] for b in lines)
    return ", ".join(
        f"a{b['attempt']} {b['phase']} pid {b['pid']} +{b['time'] - t0:.3f}s" for b in lines
    )


def check_history(n: int, events: list[Any], problems: Problems) -> dict[int, int]:
    """Check one run's history; return ``{seq: attempt whose result was recorded}``."""
    wid = f"crash-{n:03d}"
    ids = [e.event_id for e in events]
    if ids != list(range(1, len(events) + 1)):
        problems.add("event ids are not 1..N", f"{wid}: {ids}")
    counts = collections.Counter(e.event_type for e in events)
    for etype, want in (
        (EventType.WORKFLOW_EXECUTION_SIGNALED, 1),
        (EventType.TIMER_STARTED, 1),
        (EventType.TIMER_FIRED, 1),
        (EventType.ACTIVITY_TASK_FAILED, 0),
        (EventType.WORKFLOW_EXECUTION_COMPLETED, 1),
    ):
        if counts[etype] != want:
            problems.add(f"{etype.value} not recorded {want}x", f"{wid}: {counts[etype]}x")
    if events and events[-1].event_type is not EventType.WORKFLOW_EXECUTION_COMPLETED:
        problems.add("history does not end with the completion", wid)
    scheduled: dict[int, list[int]] = collections.defaultdict(list)
    completed: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for e in events:
        a = e.attributes
        if e.event_type is EventType.ACTIVITY_TASK_SCHEDULED:
            scheduled[int(a["seq"])].append(json.loads(a["input"])[1])
        elif e.event_type is EventType.ACTIVITY_TASK_COMPLETED:
            completed[int(a["seq"])].append((json.loads(a["result"]), int(a["attempt"])))
    recorded: dict[int, int] = {}
    seqs = list(range(1, crash_agent.ACTIVITIES + 1))
    if sorted(scheduled) != seqs or sorted(completed) != seqs:
        problems.add(
            "activities missing from history",
            f"{wid}: scheduled {sorted(scheduled)}, completed {sorted(completed)}",
        )
    for seq, inputs in scheduled.items():
        done = completed.get(seq, [])
        if len(inputs) != 1 or len(done) != 1:
            problems.add(
                "activity not scheduled and recorded exactly once",
                f"{wid} seq {seq}: scheduled {len(inputs)}x, result recorded {len(done)}x",
            )
            continue
        value, attempt = done[0]
        if value != crash_agent.expected_step(n, inputs[0]):
            problems.add("wrong activity result recorded", f"{wid} seq {seq}: {value!r}")
        recorded[seq] = attempt
    return recorded


def check_ledger(
    n: int,
    recorded: dict[int, int],
    bodies: list[dict[str, Any]],
    killed: set[int],
    problems: Problems,
) -> int:
    """Check the side effects of one run; return how many extra body runs kills explain."""
    wid = f"crash-{n:03d}"
    explained = 0
    by_seq: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for b in bodies:
        by_seq[b["seq"]].append(b)
    for seq, attempt in recorded.items():
        lines = by_seq.get(seq, [])
        where = f"{wid} seq {seq}, attempt {attempt} recorded"
        starts = [b for b in lines if b["phase"] == "start"]
        if not starts:
            problems.add("activity body never ran", where)
            continue
        again = [a for a, c in collections.Counter(b["attempt"] for b in starts).items() if c > 1]
        if again:
            problems.add("one attempt ran twice", f"{where}: {bodies_text(lines)}")
        if not any(b["phase"] == "end" and b["attempt"] == attempt for b in lines):
            problems.add(
                "recorded attempt never returned a result", f"{where}: {bodies_text(lines)}"
            )
        for b in starts:
            if b["attempt"] == attempt:
                continue
            if b["attempt"] > attempt:
                problems.add(
                    "attempt ran after the result was recorded", f"{where}: {bodies_text(lines)}"
                )
            elif b["pid"] in killed:
                explained += 1
            elif any(f["phase"] == "fail" and f["attempt"] == b["attempt"] for f in lines):
                pass  # failed on purpose: a recorded failed attempt
            elif any(f["phase"] == "end" and f["attempt"] == b["attempt"] for f in lines):
                problems.add(
                    "re-run not explained by a kill: a live worker's attempt returned but "
                    "its result was not recorded before the attempt's lease "
                    "(start_to_close) ran out",
                    f"{where}: {bodies_text(lines)}",
                )
            else:
                problems.add(
                    "re-run not explained by a kill: a live worker's attempt never finished",
                    f"{where}: {bodies_text(lines)}",
                )
    return explained


def interrupted_bodies(entries: list[dict[str, Any]], killed: set[int]) -> int:
    """Bodies a SIGKILL cut short: started in a killed worker, never ended or failed."""
    open_: collections.Counter[tuple[str, int, int]] = collections.Counter()
    for e in entries:
        if e["pid"] not in killed:
            continue
        key = (e["workflow_id"], e["seq"], e["attempt"])
        open_[key] += 1 if e["phase"] == "start" else -1
    return sum(1 for v in open_.values() if v > 0)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_sigkilled_workers_lose_and_duplicate_nothing(db_url: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ledger = tmp_path / "ledger"
    logs = tmp_path / "logs"
    ledger.mkdir()
    logs.mkdir()
    began = time.monotonic()
    client = await Client.connect(db_url)  # creates the schema before the workers race
    pool = WorkerPool(db_url, ledger, logs)
    progress = Progress(client)
    poller = asyncio.create_task(progress.poll())
    kill_log: list[str] = []
    context = f"seed {SEED}, {db_url}"
    try:
        for _ in range(LIVE_WORKERS):
            pool.spawn()
        handles: list[WorkflowHandle] = []
        chaos = asyncio.gather(
            start_workflows(client, handles),
            kill_workers(pool, progress, rng, kill_log, began),
            send_signals(progress, rng, handles),
        )
        try:
            await asyncio.wait_for(chaos, RESULT_DEADLINE)
        except TimeoutError:
            pytest.fail(
                f"kills/signals stalled at {progress.events} events ({context}); "
                f"{kill_log}\n{pool.log_tails()}"
            )
        results: dict[int, Any] = {}
        for n, handle in enumerate(handles):
            left = RESULT_DEADLINE - (time.monotonic() - began)
            try:
                results[n] = await handle.result(timeout=max(left, 0.1))
            except Exception as exc:
                d = await handle.describe()
                pytest.fail(
                    f"crash-{n:03d} did not complete: {exc!r}; {d} ({context}); {kill_log}\n"
                    f"{pool.log_tails()}"
                )
        finished = time.monotonic() - began
        pool.check_alive()
        unexpected = list(pool.unexpected_exits)
        exit_codes = pool.stop_all()
    finally:
        poller.cancel()
        try:
            await poller
        except asyncio.CancelledError:
            pass
        pool.stop_all()
        await client.close()

    problems = Problems()
    if len(pool.killed) < 5:
        problems.add("fewer than 5 kills", str(len(pool.killed)))
    if unexpected:
        problems.add("workers died without being killed (pid, exit code)", str(unexpected))
    bad_exits = [(pid, code) for pid, code in exit_codes if code != 0]
    if bad_exits:
        problems.add("workers did not stop cleanly on SIGTERM (pid, exit code)", str(bad_exits))

    client = await Client.connect(db_url)
    try:
        runs = await client.list_workflows(limit=WORKFLOWS + 10)
        histories = {
            n: await client.get_workflow_handle(f"crash-{n:03d}").fetch_history()
            for n in range(WORKFLOWS)
        }
    finally:
        await client.close()
    if len(runs) != WORKFLOWS or any(r.status is not WorkflowStatus.COMPLETED for r in runs):
        problems.add("runs not all completed", str(collections.Counter(r.status for r in runs)))

    entries = read_ledger(ledger)
    bodies: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in entries:
        bodies[e["workflow_id"]].append(e)
    replayer = Replayer(workflows=[crash_agent.CrashAgent])
    explained = 0
    for n in range(WORKFLOWS):
        wid = f"crash-{n:03d}"
        if results[n] != crash_agent.expected_result(n):
            problems.add("wrong workflow result", f"{wid}: {results[n]!r}")
        recorded = check_history(n, histories[n], problems)
        explained += check_ledger(n, recorded, bodies[wid], pool.killed, problems)
        try:
            replayer.replay(histories[n])
        except Exception as exc:
            problems.add("history does not replay", f"{wid}: {exc!r}")
    cut_short = interrupted_bodies(entries, pool.killed)
    if cut_short == 0:
        problems.add("no kill landed while an activity body was running")

    summary = (
        f"{WORKFLOWS} workflows done in {finished:.1f} s ({context}); "
        f"{len(pool.killed)} kills, {cut_short} bodies cut short, {explained} re-runs "
        f"explained by kills; {len(entries)} ledger lines"
    )
    print(summary, *kill_log, " ".join(progress.timeline), sep="\n")
    assert not problems, (
        f"{summary}\n{problems.report()}\nkills: {kill_log}\nprogress: "
        f"{' '.join(progress.timeline)}\n{pool.log_tails()}"
    )
