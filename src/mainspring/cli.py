"""The ``mainspring`` command: run workers, steer workflows, manage the database, demo.

One function per subcommand; every command takes ``--db URL`` (or ``MAINSPRING_DB``);
output is a human-readable table unless ``--json`` is given; a Mainspring error prints
one red line and exits 1.
"""

from __future__ import annotations

import io
import os
import sys
from datetime import UTC, datetime

import click
from rich.console import Console

from . import __version__
from ._cli_common import (
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
)
from ._cli_worker import worker, workers
from ._cli_workflow import workflow_group
from .client import MIN_RETENTION
from .store.records import SchemaInfo

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mainspring")
def cli() -> None:
    """Mainspring: durable execution for AI agents.

    Try `mainspring demo` to watch an agent survive a SIGKILL.
    """


cli.add_command(worker)
cli.add_command(workers)
cli.add_command(workflow_group)


@cli.group("db")
def db_group() -> None:
    """Create, migrate and inspect the database schema."""


# a schema newer than this code that was made to work with it (else it was refused)
_NEWER = (
    "newer than this Mainspring's {latest}, which it was made to work with; "
    "upgrade Mainspring on this machine too"
)


@db_group.command("migrate")
@json_option
@db_option
def migrate(as_json: bool, db: str) -> None:
    """Create the schema or apply pending migrations (opening the store does this)."""

    async def go() -> tuple[int, int]:
        async with connect(db, create=True) as client:
            return await client.store.schema_status()

    current, latest = run(go())
    if as_json:
        print_json({"current": current, "latest": latest})
    elif current > latest:
        out.print(f"schema version {current}: {_NEWER.format(latest=latest)}", soft_wrap=True)
    else:
        out.print(f"schema is at version {current} (latest {latest}): up to date")


@db_group.command("status")
@json_option
@db_option
def status(as_json: bool, db: str) -> None:
    """Print the schema version in the database and the latest this code knows.

    Read-only: a missing SQLite file or PostgreSQL schema is reported, not created,
    and pending migrations are reported, not applied (`mainspring db migrate` does).
    """
    from .store import store_from_url

    async def go() -> SchemaInfo:
        return await store_from_url(db).inspect_schema()

    info = run(go())
    if as_json:
        print_json({"current": info.current, "latest": info.latest, "exists": info.exists})
    elif not info.exists and (folder := _missing_folder(db)) is not None:
        out.print(
            f"no Mainspring database: the folder {folder} does not exist; create it, then "
            "`mainspring db migrate` creates the database there",
            soft_wrap=True,
        )
    elif not info.exists or info.current == 0:
        where = "database" if info.exists else "database yet"
        out.print(
            f"no Mainspring schema in this {where} (latest schema version {info.latest}); "
            "`mainspring db migrate` creates it"
        )
    elif info.current > info.latest:
        newer = _NEWER.format(latest=info.latest)
        out.print(f"current schema version {info.current}: {newer}", soft_wrap=True)
    else:
        pending = info.latest - info.current
        state = "up to date" if not pending else f"{pending} migration(s) pending"
        out.print(f"current schema version {info.current}, latest {info.latest}: {state}")


def _missing_folder(db: str) -> str | None:
    """The folder of a SQLite database file at ``db`` if it does not exist (None: it
    does, or ``db`` is not a SQLite file)."""
    from .store.sqlite import parse_sqlite_url

    if not db.startswith("sqlite:"):
        return None
    path = parse_sqlite_url(db)[0]
    folder = os.path.dirname(os.path.abspath(path))
    return None if path == ":memory:" or os.path.isdir(folder) else folder


@db_group.command("prune")
@click.option(
    "--older-than",
    "older_than",
    callback=parse_duration,
    required=True,
    metavar="DURATION",
    help="Delete runs that closed longer ago than this: e.g. 30d, 12h, 2w (at least 1h).",
)
@click.option("--dry-run", is_flag=True, help="Count the runs it would delete; delete nothing.")
@json_option
@db_option
def prune(older_than: float, dry_run: bool, as_json: bool, db: str) -> None:
    """Delete closed runs, each with its whole history, once they are old enough.

    Open runs are never touched. Work goes in small transactions, so workers carry on
    meanwhile; safe to run from cron on any machine, and to run again if interrupted.
    """
    if older_than < MIN_RETENTION:
        fail(
            f"--older-than must be at least 1h ({MIN_RETENTION:g} seconds): a start re-sent "
            "after a lost answer, or a client about to read a result, may still need a run "
            "that closed more recently"
        )

    async def go() -> tuple[int, datetime]:
        async with connect(db) as client:
            # by the store's clock, as the prune's cutoff (on PostgreSQL, the server's)
            cutoff = client.store.clock.now() - older_than
            count = await client.prune_closed_runs(older_than, dry_run=dry_run)
            return count, datetime.fromtimestamp(cutoff, UTC)

    count, closed_before = run(go())
    if as_json:
        print_json(
            {
                "deleted": 0 if dry_run else count,
                "would_delete": count if dry_run else 0,
                "closed_before": closed_before.isoformat(),
            }
        )
        return
    when = fmt_time(closed_before.timestamp())
    if dry_run:
        out.print(f"{count:,} run(s) closed before {when} would be deleted (dry run: none was)")
    else:
        out.print(f"deleted {count:,} run(s) closed before {when}, with their histories")


@cli.command("demo")
@click.option(
    "--workflows",
    "-n",
    default=1,
    show_default=True,
    type=click.IntRange(1, 20),
    help="How many agent runs to start.",
)
@click.option(
    "--kill-after",
    default=3,
    show_default=True,
    type=click.IntRange(1, 6),
    help="Kill the worker once this many steps of the first run have finished.",
)
@click.option(
    "--db",
    "db",
    envvar="MAINSPRING_DB",
    show_envvar=True,
    default=None,
    metavar="URL",
    callback=not_empty("MAINSPRING_DB"),
    help="Database URL (default: a temporary SQLite file).",
)
def demo(workflows: int, kill_after: int, db: str | None) -> None:
    """Run a research agent, SIGKILL its worker mid-run, and watch it resume.

    The agent's activities (simulated web searches and LLM calls) log every execution
    to a side-effect ledger; the demo checks it against the recorded history to show
    that no finished step ran again. Exits 1 if any promise is broken.
    """
    from .demo.driver import run_demo

    # the demo's own lines carry markup (its data is its own): a console that reads it
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    ok = run(run_demo(db=db, workflows=workflows, kill_after=kill_after, console=console))
    if not ok:
        raise SystemExit(1)


def main() -> None:
    """Entry point of the ``mainspring`` console script."""
    for stream in (sys.stdout, sys.stderr):
        # text that has no form in the terminal's encoding (a lone surrogate a cut
        # stream left in a result) prints as its escape, \ud83d, not as a crash
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        cli.main(prog_name="mainspring")
    except BrokenPipeError:  # e.g. `mainspring workflow list | head`
        os._exit(1)
