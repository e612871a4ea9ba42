"""``mainspring worker MODULE``: serve a module's workflows and activities."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ._cli_common import (
    Seconds,
    connect,
    db_option,
    fail,
    fmt_time,
    json_option,
    not_empty,
    out,
    parse_duration,
    print_json,
    run,
    shown,
)
from .activity import ActivityDefinition
from .client import MIN_RETENTION
from .store._redact import redacted
from .worker import MAX_CACHED_WORKFLOWS, MAX_CONCURRENCY, MAX_WORKER_TIMEOUT, Worker
from .worker_info import WorkerInfo, WorkerState
from .workflow import WorkflowDefinition

log = logging.getLogger("mainspring.cli")

MAX_SECONDS = MAX_WORKER_TIMEOUT.total_seconds()


class LogFormatter(logging.Formatter):
    """Log lines whose message can neither steer the terminal nor forge another line:
    its control characters, newlines included, are escaped (messages hold users' data:
    ids, failure messages); a traceback prints as it is."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (and its traceback, if it has one)."""
        saved = record.msg, record.args
        record.msg, record.args = shown(record.getMessage()).replace("\n", "\\n"), None
        try:
            return super().format(record)
        finally:
            record.msg, record.args = saved

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        """The traceback, its lines as they are but for control characters (the
        exception's message is often users' data)."""
        return "\n".join(shown(line) for line in super().formatException(ei).split("\n"))


def load_module(target: str) -> ModuleType:
    """Import ``target``: a dotted module name, or a path to a ``.py`` file."""
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise click.ClickException(f"no such file: {target}")
        path = path.resolve()
        # Let the module import its neighbours, as `python path/to/module.py` would.
        sys.path.insert(0, str(path.parent))
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise click.ClickException(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the current directory is importable
    return importlib.import_module(target)


def collect(module: ModuleType) -> tuple[list[type], list[Callable[..., Any]]]:
    """The ``@workflow.defn`` classes and ``@activity.defn`` functions in ``module``.

    Everything bound at the module's top level counts, whether defined there or
    imported into it, so a small ``worker.py`` can gather definitions from elsewhere.
    """
    workflows: list[type] = []
    activities: list[Callable[..., Any]] = []
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        definition = getattr(value, "__mainspring_workflow__", None)
        if isinstance(value, type) and isinstance(definition, WorkflowDefinition):
            if definition.cls is value and value not in workflows:
                workflows.append(value)
        elif (
            callable(value)
            and isinstance(getattr(value, "__mainspring_activity__", None), ActivityDefinition)
            and value not in activities
        ):
            activities.append(value)
    return workflows, activities


@click.command("worker")
@click.argument("module")
@click.option(
    "--task-queue",
    "-q",
    envvar="MAINSPRING_TASK_QUEUE",
    show_envvar=True,
    callback=not_empty("MAINSPRING_TASK_QUEUE"),
    help="The queue to poll (default: the module's TASK_QUEUE, else 'default').",
)
@click.option(
    "--max-concurrent-activities",
    default=100,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    help="Activity attempts run at once.",
)
@click.option(
    "--max-concurrent-workflow-tasks",
    default=100,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    help="Workflow tasks processed at once.",
)
@click.option(
    "--max-cached-workflows",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_CACHED_WORKFLOWS),
    help="Runs kept in memory between steps.",
)
@click.option(
    "--sticky-timeout",
    default=0.2,
    show_default=True,
    type=Seconds(min=0, max=MAX_SECONDS),
    help="Seconds a ready workflow task is left to the worker that keeps its run in "
    "memory before this one takes it (and replays the run's history).",
)
@click.option(
    "--graceful-shutdown-timeout",
    default=10.0,
    show_default=True,
    type=Seconds(min=0, max=MAX_SECONDS),
    help="Seconds running activities get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--retention",
    default=None,
    metavar="DURATION",
    callback=lambda ctx, param, value: None if value is None else parse_duration(ctx, param, value),
    help="Also delete runs that closed longer ago than this (30d, 12h…; at least 1h), "
    "at start and then hourly. Default: keep every run.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@db_option
def worker(
    module: str,
    task_queue: str | None,
    max_concurrent_activities: int,
    max_concurrent_workflow_tasks: int,
    max_cached_workflows: int,
    sticky_timeout: float,
    graceful_shutdown_timeout: float,
    retention: float | None,
    log_level: str,
    db: str,
) -> None:
    """Serve the workflows and activities of MODULE until SIGTERM or SIGINT.

    MODULE is a dotted module name (myapp.agents) or a path to a .py file. Every
    @workflow.defn class and @activity.defn function bound at its top level is served.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    try:
        mod = load_module(module)
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
        fail(f"cannot import {module!r}: {type(exc).__name__}: {exc}")
    workflows, activities = collect(mod)
    if not workflows and not activities:
        fail(f"{module!r} defines no @workflow.defn classes and no @activity.defn functions")
    if retention is not None and retention < MIN_RETENTION:
        fail(f"--retention must be at least 1h ({MIN_RETENTION:g} seconds)")
    default_queue = str(getattr(mod, "TASK_QUEUE", None) or "default")
    queue = default_queue if task_queue is None else task_queue

    async def serve() -> None:
        async with connect(db, create=True) as client:
            w = Worker(
                client,
                task_queue=queue,
                workflows=workflows,
                activities=activities,
                max_concurrent_activities=max_concurrent_activities,
                max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
                max_cached_workflows=max_cached_workflows,
                sticky_timeout=timedelta(seconds=sticky_timeout),
                graceful_shutdown_timeout=timedelta(seconds=graceful_shutdown_timeout),
                retention=retention,
            )
            log.info(
                "serving %s on task queue %r (db %s): workflows [%s], activities [%s]",
                module,
                queue,
                redacted(db),
                ", ".join(WorkflowDefinition.of(c).name for c in workflows),
                ", ".join(ActivityDefinition.of(f).name for f in activities),
            )
            await w.run()

    run(serve())


_STATE_STYLE = {WorkerState.SERVING: "green", WorkerState.STOPPED: "", WorkerState.LOST: "red"}


@click.command("workers")
@click.option(
    "--task-queue", "-q", callback=not_empty(), help="Only the workers of this task queue."
)
@json_option
@db_option
def workers(task_queue: str | None, as_json: bool, db: str) -> None:
    """List the workers that serve, or served within the last day, on any machine."""

    async def go() -> list[WorkerInfo]:
        async with connect(db) as client:
            return await client.list_workers(task_queue=task_queue)

    found = run(go())
    if as_json:
        print_json([worker_dict(w) for w in found])
        return
    if not found:
        out.print("no workers have served in the last day" + (" there" if task_queue else ""))
        return
    table = Table("Identity", "Task queue", "State", "Started", "Last seen", "Serves")
    for w in found:
        table.add_row(
            shown(w.identity),
            shown(w.task_queue),
            Text(w.state.value, style=_STATE_STYLE[w.state]),
            fmt_time(w.started_time),
            fmt_time(w.stopped_time or w.last_seen),
            f"{len(w.workflows)} workflow(s), {len(w.activities)} activity(ies)",
        )
    out.print(table)


def worker_dict(w: WorkerInfo) -> dict[str, Any]:
    """A worker as JSON."""
    return {
        "identity": w.identity,
        "task_queue": w.task_queue,
        "state": w.state.value,
        "workflows": list(w.workflows),
        "activities": list(w.activities),
        "started_time": w.started_time.isoformat(),
        "last_seen": w.last_seen.isoformat(),
        "stopped_time": w.stopped_time.isoformat() if w.stopped_time else None,
    }
