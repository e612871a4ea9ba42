"""``mainspring workflow …``: start, list, inspect and steer workflow runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ._cli_common import (
    Seconds,
    connect,
    db_option,
    decode_payload,
    description_dict,
    err,
    fmt_time,
    json_option,
    not_empty,
    out,
    parse_json_args,
    pending_text,
    print_json,
    run,
    shown,
    status_text,
)
from .client import MAX_LIST_LIMIT
from .errors import MainspringError, WorkflowAlreadyStartedError
from .history import Event, EventType, histories_to_json

ARG_HELP = "An argument as JSON (repeat for several), e.g. --arg '\"text\"' --arg 3."


@click.group("workflow")
def workflow_group() -> None:
    """Start, list, inspect, signal, query, cancel and terminate workflows."""


@workflow_group.command("start")
@click.argument("workflow_type", metavar="TYPE")
@click.option("--id", "workflow_id", required=True, help="The workflow id (idempotency key).")
@click.option("--task-queue", "-q", required=True, help="The task queue its worker polls.")
@click.option("--arg", "args", multiple=True, metavar="JSON", help=ARG_HELP)
@click.option(
    "--use-existing",
    is_flag=True,
    help="If a run with this id is open, return it instead of failing.",
)
@json_option
@db_option
def start(
    workflow_type: str,
    workflow_id: str,
    task_queue: str,
    args: tuple[str, ...],
    use_existing: bool,
    as_json: bool,
    db: str,
) -> None:
    """Start a workflow of type TYPE (its registered name)."""
    values = parse_json_args(args)

    async def go() -> tuple[str, str | None]:
        async with connect(db, create=True) as client:
            try:
                handle = await client.start_workflow(
                    workflow_type,
                    *values,
                    id=workflow_id,
                    task_queue=task_queue,
                    id_conflict_policy="use_existing" if use_existing else "fail",
                )
            except WorkflowAlreadyStartedError as exc:  # its advice is Python's; give ours
                raise MainspringError(
                    f"workflow {exc.workflow_id!r} is already running (run {exc.run_id}); "
                    "pass --use-existing to attach to it, or choose another --id"
                ) from None
            return handle.id, handle.run_id

    wid, run_id = run(go())
    if as_json:
        print_json({"workflow_id": wid, "run_id": run_id})
    else:
        out.print(
            Text("started workflow ")
            + Text(shown(wid), style="bold")
            + Text(f" (run {run_id}) on task queue {task_queue!r}")
        )


@workflow_group.command("list")
@click.option(
    "--status",
    type=click.Choice(
        ["running", "completed", "failed", "canceled", "terminated"], case_sensitive=False
    ),
    help="Only runs in this status.",
)
@click.option("--type", "workflow_type", metavar="TYPE", help="Only runs of this workflow type.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1, max=MAX_LIST_LIMIT)
)
@json_option
@db_option
def list_(
    status: str | None, workflow_type: str | None, limit: int, as_json: bool, db: str
) -> None:
    """List workflow runs, newest first."""

    async def go() -> list[Any]:
        async with connect(db) as client:
            return await client.list_workflows(
                status=status, workflow_type=workflow_type, limit=limit
            )

    runs = run(go())
    if len(runs) == limit:  # on stderr, so that --json output stays clean
        runs_ = "run" if limit == 1 else f"{limit:,} runs"
        err.print(f"showing the newest {runs_}; --limit N shows more", soft_wrap=True)
    if as_json:
        print_json([description_dict(d) for d in runs])
        return
    if not runs:
        out.print("no workflows match")
        return
    table = Table("Workflow ID", "Type", "Status", "Task queue", "Started", "Closed", "Events")
    for d in runs:
        table.add_row(
            shown(d.workflow_id),
            shown(d.workflow_type),
            status_text(d),
            shown(d.task_queue),
            fmt_time(d.start_time),
            fmt_time(d.close_time),
            str(d.history_length),
        )
    out.print(table)


@workflow_group.command("describe")
@click.argument("workflow_id", metavar="ID")
@click.option("--run-id", callback=not_empty(), help="A specific run (default: the latest).")
@json_option
@db_option
def describe(workflow_id: str, run_id: str | None, as_json: bool, db: str) -> None:
    """Show a run's status, times, and failure (or why it is blocked)."""

    async def go() -> Any:
        async with connect(db) as client:
            d = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
            return d, client.store.clock.now()  # the store's time (PostgreSQL: the server's)

    d, now = run(go())
    if as_json:
        print_json(description_dict(d))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Workflow ID", shown(d.workflow_id))
    table.add_row("Run ID", shown(d.run_id))
    table.add_row("Type", shown(d.workflow_type))
    table.add_row("Task queue", shown(d.task_queue))
    table.add_row("Status", status_text(d))
    table.add_row("Started", fmt_time(d.start_time))
    table.add_row("Closed", fmt_time(d.close_time))
    table.add_row("Events", str(d.history_length))
    if d.failure is not None:
        table.add_row("Failure", Text(shown(d.failure.describe()), style="red"))
    if d.workflow_task_failure is not None:
        table.add_row(
            "Blocked by",
            Text(
                f"{shown(d.workflow_task_failure.describe())} "
                f"(workflow task attempt {d.workflow_task_attempt}; fix the code and "
                "restart the worker to resume)",
                style="red",
            ),
        )
    for a in d.pending_activities:
        table.add_row(f"Activity #{a.seq}", pending_text(a, datetime.fromtimestamp(now, UTC)))
    more = d.pending_activity_count - len(d.pending_activities)
    if more > 0:
        table.add_row("", f"and {more:,} more unfinished activit{'y' if more == 1 else 'ies'}")
    out.print(table)


def _brief(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_summary(e: Event) -> str:
    """One line saying what an event holds."""
    a = e.attributes
    t = e.event_type
    if t is EventType.WORKFLOW_EXECUTION_STARTED:
        return f"{a.get('workflow_type')}({_brief(decode_payload(a.get('input')))})"
    if t is EventType.ACTIVITY_TASK_SCHEDULED:
        return f"#{a.get('seq')} {a.get('activity_type')}({_brief(decode_payload(a.get('input')))})"
    if t is EventType.ACTIVITY_TASK_COMPLETED:
        return (
            f"#{a.get('seq')} attempt {a.get('attempt')} → "
            f"{_brief(decode_payload(a.get('result')))}"
        )
    if t is EventType.ACTIVITY_TASK_FAILED or "failure" in a:
        failure = a.get("failure") or {}
        seq = f"#{a['seq']} " if "seq" in a else ""
        return f"{seq}{failure.get('type', '')}: {_brief(failure.get('message', ''))}"
    if t is EventType.TIMER_STARTED:
        return f"#{a.get('seq')} {a.get('duration')} s"
    if t is EventType.WORKFLOW_EXECUTION_SIGNALED:
        return f"{a.get('name')}({_brief(decode_payload(a.get('input')))})"
    if t is EventType.WORKFLOW_EXECUTION_COMPLETED:
        return _brief(decode_payload(a.get("result")))
    if t is EventType.WORKFLOW_TASK_COMPLETED:
        return ""
    return _brief({k: v for k, v in a.items() if k != "options"})


@workflow_group.command("history")
@click.argument("workflow_id", metavar="ID")
@click.option("--run-id", callback=not_empty(), help="A specific run (default: the latest).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the export document (format mainspring.history/1) that Replayer reads.",
)
@db_option
def history(workflow_id: str, run_id: str | None, as_json: bool, db: str) -> None:
    """Show a run's event history."""

    async def go() -> tuple[str, list[Event]]:
        async with connect(db) as client:
            handle = client.get_workflow_handle(workflow_id, run_id=run_id)  # checks both
            record, events = await client.store.history(handle.id, handle.run_id)
            return record.run_id, events

    rid, events = run(go())
    if as_json:
        click.echo(json.dumps(histories_to_json(workflow_id, rid, events), indent=2))
        return
    table = Table("#", "Time", "Event", "Details")
    for e in events:
        table.add_row(
            str(e.event_id),
            e.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3],
            e.event_type.value,
            shown(event_summary(e)),
        )
    out.print(table)


@workflow_group.command("signal")
@click.argument("workflow_id", metavar="ID")
@click.argument("name")
@click.option("--arg", "args", multiple=True, metavar="JSON", help=ARG_HELP)
@db_option
def signal(workflow_id: str, name: str, args: tuple[str, ...], db: str) -> None:
    """Send signal NAME (recorded in history before this returns)."""
    values = parse_json_args(args)

    async def go() -> None:
        async with connect(db) as client:
            await client.get_workflow_handle(workflow_id).signal(name, *values)

    run(go())
    out.print(f"signal {name!r} sent to workflow {workflow_id!r}")


@workflow_group.command("query")
@click.argument("workflow_id", metavar="ID")
@click.argument("name")
@click.option("--arg", "args", multiple=True, metavar="JSON", help=ARG_HELP)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=Seconds(min=0.1),
    help="Seconds to wait for a worker to answer.",
)
@db_option
def query(workflow_id: str, name: str, args: tuple[str, ...], timeout: float, db: str) -> None:
    """Run query NAME on a worker; print its answer as JSON."""
    values = parse_json_args(args)

    async def go() -> Any:
        async with connect(db) as client:
            return await client.get_workflow_handle(workflow_id).query(
                name, *values, timeout=timeout
            )

    print_json(run(go()))


@workflow_group.command("result")
@click.argument("workflow_id", metavar="ID")
@click.option(
    "--timeout",
    type=Seconds(min=0),
    default=None,
    help="Seconds to wait (default: until it closes).",
)
@db_option
def result(workflow_id: str, timeout: float | None, db: str) -> None:
    """Wait for the run to close; print its result as JSON.

    Exits 1 if it failed, was cancelled or terminated, or the timeout passed.
    """

    async def go() -> Any:
        async with connect(db) as client:
            return await client.get_workflow_handle(workflow_id).result(timeout=timeout)

    print_json(run(go()))


@workflow_group.command("cancel")
@click.argument("workflow_id", metavar="ID")
@db_option
def cancel(workflow_id: str, db: str) -> None:
    """Ask the run to cancel; its code sees asyncio.CancelledError."""

    async def go() -> None:
        async with connect(db) as client:
            await client.get_workflow_handle(workflow_id).cancel()

    run(go())
    out.print(f"cancellation requested for workflow {workflow_id!r}")


@workflow_group.command("terminate")
@click.argument("workflow_id", metavar="ID")
@click.option("--reason", default="", help="Why; recorded in history.")
@db_option
def terminate(workflow_id: str, reason: str, db: str) -> None:
    """Close the run now, without running any more workflow code."""

    async def go() -> None:
        async with connect(db) as client:
            await client.get_workflow_handle(workflow_id).terminate(reason)

    run(go())
    out.print(f"workflow {workflow_id!r} terminated")
