"""`mainspring demo`: one command shows a killed agent resume without redoing work."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from mainspring.demo.report import KILLED, RAN_ONCE, RERUN_FINISHED, Evidence, analyse
from mainspring.history import Event, EventType


def test_demo_survives_sigkill_and_reruns_no_finished_step() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MAINSPRING_DB"}
    proc = subprocess.run(
        [sys.executable, "-m", "mainspring", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "SIGKILL worker 1" in out
    assert "mid-flight" in out
    assert "started worker 2" in out and "resumed" in out
    assert "re-run: killed mid-step" in out
    assert "retried (transient failure)" in out
    assert "ran once" in out
    assert "VIOLATION" not in out
    assert "PASS" in out and "none ran again" in out
    assert "Traceback" not in proc.stderr
    assert "[/]" not in out and "[bold" not in out  # its markup is read, not printed


# The demo's checker, on made-up evidence: it must tell an at-least-once re-run (the
# kill landed after a body's side effect, before its result was recorded) from a
# broken promise (a step whose result was recorded ran again).


def _events(*completed: tuple[int, int], steps: int = 2, closed: bool = True) -> list[Event]:
    events = [
        Event(
            event_id=1,
            event_type=EventType.WORKFLOW_EXECUTION_STARTED,
            time=0.0,
            attributes={"workflow_type": "DemoResearchAgent"},
        )
    ]
    for seq in range(1, steps + 1):
        events.append(
            Event(
                event_id=len(events) + 1,
                event_type=EventType.ACTIVITY_TASK_SCHEDULED,
                time=0.0,
                attributes={"seq": seq, "activity_type": "call_llm"},
            )
        )
    for seq, attempt in completed:
        events.append(
            Event(
                event_id=len(events) + 1,
                event_type=EventType.ACTIVITY_TASK_COMPLETED,
                time=0.0,
                attributes={"seq": seq, "attempt": attempt},
            )
        )
    if closed:
        events.append(
            Event(
                event_id=len(events) + 1,
                event_type=EventType.WORKFLOW_EXECUTION_COMPLETED,
                time=0.0,
            )
        )
    return events


def _line(seq: int, attempt: int, phase: str, worker: str) -> dict[str, Any]:
    return {
        "workflow_id": "w",
        "seq": seq,
        "step": f"s{seq}",
        "activity": "call_llm",
        "attempt": attempt,
        "phase": phase,
        "worker": worker,
        "pid": 1,
    }


def _evidence(ledger: list[dict[str, Any]], after: list[Event]) -> Evidence:
    before = _events((1, 1), closed=False)
    return Evidence(
        workflow_ids=["w"],
        before={"w": before},
        after={"w": after},
        results={"w": {}},
        ledger=ledger,
        killed_pid=1,
        resumed_pid=2,
    )


def test_checker_accepts_a_rerun_after_a_side_effect_the_kill_did_not_record() -> None:
    ledger = [
        _line(1, 1, "start", "1"),
        _line(1, 1, "done", "1"),
        _line(2, 1, "start", "1"),
        _line(2, 1, "done", "1"),
        _line(2, 2, "start", "2"),
        _line(2, 2, "done", "2"),
    ]
    findings = analyse(_evidence(ledger, _events((1, 1), (2, 2))))
    assert findings.ok, findings.violations
    assert [s.status for s in findings.steps["w"]] == [
        RAN_ONCE,
        KILLED + " (after its side effect)",
    ]


def test_checker_flags_a_finished_step_that_ran_again() -> None:
    ledger = [
        _line(1, 1, "start", "1"),
        _line(1, 1, "done", "1"),
        _line(1, 1, "start", "2"),
        _line(1, 1, "done", "2"),
        _line(2, 1, "start", "2"),
        _line(2, 1, "done", "2"),
    ]
    findings = analyse(_evidence(ledger, _events((1, 1), (2, 1))))
    assert not findings.ok
    assert findings.steps["w"][0].status == RERUN_FINISHED
