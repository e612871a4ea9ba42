"""Check the demo's side-effect ledger against the recorded histories, and show it.

The promises checked, for every run:

1. The run completed, and each step's result was recorded exactly once.
2. A step whose result was recorded before the kill never ran again (no ledger line
   from the second worker).
3. Each step's body ran once per recorded attempt; only a step the kill interrupted
   ran on both workers.
4. The second worker resumed the recorded history: every event recorded before the
   kill is still there, unchanged, and the history continues after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..history import Event, EventType

RAN_ONCE = "ran once"
RETRIED = "retried (transient failure)"
KILLED = "re-run: killed mid-step"
RERUN_FINISHED = "VIOLATION: finished step ran again"
STYLES = {RAN_ONCE: "green", RETRIED: "cyan", KILLED: "yellow", RERUN_FINISHED: "bold red"}


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """What the demo observed."""

    workflow_ids: list[str]
    before: dict[str, list[Event]]
    after: dict[str, list[Event]]
    results: dict[str, Any]
    ledger: list[dict[str, Any]]
    killed_pid: int
    resumed_pid: int


@dataclass(frozen=True, kw_only=True)
class Step:
    """One activity of a run, as the history and the ledger tell it."""

    seq: int
    name: str
    activity: str
    attempts: int | None
    body_runs: int
    workers: str
    finished_before_kill: bool
    status: str


@dataclass
class Findings:
    """The per-step view of every run, and every broken promise."""

    steps: dict[str, list[Step]] = field(default_factory=dict)
    resumed_from: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every promise held."""
        return not self.violations


def _key(e: Event) -> tuple[int, str, Any]:
    return e.event_id, e.event_type.value, e.attributes


def analyse(ev: Evidence) -> Findings:
    """Build each run's step table and list every broken promise."""
    f = Findings()
    for wid in ev.workflow_ids:
        before, after = ev.before[wid], ev.after[wid]
        f.resumed_from[wid] = before[-1].event_id if before else 0
        if [_key(e) for e in after[: len(before)]] != [_key(e) for e in before]:
            f.violations.append(f"{wid}: events recorded before the kill changed afterwards")
        if not after or after[-1].event_type is not EventType.WORKFLOW_EXECUTION_COMPLETED:
            f.violations.append(f"{wid}: did not complete")
        f.steps[wid] = _steps(wid, before, after, ev.ledger, f.violations)
    return f


def _steps(
    wid: str,
    before: list[Event],
    after: list[Event],
    ledger: list[dict[str, Any]],
    violations: list[str],
) -> list[Step]:
    scheduled: dict[int, str] = {}
    completions: dict[int, list[int]] = {}
    for e in after:
        a = e.attributes
        if e.event_type is EventType.ACTIVITY_TASK_SCHEDULED:
            scheduled[int(a["seq"])] = str(a["activity_type"])
        elif e.event_type is EventType.ACTIVITY_TASK_COMPLETED:
            completions.setdefault(int(a["seq"]), []).append(int(a.get("attempt", 0)))
    finished_before = {
        int(e.attributes["seq"])
        for e in before
        if e.event_type is EventType.ACTIVITY_TASK_COMPLETED
    }
    out = []
    for seq, activity in sorted(scheduled.items()):
        lines = [x for x in ledger if x["workflow_id"] == wid and x["seq"] == seq]
        starts = [x for x in lines if x["phase"] == "start"]
        ends = {
            (str(x["worker"]), x["attempt"]): x["phase"] for x in lines if x["phase"] != "start"
        }
        # Worker 1 ran the step but its result was not recorded before the kill: the
        # kill cut the attempt short, mid-body or (rarely) after the body's side effect
        # but before the result was saved. At-least-once: the step runs again.
        cut = [
            x
            for x in starts
            if str(x["worker"]) == "1"
            and seq not in finished_before
            and ends.get(("1", x["attempt"])) != "fail"
        ]
        lost = sum(1 for x in cut if ends.get(("1", x["attempt"])) == "done")
        workers = list(dict.fromkeys(str(x["worker"]) for x in starts))
        done = sum(1 for x in lines if x["phase"] == "done")
        recorded = completions.get(seq, [])
        name = str(starts[0]["step"]) if starts else f"#{seq}"
        label = f"{wid} step {seq} {name!r}"
        attempts = recorded[0] if len(recorded) == 1 else None
        if len(recorded) != 1:
            violations.append(f"{label}: {len(recorded)} recorded results (expected 1)")
        if seq in finished_before and any(str(x["worker"]) != "1" for x in lines):
            status = RERUN_FINISHED
            violations.append(f"{label}: finished before the kill, yet ran again afterwards")
        elif cut:
            status = KILLED
            if lost:
                status += " (after its side effect)"
        elif any(x["phase"] == "fail" for x in lines):
            status = RETRIED
        else:
            status = RAN_ONCE
        if done != 1 + lost:
            violations.append(
                f"{label}: its side effect happened {done} times (expected {1 + lost})"
            )
        if attempts is not None and len(starts) != attempts:
            violations.append(
                f"{label}: body ran {len(starts)} times for {attempts} recorded attempt(s)"
            )
        out.append(
            Step(
                seq=seq,
                name=name,
                activity=activity,
                attempts=attempts,
                body_runs=len(starts),
                workers=" → ".join(workers) or "-",
                finished_before_kill=seq in finished_before,
                status=status,
            )
        )
    return out


def _table(wid: str, steps: list[Step]) -> Table:
    table = Table(title=f"run {wid}", title_justify="left")
    for col, justify in (
        ("#", "right"),
        ("Step", "left"),
        ("Activity", "left"),
        ("Attempts", "right"),
        ("Body runs", "right"),
        ("Worker", "center"),
        ("Status", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in steps:
        style = STYLES.get(s.status.split(" (after")[0], "")
        table.add_row(
            str(s.seq),
            s.name,
            s.activity,
            str(s.attempts or "?"),
            str(s.body_runs),
            s.workers,
            Text(s.status, style=style),
        )
    return table


def render(console: Console, ev: Evidence, f: Findings) -> None:
    """Print the step table of the first run, a line per other run, and the verdict."""
    first = ev.workflow_ids[0]
    console.print()
    console.print(_table(first, f.steps[first]))
    report = ev.results.get(first)
    if isinstance(report, dict):
        console.print(Text("result: ", style="dim") + Text(str(report.get("report"))))
    for wid in ev.workflow_ids[1:]:
        steps = f.steps[wid]
        counts = {k: sum(1 for s in steps if s.status.startswith(k)) for k in STYLES}
        console.print(
            f"run {wid}: {len(steps)} steps — {counts[RAN_ONCE]} ran once, "
            f"{counts[RETRIED]} retried, {counts[KILLED]} re-run after the kill, "
            f"{counts[RERUN_FINISHED]} finished steps re-run"
        )
    all_steps = [s for wid in ev.workflow_ids for s in f.steps[wid]]
    finished = sum(1 for s in all_steps if s.finished_before_kill)
    killed = sum(1 for s in all_steps if s.status.startswith(KILLED))
    retried = sum(1 for s in all_steps if s.status == RETRIED)
    console.print(
        f"worker 2 (pid {ev.resumed_pid}) resumed {first} from event "
        f"#{f.resumed_from[first]}, the last one recorded before worker 1 "
        f"(pid {ev.killed_pid}) was killed"
    )
    console.print()
    if f.ok:
        console.print(
            f"[bold green]PASS[/]: {finished} step(s) finished before the kill and none ran "
            f"again; {killed} step(s) interrupted by the kill re-ran; {retried} transient "
            f"failure(s) retried; all {len(ev.workflow_ids)} run(s) completed."
        )
    else:
        console.print(f"[bold red]FAIL[/]: {len(f.violations)} broken promise(s):")
        for v in f.violations:
            console.print(f"  [red]- {v}[/]", highlight=False)
