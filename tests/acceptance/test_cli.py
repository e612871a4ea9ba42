"""The `mainspring` command end to end: real processes on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mainspring import Client, Replayer
from tests._clock import ManualClock
from tests.acceptance.cli_agent import TASK_QUEUE, Greeter, Sleeper

AGENT = Path(__file__).with_name("cli_agent.py")


def cli(*args: str, db: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `python -m mainspring ARGS` (with MAINSPRING_DB=db); return the finished process."""
    env = {k: v for k, v in os.environ.items() if k != "MAINSPRING_DB"}
    if db is not None:
        env["MAINSPRING_DB"] = db
    proc = subprocess.run(
        [sys.executable, "-m", "mainspring", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mainspring {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the process failed with one error line and no traceback; return it."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def usage_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the process failed with a usage error (exit 2, no traceback); return the
    line saying what is wrong."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cli') / 'cli.db'}"


@pytest.fixture(scope="module")
def worker(db: str) -> Iterator[subprocess.Popen[str]]:
    """`mainspring worker tests/acceptance/cli_agent.py`, ready when this yields."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "worker", str(AGENT), "--db", db],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    log: list[str] = []
    for line in proc.stderr:  # the worker logs this once it polls
        log.append(line)
        if "serving task queue" in line:
            break
    else:
        raise AssertionError("worker exited before serving:\n" + "".join(log))
    drain = threading.Thread(target=lambda: log.extend(proc.stderr or ()), daemon=True)
    drain.start()
    yield proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, "".join(log)
    drain.join(5)
    if proc.stderr is not None:
        proc.stderr.close()
    text = "".join(log)
    assert "serving" in text and "cli_agent.py" in text and TASK_QUEUE in text
    assert "Traceback" not in text, text


def test_help_shows_the_db_env_var() -> None:
    for command in (["workflow", "list"], ["worker"], ["db", "status"], ["demo"]):
        out = cli(*command, "--help").stdout
        assert "MAINSPRING_DB" in out, command


def test_start_query_signal_result(db: str, worker: subprocess.Popen[str]) -> None:
    started = json.loads(
        cli(
            "workflow",
            "start",
            "Greeter",
            "--id",
            "greet-1",
            "--task-queue",
            TASK_QUEUE,
            "--arg",
            '"bob"',
            "--json",
            db=db,
        ).stdout
    )
    assert started["workflow_id"] == "greet-1" and started["run_id"]

    again = cli(
        "workflow",
        "start",
        "Greeter",
        "--id",
        "greet-1",
        "-q",
        TASK_QUEUE,
        "--arg",
        '"bob"',
        db=db,
        check=False,
    )
    assert "already" in one_line_error(again)
    same = cli(
        "workflow",
        "start",
        "Greeter",
        "--id",
        "greet-1",
        "-q",
        TASK_QUEUE,
        "--arg",
        '"bob"',
        "--use-existing",
        "--json",
        db=db,
    )
    assert json.loads(same.stdout)["run_id"] == started["run_id"]

    assert json.loads(cli("workflow", "query", "greet-1", "status", db=db).stdout) == "waiting"
    assert (
        json.loads(cli("workflow", "query", "greet-1", "echo", "--arg", "21", db=db).stdout) == 42
    )
    cli("workflow", "signal", "greet-1", "approve", "--arg", '"alice"', db=db)
    result = cli("workflow", "result", "greet-1", "--timeout", "30", db=db)
    assert json.loads(result.stdout) == {"greeting": "hello bob", "approved_by": "alice"}

    described = json.loads(cli("workflow", "describe", "greet-1", "--json", db=db).stdout)
    assert described["status"] == "COMPLETED"
    assert described["run_id"] == started["run_id"]
    table = cli("workflow", "describe", "greet-1", db=db).stdout
    assert "COMPLETED" in table and "Greeter" in table


def test_list_and_history(db: str, worker: subprocess.Popen[str]) -> None:
    cli(
        "workflow",
        "start",
        "Greeter",
        "--id",
        "greet-2",
        "-q",
        TASK_QUEUE,
        "--arg",
        '"carol"',
        db=db,
    )
    cli("workflow", "signal", "greet-2", "approve", "--arg", '"dan"', db=db)
    cli("workflow", "result", "greet-2", "--timeout", "30", db=db)

    runs = json.loads(cli("workflow", "list", "--json", db=db).stdout)
    assert {"greet-2"} <= {r["workflow_id"] for r in runs}
    completed = json.loads(
        cli(
            "workflow",
            "list",
            "--status",
            "completed",
            "--type",
            "Greeter",
            "--limit",
            "1",
            "--json",
            db=db,
        ).stdout
    )
    assert [r["workflow_id"] for r in completed] == ["greet-2"]
    table = cli("workflow", "list", db=db).stdout
    assert "greet-2" in table and "COMPLETED" in table

    doc = json.loads(cli("workflow", "history", "greet-2", "--json", db=db).stdout)
    assert doc["format"] == "mainspring.history/1" and doc["workflow_id"] == "greet-2"
    assert doc["events"][-1]["event_type"] == "WorkflowExecutionCompleted"
    Replayer(workflows=[Greeter, Sleeper]).replay(doc)
    table = cli("workflow", "history", "greet-2", db=db).stdout
    assert "ActivityTaskCompleted" in table and "approve" in table


def test_text_with_a_lone_surrogate_prints_as_its_escape(
    db: str, worker: subprocess.Popen[str]
) -> None:
    # a lone surrogate (half an emoji, as a cut stream leaves it) has no UTF-8 form:
    # printing it crashed the command with a traceback
    cli(
        "workflow", "start", "Greeter", "--id", "cut", "-q", TASK_QUEUE, "--arg", '"\\ud83d"', db=db
    )
    cli("workflow", "signal", "cut", "approve", "--arg", '"ann \\udc80"', db=db)
    result = cli("workflow", "result", "cut", "--timeout", "30", db=db).stdout
    assert json.loads(result) == {"greeting": "hello \ud83d", "approved_by": "ann \udc80"}
    table = cli("workflow", "history", "cut", db=db).stdout
    assert "hello \\ud83d" in table and "ann \\udc80" in table


def test_cancel_and_terminate(db: str, worker: subprocess.Popen[str]) -> None:
    for wid in ("sleep-1", "sleep-2"):
        cli("workflow", "start", "Sleeper", "--id", wid, "-q", TASK_QUEUE, db=db)
    cli("workflow", "cancel", "sleep-1", db=db)
    cli("workflow", "terminate", "sleep-2", "--reason", "not needed", db=db)

    cancelled = cli("workflow", "result", "sleep-1", "--timeout", "30", db=db, check=False)
    assert "canceled" in one_line_error(cancelled)
    terminated = json.loads(cli("workflow", "describe", "sleep-2", "--json", db=db).stdout)
    assert terminated["status"] == "TERMINATED"
    assert "not needed" in json.dumps(terminated["failure"])
    closed = cli("workflow", "signal", "sleep-2", "anything", db=db, check=False)
    assert "TERMINATED" in one_line_error(closed)


def test_describe_shows_where_an_unfinished_activity_stands(
    db: str, worker: subprocess.Popen[str]
) -> None:
    cli("workflow", "start", "Throttled", "--id", "throttled-1", "-q", TASK_QUEUE, db=db)
    deadline = time.monotonic() + 30
    while True:  # each describe is a process of its own: no sleep needed between them
        described = json.loads(cli("workflow", "describe", "throttled-1", "--json", db=db).stdout)
        pending = described["pending_activities"]
        if pending and pending[0]["state"] == "BACKOFF":
            break
        assert time.monotonic() < deadline, described
    assert pending[0]["activity_type"] == "throttled"
    assert (pending[0]["attempt"], pending[0]["maximum_attempts"]) == (2, 3)
    assert pending[0]["last_failure"]["message"] == "429 Too Many Requests"
    assert pending[0]["worker"] is None and pending[0]["next_attempt_time"] is not None
    table = cli("workflow", "describe", "throttled-1", db=db).stdout
    words = " ".join(table.split())  # the table wraps long lines to the terminal's width
    assert "Activity #1 throttled, attempt 2 of 3: backing off until 20" in words
    assert "; last failure: RuntimeError: 429 Too Many Requests" in words
    cli("workflow", "terminate", "throttled-1", db=db)
    closed = json.loads(cli("workflow", "describe", "throttled-1", "--json", db=db).stdout)
    assert closed["pending_activities"] == []


def test_workers_lists_the_serving_worker_by_machine_and_process(
    db: str, worker: subprocess.Popen[str]
) -> None:
    found = json.loads(cli("workers", "--json", db=db).stdout)
    serving = [w for w in found if w["state"] == "SERVING"]
    assert len(serving) == 1, found
    assert serving[0]["identity"].startswith(f"{socket.gethostname()}:{worker.pid}:")
    assert serving[0]["task_queue"] == TASK_QUEUE
    assert "greet" in serving[0]["activities"] and "Greeter" in serving[0]["workflows"]
    table = cli("workers", "-q", TASK_QUEUE, db=db).stdout
    row = next(line for line in table.splitlines() if serving[0]["identity"] in line)
    assert [cell.strip() for cell in row.split("│")[2:4]] == [TASK_QUEUE, "SERVING"]
    assert cli("workers", "-q", "nobody", db=db).stdout.strip() == (
        "no workers have served in the last day there"
    )


def test_ids_print_as_they_are_not_as_markup(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'markup.db'}"
    wid = "a[/]b[red]c"  # a stray closing tag made the table raise; a style tag vanished
    started = cli("workflow", "start", "Foo", "--id", wid, "-q", "q", db=db).stdout
    assert started.startswith(f"started workflow {wid} (run ")
    assert wid in cli("workflow", "list", db=db).stdout
    assert wid in cli("workflow", "describe", wid, db=db).stdout
    # control characters would steer the terminal: they print escaped, everywhere
    evil = "evil\x1b[2J\u202e"
    shown = "evil\\x1b[2J\\u202e"
    started = cli("workflow", "start", "Foo", "--id", evil, "-q", "q", db=db).stdout
    assert started.startswith(f"started workflow {shown} (run ")
    for command in (["list"], ["describe", evil], ["history", evil]):
        printed = cli("workflow", *command, db=db).stdout
        assert "\x1b" not in printed and "\u202e" not in printed, command
    assert shown in cli("workflow", "describe", evil, db=db).stdout
    missing = cli("workflow", "describe", "gone\x1b[2J", db=db, check=False)
    assert "gone\\x1b[2J" in one_line_error(missing) and "\x1b" not in missing.stderr


def test_reading_commands_create_no_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'typo.db'}"
    for command in (["workflow", "list"], ["workflow", "describe", "x"], ["workers"]):
        line = one_line_error(cli(*command, db=db, check=False))
        assert f"there is no Mainspring database at {db}" in line, command
    assert not (tmp_path / "typo.db").exists()


def test_unknown_workflow_is_one_line_error(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    cli("db", "migrate", db=db)  # a database, without that workflow
    for command in (["describe"], ["result"], ["cancel"], ["history"]):
        line = one_line_error(cli("workflow", *command, "no-such-id", db=db, check=False))
        assert "no-such-id" in line, command


def test_bad_json_argument_is_a_usage_error(tmp_path: Path) -> None:
    proc = cli(
        "workflow",
        "start",
        "Greeter",
        "--id",
        "x",
        "-q",
        "q",
        "--arg",
        "bob",
        "--db",
        f"sqlite:///{tmp_path / 'x.db'}",
        check=False,
    )
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


def test_db_that_is_not_mainspring_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all\n" * 100)
    line = one_line_error(cli("workflow", "list", "--db", f"sqlite:///{text}", check=False))
    assert "not a Mainspring database" in line

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.close()
    line = one_line_error(cli("db", "migrate", "--db", f"sqlite:///{other}", check=False))
    assert "not Mainspring's" in line
    with sqlite3.connect(other) as conn:  # untouched
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"customers"}


def _has_schema(db: str) -> bool:
    """Whether the database at ``db`` holds anything of Mainspring's (read directly)."""
    if db.startswith("sqlite:///"):
        path = Path(db.removeprefix("sqlite:///"))
        if not path.exists():
            return False
        with sqlite3.connect(path) as conn:
            found = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        conn.close()
        return found
    import psycopg

    with psycopg.connect(db) as pg:
        row = pg.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'mainspring'").fetchone()
    return row is not None


def test_db_status_reports_and_changes_nothing_until_migrate(db_url: str) -> None:
    status = json.loads(cli("db", "status", "--json", db=db_url).stdout)
    assert status["exists"] is False and status["current"] == 0 and status["latest"] >= 1
    text = cli("db", "status", db=db_url).stdout
    assert "no Mainspring schema" in text and "mainspring db migrate" in text
    assert not _has_schema(db_url)  # status created nothing
    migrated = json.loads(cli("db", "migrate", "--json", db=db_url).stdout)
    assert migrated["current"] == migrated["latest"] == status["latest"]
    assert _has_schema(db_url)
    after = json.loads(cli("db", "status", "--json", db=db_url).stdout)
    assert after == {"current": status["latest"], "latest": status["latest"], "exists": True}
    assert "up to date" in cli("db", "status", db=db_url).stdout


def test_db_status_reports_pending_migrations_without_applying_them(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = f"sqlite:///{path}"
    cli("db", "migrate", db=db)
    with sqlite3.connect(path) as conn:  # pretend the file is from before the last migration
        conn.execute("UPDATE mainspring_meta SET value = '0' WHERE key = 'version'")
    conn.close()
    status = json.loads(cli("db", "status", "--json", db=db).stdout)
    assert status["exists"] is True and status["current"] == 0 < status["latest"]
    assert "`mainspring db migrate`" in cli("db", "status", db=db).stdout
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM mainspring_meta WHERE key = 'version'")
        assert version.fetchone()[0] == "0"  # not applied
    conn.close()


def test_db_status_says_when_the_folder_is_missing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}"
    said = cli("db", "status", db=db).stdout
    assert f"the folder {tmp_path / 'no' / 'such'} does not exist; create it" in " ".join(
        said.split()
    )
    assert not (tmp_path / "no").exists()


def test_db_status_of_an_empty_file_leaves_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    status = json.loads(cli("db", "status", "--json", db=f"sqlite:///{path}").stdout)
    assert status == {"current": 0, "latest": status["latest"], "exists": True}
    assert path.read_bytes() == b""


def test_db_status_refuses_a_newer_or_foreign_database(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    cli("db", "migrate", db=f"sqlite:///{newer}")
    with sqlite3.connect(newer) as conn:
        # a newer release's migration that this one cannot run beside
        conn.execute(
            "UPDATE mainspring_meta SET value = '999' WHERE key IN ('version', 'compatible')"
        )
    conn.close()
    line = one_line_error(cli("db", "status", db=f"sqlite:///{newer}", check=False))
    assert "schema version 999, newer than" in line and "upgrade Mainspring" in line
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.close()
    line = one_line_error(cli("db", "status", db=f"sqlite:///{foreign}", check=False))
    assert "not Mainspring's" in line
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database file at all" * 100)
    line = one_line_error(cli("db", "status", db=f"sqlite:///{garbage}", check=False))
    assert "not a Mainspring database" in line
    assert garbage.read_bytes() == b"this is not a database file at all" * 100


def test_worker_needs_definitions(tmp_path: Path) -> None:
    empty = tmp_path / "empty_module.py"
    empty.write_text("X = 1\n")
    line = one_line_error(
        cli("worker", str(empty), "--db", f"sqlite:///{tmp_path / 'w.db'}", check=False)
    )
    assert "no @workflow.defn" in line
    line = one_line_error(cli("worker", "no_such_module_xyz", check=False))
    assert "cannot import" in line


def test_db_prune_deletes_only_runs_closed_long_enough_ago(db_url: str) -> None:
    async def seed() -> None:
        clock = ManualClock()
        clock.t -= 2 * 3600  # two hours ago
        async with await Client.connect(db_url, clock=clock) as client:
            s = client.store
            for wid in ["old-1", "old-2", "open"]:
                await s.start_workflow(
                    workflow_id=wid, workflow_type="W", task_queue="q", input="[]"
                )
            await s.terminate("old-1", None, "test")
            await s.terminate("old-2", None, "test")
            clock.t += 2 * 3600  # now
            await s.start_workflow(
                workflow_id="recent", workflow_type="W", task_queue="q", input="[]"
            )
            await s.terminate("recent", None, "test")

    asyncio.run(seed())
    dry = json.loads(
        cli("db", "prune", "--older-than", "1h", "--dry-run", "--json", db=db_url).stdout
    )
    assert (dry["would_delete"], dry["deleted"]) == (2, 0)
    assert (
        "deleted 2 run(s) closed before"
        in cli("db", "prune", "--older-than", "1h", db=db_url).stdout
    )
    listed = json.loads(cli("workflow", "list", "--json", db=db_url).stdout)
    assert sorted(r["workflow_id"] for r in listed) == ["open", "recent"]
    assert "deleted 0 run(s)" in cli("db", "prune", "--older-than", "90m", db=db_url).stdout


def test_db_prune_refuses_a_missing_unit_or_a_retention_under_an_hour(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    usage = cli("db", "prune", "--older-than", "30", db=db, check=False)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "write a number and a unit (s, m, h, d or w)" in usage.stderr
    for short in ("30s", "59m"):
        line = one_line_error(cli("db", "prune", "--older-than", short, db=db, check=False))
        assert "--older-than must be at least 1h" in line, line
    assert not (tmp_path / "p.db").exists()  # refused before anything was opened


def test_an_empty_database_url_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    start = ["workflow", "start", "X", "--id", "e1", "-q", "q"]
    assert "the database URL is empty" in usage_error(cli(*start, "--db", "", check=False))
    assert "the database URL is empty" in usage_error(cli(*start, "--db", " ", check=False))
    for command in (["workflow", "list"], ["db", "status"], ["demo"]):
        line = usage_error(cli(*command, db="", check=False))
        assert "MAINSPRING_DB is set but empty" in line, command
    assert list(tmp_path.iterdir()) == []  # no ./mainspring.db
    cli("db", "migrate")  # MAINSPRING_DB unset: the default still applies
    assert (tmp_path / "mainspring.db").exists()


def test_an_argument_too_deep_or_too_long_to_decode_is_a_usage_error(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    deep = "[" * 3000 + "]" * 3000
    line = usage_error(cli("workflow", "signal", "w", "s", "--arg", deep, db=db, check=False))
    assert "nests arrays or objects too deeply" in line and len(line) < 300
    long = "9" * 5000
    line = usage_error(
        cli("workflow", "start", "W", "--id", "w", "-q", "q", "--arg", long, db=db, check=False)
    )
    assert "4300 digits" in line and "as a JSON string" in line
    assert not (tmp_path / "a.db").exists()


def test_worker_options_out_of_range_are_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # refused while parsing, before the module (which does not exist) is imported
    for option, value, message in [
        ("--sticky-timeout", "nan", "'nan' is not a finite number of seconds"),
        ("--sticky-timeout", "inf", "not in the range 0<=x<=604800"),
        ("--graceful-shutdown-timeout", "nan", "'nan' is not a finite number of seconds"),
        ("--graceful-shutdown-timeout", "-inf", "not in the range"),
        ("--max-concurrent-activities", "9" * 23, "not in the range 1<=x<=10000"),
        ("--max-concurrent-workflow-tasks", "10001", "not in the range 1<=x<=10000"),
        ("--max-cached-workflows", "1000001", "not in the range 1<=x<=1000000"),
        ("--task-queue", "", "is empty"),
    ]:
        line = usage_error(cli("worker", "no_such_module_xyz", option, value, check=False))
        assert option in line and message in line, (option, value, line)
    monkeypatch.setenv("MAINSPRING_TASK_QUEUE", "")
    line = usage_error(cli("worker", "no_such_module_xyz", check=False))
    assert "MAINSPRING_TASK_QUEUE is set but empty" in line


def test_bad_timeouts_and_empty_run_ids_are_usage_errors(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    for value in ("nan", "inf", "-1"):
        for command in (["result", "w"], ["query", "w", "status"]):
            line = usage_error(cli("workflow", *command, "--timeout", value, db=db, check=False))
            assert "--timeout" in line, (command, value)
    for command in ("describe", "history"):
        line = usage_error(cli("workflow", command, "w", "--run-id", "", db=db, check=False))
        assert "--run-id" in line and "is empty" in line
    assert not (tmp_path / "t.db").exists()


def test_a_damaged_schema_version_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    db = f"sqlite:///{path}"
    cli("db", "migrate", db=db)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE mainspring_meta SET value = 'abc' WHERE key = 'version'")
    conn.close()
    for command in ("status", "migrate"):
        line = one_line_error(cli("db", command, db=db, check=False))
        assert "schema version 'abc'" in line and "not a whole number" in line, command


def test_starting_an_open_id_names_the_cli_flag(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    start = ["workflow", "start", "W", "--id", "w", "-q", "q"]
    cli(*start, db=db)
    line = one_line_error(cli(*start, db=db, check=False))
    assert "already running" in line and "pass --use-existing" in line
    assert "id_conflict_policy" not in line


def test_list_says_on_stderr_when_it_may_have_left_runs_out(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    for wid in ("a", "b"):
        cli("workflow", "start", "W", "--id", wid, "-q", "q", db=db)
    full = cli("workflow", "list", "--limit", "2", "--json", db=db)
    assert [r["workflow_id"] for r in json.loads(full.stdout)] == ["b", "a"]
    assert full.stderr.strip() == "showing the newest 2 runs; --limit N shows more"
    assert "showing the newest run;" in cli("workflow", "list", "--limit", "1", db=db).stderr
    assert cli("workflow", "list", "--limit", "3", db=db).stderr == ""


def test_a_worker_given_a_retention_prunes_old_closed_runs(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"

    async def seed() -> None:
        clock = ManualClock()
        clock.t -= 2 * 3600  # two hours ago
        async with await Client.connect(db, clock=clock) as client:
            for wid in ("old-1", "old-2"):
                await client.store.start_workflow(
                    workflow_id=wid, workflow_type="W", task_queue="q", input="[]"
                )
                await client.store.terminate(wid, None, "test")

    asyncio.run(seed())
    assert "at least 1h" in one_line_error(
        cli("worker", str(AGENT), "--retention", "30m", db=db, check=False)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "worker", str(AGENT), "--db", db, "--retention", "1h"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    log: list[str] = []
    try:
        for line in proc.stderr:  # it prunes as it starts, and says so
            log.append(line)
            if "pruned 2 run(s) closed over 3600 s ago" in line:
                break
        else:
            raise AssertionError("the worker exited without pruning:\n" + "".join(log))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        proc.stderr.close()
    assert json.loads(cli("workflow", "list", "--json", db=db).stdout) == []
