"""Shared pieces of the ``mainspring`` command: options, output, error handling."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.text import Text

from .client import Client
from .errors import Failure, MainspringError
from .handle import PendingActivity, PendingActivityState, WorkflowDescription
from .store import DEFAULT_URL, store_from_url
from .store._redact import redacted

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DB_ENVVAR = "MAINSPRING_DB"

# Piped output gets room for a table rather than Rich's 80-column default.
# markup off: ids, names and messages are users' data, and "[red]" or "[/]" in one
# must print as it is (a stray closing tag would make rich raise)
out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 120)
err = Console(
    stderr=True, highlight=False, markup=False, width=None if sys.stderr.isatty() else 200
)


def not_empty(envvar: str | None = None) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback refusing an empty (or all-blank) value with a usage error, whether
    given on the command line or as ``envvar`` set to nothing (which click would
    otherwise take for unset, silently falling back to the default)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        source = ctx.get_parameter_source(param.name or "")
        from_default = source is click.core.ParameterSource.DEFAULT
        if envvar and from_default and not os.environ.get(envvar, "x").strip():
            raise click.BadParameter(f"{envvar} is set but empty; set it to a value or unset it")
        if isinstance(value, str) and not value.strip():
            what = "the database URL" if param.name == "db" else "the value"
            raise click.BadParameter(f"{what} is empty; give a non-empty one or leave it out")
        return value

    return check


def db_option(fn: F) -> F:
    """``--db URL``, falling back to ``MAINSPRING_DB``, then ``sqlite:///mainspring.db``;
    an empty URL, or ``MAINSPRING_DB`` set to nothing, is a usage error."""
    return click.option(
        "--db",
        "db",
        envvar=DB_ENVVAR,
        show_envvar=True,
        default=DEFAULT_URL,
        show_default=True,
        metavar="URL",
        callback=not_empty(DB_ENVVAR),
        help="Database URL: sqlite:///path.db, sqlite:////abs/path.db or postgresql://…",
    )(fn)


def json_option(fn: F) -> F:
    """``--json``: print machine-readable JSON instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
    )(fn)


# control characters but newline and tab, and the marks that reorder text
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """``text`` with its control characters but newline and tab, and its bidirectional
    marks, escaped (``\\x1b``, ``\\u202e``): ids, names and messages are users' data,
    and must not steer the terminal or reorder what it shows."""
    return _CONTROL.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def fail(message: str) -> NoReturn:
    """Print one red line on stderr and exit 1."""
    err.print(Text("error: ", style="bold red") + Text(shown(message), style="red"), soft_wrap=True)
    sys.exit(1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; turn Mainspring errors into one red line and exit status 1."""
    try:
        return asyncio.run(coro)
    except MainspringError as exc:
        fail(" ".join(str(exc).split("\n")))
    except KeyboardInterrupt:
        sys.exit(130)


@asynccontextmanager
async def connect(db: str, *, create: bool = False) -> AsyncIterator[Client]:
    """A client on ``db``, closed on exit. Unless ``create``, a database (or
    PostgreSQL schema) with no Mainspring in it is an error, not created: a command
    that reads runs, or acts on one, has nothing to find there, and a mistyped
    ``--db`` would leave a stray database behind."""
    if not create and not (await store_from_url(db).inspect_schema()).exists:
        fail(
            f"there is no Mainspring database at {redacted(db)}: check --db / MAINSPRING_DB "
            "(`mainspring db migrate`, a worker or `workflow start` creates one)"
        )
    client = await Client.connect(db)
    try:
        yield client
    finally:
        await client.close()


def _shown(raw: str, limit: int = 40) -> str:
    """``raw`` quoted, cut to about ``limit`` characters so an error stays one line."""
    return repr(raw) if len(raw) <= limit else repr(raw[:limit]) + f"… ({len(raw):,} characters)"


def parse_json_args(values: tuple[str, ...], what: str = "--arg") -> list[Any]:
    """Decode each ``--arg`` value as JSON: ``'"text"'``, ``42``, ``'{"k": 1}'``.

    A value that is not JSON, nests too deeply, or holds a number too long for Python
    to read is a usage error (``click.BadParameter``) naming the problem.
    """
    parsed: list[Any] = []
    for raw in values:
        try:
            parsed.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise click.BadParameter(
                f"{_shown(raw)} is not valid JSON ({exc.msg}); a string needs JSON quotes, "
                """e.g. --arg '"some text"'""",
                param_hint=what,
            ) from None
        except RecursionError:
            raise click.BadParameter(
                f"{_shown(raw)} nests arrays or objects too deeply to decode; pass a flatter value",
                param_hint=what,
            ) from None
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise click.BadParameter(
                f"{_shown(raw)} cannot be decoded ({str(exc).split(':')[0]}); "
                "pass a long number as a JSON string instead",
                param_hint=what,
            ) from None
    return parsed


class Seconds(click.FloatRange):
    """A number of seconds from ``min`` to ``max``: NaN and infinities are refused."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


MAX_DURATION = 100 * 365.25 * 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """A click callback: ``value`` such as ``90s``, ``45m``, ``12h``, ``30d`` or ``2w``, in
    seconds; a value without a known unit fails with a usage error saying how to write it."""
    text = value.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    try:
        number = float(text[:-1]) if unit is not None else None
    except ValueError:
        number = None
    if unit is None or number is None or not math.isfinite(number) or number < 0:
        raise click.BadParameter(
            f"{value!r} is not a duration; write a number and a unit (s, m, h, d or w), "
            "e.g. 30d or 12h"
        )
    if number * unit > MAX_DURATION:
        raise click.BadParameter(f"{value!r} is longer than 100 years; write a shorter one")
    return number * unit


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (plain text, no colour)."""
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def decode_payload(text: str | None) -> Any:
    """A stored JSON payload as a Python value (the raw text if it is not JSON)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def fmt_time(value: datetime | float | None) -> str:
    """A local, second-precision timestamp, or ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float | int):
        value = datetime.fromtimestamp(value)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLE = {
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELED": "yellow",
    "TERMINATED": "magenta",
}


def status_text(d: WorkflowDescription) -> Text:
    """The run's status, coloured; ``RUNNING (blocked)`` when its workflow task fails."""
    label = d.status.value + (" (blocked)" if d.blocked else "")
    return Text(label, style="red" if d.blocked else STATUS_STYLE.get(d.status.value, ""))


def failure_dict(f: Failure | None) -> dict[str, Any] | None:
    """A failure as JSON (without its stack, which ``history --json`` keeps)."""
    if f is None:
        return None
    data = f.to_dict()
    data.pop("stack", None)
    return data


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def pending_dict(a: PendingActivity) -> dict[str, Any]:
    """An unfinished activity as JSON."""
    return {
        "seq": a.seq,
        "activity_type": a.activity_type,
        "task_queue": a.task_queue,
        "state": a.state.value,
        "attempt": a.attempt,
        "maximum_attempts": a.maximum_attempts,
        "scheduled_time": a.scheduled_time.isoformat(),
        "next_attempt_time": _iso(a.next_attempt_time),
        "worker": a.worker,
        "lease_expires": _iso(a.lease_expires),
        "deadline": _iso(a.deadline),
        "last_failure": failure_dict(a.last_failure),
        "heartbeat_details": a.heartbeat_details,
        "cancel_requested": a.cancel_requested,
        "able_workers": a.able_workers,
    }


def pending_text(a: PendingActivity, now: datetime) -> Text:
    """One line saying where an unfinished activity stands: who runs it, on which
    attempt, and why the last attempt failed."""
    of = f" of {a.maximum_attempts}" if a.maximum_attempts else ""
    line = Text(f"{shown(a.activity_type)}, attempt {a.attempt}{of}: ")
    if a.state is PendingActivityState.STARTED:
        line.append(f"running on {shown(a.worker or '')}")
        if a.lease_expires is not None and a.lease_expires < now:
            line.append(
                f" (its lease ran out at {fmt_time(a.lease_expires)}: this attempt timed "
                "out, its worker lost or too slow; the next maintenance pass of any worker "
                "fails it, and the retry policy decides what follows)",
                style="yellow",
            )
        else:
            line.append(f" (lease until {fmt_time(a.lease_expires)})")
    elif a.state is PendingActivityState.BACKOFF:
        line.append(f"backing off until {fmt_time(a.next_attempt_time)}")
    else:
        line.append(f"waiting for a worker of task queue {a.task_queue!r}")
        if not a.able_workers:
            line.append(
                f" (no live worker there registers {shown(a.activity_type)}: start one that does)",
                style="yellow",
            )
    if a.deadline is not None and a.state is not PendingActivityState.STARTED:
        passed = a.deadline < now
        line.append(
            f" ({'past its deadline' if passed else 'must finish by'} {fmt_time(a.deadline)})",
            style="yellow" if passed else "",
        )
    if a.cancel_requested:
        line.append(", cancel requested")
    if a.last_failure is not None:
        first = shown(a.last_failure.describe().splitlines()[0])
        line.append(f"; last failure: {first}", style="red")
    return line


def description_dict(d: WorkflowDescription) -> dict[str, Any]:
    """A description as JSON."""
    return {
        "workflow_id": d.workflow_id,
        "run_id": d.run_id,
        "workflow_type": d.workflow_type,
        "task_queue": d.task_queue,
        "status": d.status.value,
        "blocked": d.blocked,
        "start_time": d.start_time.isoformat(),
        "close_time": d.close_time.isoformat() if d.close_time else None,
        "history_length": d.history_length,
        "failure": failure_dict(d.failure),
        "workflow_task_failure": failure_dict(d.workflow_task_failure),
        "workflow_task_attempt": d.workflow_task_attempt,
        "pending_activities": [pending_dict(a) for a in d.pending_activities],
        "pending_activity_count": d.pending_activity_count,
    }
