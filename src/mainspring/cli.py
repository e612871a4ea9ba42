"""The ``mainspring`` command: run workers, steer workflows, manage the database, demo.

One function per subcommand; every command takes ``--db URL`` (or ``MAINSPRING_DB``);
output is a human-readable table unless ``--json`` is given; a Mainspring error prints
one red line and exits 1.
"""

from __future__ import annotations

import io
import os
import sys

import click

from . import __version__
from ._cli_common import connect, db_option, json_option, out, print_json, run
from ._cli_worker import worker
from ._cli_workflow import workflow_group
from .store.records import SchemaInfo

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mainspring")
def cli() -> None:
    """Mainspring: durable execution for AI agents.

    Try `mainspring demo` to watch an agent survive a SIGKILL.
    """


cli.add_command(worker)
cli.add_command(workflow_group)


@cli.group("db")
def db_group() -> None:
    """Create, migrate and inspect the database schema."""


@db_group.command("migrate")
@json_option
@db_option
def migrate(as_json: bool, db: str) -> None:
    """Create the schema or apply pending migrations (opening the store does this)."""

    async def go() -> tuple[int, int]:
        async with connect(db) as client:
            return await client.store.schema_status()

    current, latest = run(go())
    if as_json:
        print_json({"current": current, "latest": latest})
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
    elif not info.exists or info.current == 0:
        where = "database" if info.exists else "database yet"
        out.print(
            f"no Mainspring schema in this {where} (latest schema version {info.latest}); "
            "`mainspring db migrate` creates it"
        )
    else:
        pending = info.latest - info.current
        state = "up to date" if not pending else f"{pending} migration(s) pending"
        out.print(f"current schema version {info.current}, latest {info.latest}: {state}")


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
    help="Database URL (default: a temporary SQLite file).",
)
def demo(workflows: int, kill_after: int, db: str | None) -> None:
    """Run a research agent, SIGKILL its worker mid-run, and watch it resume.

    The agent's activities (simulated web searches and LLM calls) log every execution
    to a side-effect ledger; the demo checks it against the recorded history to show
    that no finished step ran again. Exits 1 if any promise is broken.
    """
    from .demo.driver import run_demo

    ok = run(run_demo(db=db, workflows=workflows, kill_after=kill_after, console=out))
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
