"""``mainspring demo``: kill a worker mid-run and show the agent resume.

The driver starts the demo agent's runs, serves them with a worker *subprocess*,
SIGKILLs it once the first run is partway (some steps finished, one mid-flight),
starts a second worker, and waits for every run to complete. Then it checks the
side-effect ledger the activities wrote against the recorded histories (see
:mod:`mainspring.demo.report`) and prints what happened to each step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from ..client import Client, WorkflowHandle
from ..history import Event, EventType
from .agent import LEDGER_ENV, TASK_QUEUE, WORKER_ENV
from .report import Evidence, analyse, render

TOPICS = ["durable execution", "vector databases", "agent memory", "tool use", "evals"]
KILL_POINT_TIMEOUT = 30.0
RUN_TIMEOUT = 60.0


class DemoError(Exception):
    """The demo could not run (not a broken promise: something else went wrong)."""


async def run_demo(*, db: str | None, workflows: int, kill_after: int, console: Console) -> bool:
    """Run the demo; return whether every promise held."""
    with tempfile.TemporaryDirectory(prefix="mainspring-demo-") as tmp:
        folder = Path(tmp)
        url = db or f"sqlite:///{folder / 'demo.db'}"
        demo = _Demo(url, folder, console)
        try:
            evidence = await demo.run(workflows, kill_after)
        except DemoError as exc:
            console.print(f"[bold red]demo failed:[/] {exc}")
            demo.show_logs()
            return False
        finally:
            demo.stop_workers()
        findings = analyse(evidence)
        render(console, evidence, findings)
        return findings.ok


class _Demo:
    def __init__(self, url: str, folder: Path, console: Console) -> None:
        self.url = url
        self.folder = folder
        self.ledger = folder / "ledger.jsonl"
        self.console = console
        self.t0 = time.monotonic()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, IO[bytes]] = {}

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.t0:5.1f}s[/]  {message}")

    # ------------------------------------------------------------------ workers

    def spawn(self, n: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ, **{LEDGER_ENV: str(self.ledger), WORKER_ENV: str(n)})
        log = self.logs[n] = open(self.folder / f"worker{n}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mainspring",
                "worker",
                "mainspring.demo.agent",
                "--db",
                self.url,
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[n] = proc
        self.say(
            f"started worker {n} [dim](pid {proc.pid}: "
            "python -m mainspring worker mainspring.demo.agent)[/]"
        )
        return proc

    def stop_workers(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs.values():
            log.close()

    def show_logs(self) -> None:
        for n, proc in self.procs.items():
            text = (self.folder / f"worker{n}.log").read_text(errors="replace").strip()
            if text:
                tail = "\n".join(text.splitlines()[-15:])
                self.console.print(f"[bold]worker {n} (pid {proc.pid}) log:[/]")
                self.console.print(tail, markup=False, highlight=False)

    def check_alive(self, n: int) -> None:
        code = self.procs[n].poll()
        if code is not None:
            raise DemoError(f"worker {n} exited unexpectedly with status {code}")

    # ------------------------------------------------------------------ the story

    async def run(self, workflows: int, kill_after: int) -> Evidence:
        client = await Client.connect(self.url)
        try:
            return await self._run(client, workflows, kill_after)
        finally:
            await client.close()

    async def _run(self, client: Client, workflows: int, kill_after: int) -> Evidence:
        token = uuid.uuid4().hex[:6]
        handles = []
        for i in range(workflows):
            topic = TOPICS[i % len(TOPICS)]
            h = await client.start_workflow(
                "DemoResearchAgent", topic, id=f"research-{token}-{i + 1}", task_queue=TASK_QUEUE
            )
            handles.append(h)
        self.say(
            f"started {workflows} research agent run(s): "
            + ", ".join(h.id for h in handles[:3])
            + (" …" if workflows > 3 else "")
        )
        self.spawn(1)
        seq, step = await self._wait_for_kill_point(handles[0], kill_after)

        os.kill(self.procs[1].pid, signal.SIGKILL)
        await asyncio.to_thread(self.procs[1].wait)
        before = {h.id: await h.fetch_history() for h in handles}
        first = before[handles[0].id]
        self.say(
            f"[bold red]SIGKILL worker 1[/] (pid {self.procs[1].pid}) while step {seq} "
            f"{step!r} of {handles[0].id} was mid-flight; its history stops at event "
            f"#{first[-1].event_id} ({_done(first)} steps finished)"
        )
        self.spawn(2)
        self.say(
            "waiting for worker 2 to pick up the runs (the killed attempt's lease "
            "expires, then it is retried)"
        )
        try:
            results = await asyncio.gather(*(h.result(timeout=RUN_TIMEOUT) for h in handles))
        except Exception:
            self.show_logs()
            raise
        self.say(f"[bold green]all {workflows} run(s) completed[/]")
        self.procs[2].send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.procs[2].wait, 15)
            self.say("worker 2 shut down gracefully (SIGTERM)")
        except subprocess.TimeoutExpired:
            self.say("[yellow]worker 2 did not stop within 15 s of SIGTERM; killed it[/]")
        after = {h.id: await h.fetch_history() for h in handles}
        return Evidence(
            workflow_ids=[h.id for h in handles],
            before=before,
            after=after,
            results=dict(zip([h.id for h in handles], results, strict=True)),
            ledger=self._ledger(),
            killed_pid=self.procs[1].pid,
            resumed_pid=self.procs[2].pid,
        )

    async def _wait_for_kill_point(self, handle: WorkflowHandle, k: int) -> tuple[int, str]:
        """Wait until ``k`` steps of the run finished and the next one is mid-flight."""
        deadline = time.monotonic() + KILL_POINT_TIMEOUT
        announced = 0
        while time.monotonic() < deadline:
            self.check_alive(1)
            done = _completed(await handle.fetch_history())
            if len(done) > announced:
                announced = len(done)
                self.say(f"  step {max(done)} finished on worker 1 ({announced} recorded)")
            if len(done) >= k:
                for line in self._ledger():
                    if line["workflow_id"] != handle.id or line["seq"] in done:
                        continue
                    if line["phase"] == "start" and not self._ended(line):
                        return int(line["seq"]), str(line["step"])
            await asyncio.sleep(0.02)
        raise DemoError(
            f"{handle.id} did not reach {k} finished steps within {KILL_POINT_TIMEOUT:g} s"
        )

    def _ended(self, start: dict[str, Any]) -> bool:
        return any(
            line["workflow_id"] == start["workflow_id"]
            and line["seq"] == start["seq"]
            and line["attempt"] == start["attempt"]
            and line["phase"] != "start"
            for line in self._ledger()
        )

    def _ledger(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        lines = []
        for raw in self.ledger.read_text().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines


def _completed(events: list[Event]) -> set[int]:
    return {
        int(e.attributes["seq"])
        for e in events
        if e.event_type is EventType.ACTIVITY_TASK_COMPLETED
    }


def _done(events: list[Event]) -> int:
    return len(_completed(events))
