"""The forms of PostgreSQL URL that libpq takes reach a real server: a socket directory
(``postgresql:///db?host=/dir``, as Cloud SQL's proxy and local servers serve) and a
list of hosts tried in turn (a failover pair); and a worker serving a URL that carries
its passwords as parameters logs it without them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta as td
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from mainspring import Client, Worker, WorkflowAlreadyStartedError, activity, workflow
from mainspring.errors import StoreError, StoreUnavailableError
from tests import _pg

pytestmark = pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())


@pytest.fixture
def pg_url() -> Iterator[str]:
    with _pg.fresh_database() as url:
        yield url


@activity.defn
async def echo(text: str) -> str:
    return text


@workflow.defn
class Echo:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, text: str) -> str:
        await workflow.wait_condition(lambda: self.go)
        return str(
            await workflow.execute_activity(echo, text, start_to_close_timeout=td(seconds=5))
        )

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


async def _round_trip(url: str, task_queue: str) -> None:
    """A run that needs a worker, an activity and a signal, all through ``url``."""
    client = await Client.connect(url)
    try:
        async with Worker(client, task_queue=task_queue, workflows=[Echo], activities=[echo]):
            handle = await client.start_workflow(Echo.run, "hi", id="echo", task_queue=task_queue)
            await handle.signal(Echo.proceed)
            assert await handle.result() == "hi"
        assert client.store.live_wakeups  # the listener connected through the same URL
    finally:
        await client.close()


def _server_setting(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


async def test_a_socket_directory_given_as_the_host_parameter(pg_url: str) -> None:
    dirs = [d.strip() for d in _server_setting(pg_url, "unix_socket_directories").split(",")]
    port = _server_setting(pg_url, "port")
    found = [d for d in dirs if d and os.path.exists(f"{d}/.s.PGSQL.{port}")]
    if not found:  # a server on another machine: its sockets are not here
        pytest.skip(f"the test server's sockets ({dirs}) are not on this machine")
    parts = urlsplit(pg_url)
    url = f"postgresql://{parts.path}?host={quote(found[0])}&port={port}&user={parts.username}"
    await _round_trip(url, "by-socket")


def _refused_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_host_list_falls_over_to_the_host_that_answers(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    dead = f"127.0.0.1:{_refused_port()}"
    url = pg_url.replace(
        f"@{parts.netloc.rsplit('@', 1)[-1]}/", f"@{dead},{parts.hostname}:{parts.port or 5432}/"
    )
    assert dead in url
    await _round_trip(url, "by-list")


async def test_prepare_threshold_0_prepares_every_statement_that_can_be(pg_url: str) -> None:
    # psycopg's prepare_threshold=0 prepares a statement on its first run; a migration
    # script or "BEGIN; SET LOCAL …" holds several statements, which cannot be
    # prepared: those must run unprepared, or the first start fails.
    url = f"{pg_url}?prepare_threshold=0"
    await _round_trip(url, "prep0")
    client = await Client.connect(url)
    try:  # a failing op sends its batch down the careful path, statement by statement
        await client.start_workflow(Echo.run, "x", id="held", task_queue="prep0")
        with pytest.raises(WorkflowAlreadyStartedError):
            await client.start_workflow(Echo.run, "again", id="held", task_queue="prep0")
        batch = await asyncio.gather(
            *(
                client.start_workflow(Echo.run, "x", id=f"many-{i % 3}", task_queue="prep0")
                for i in range(6)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(r, WorkflowAlreadyStartedError) for r in batch) == 3
        assert all(
            isinstance(r, WorkflowAlreadyStartedError) or r.id.startswith("many-") for r in batch
        )
    finally:
        await client.close()


def test_a_worker_logs_its_url_without_the_passwords_given_as_parameters(pg_url: str) -> None:
    # trust auth ignores the passwords, so the worker connects and logs what it serves
    listen = f"{pg_url}?password=ms-secret-3&sslpassword=ms-secret-4"
    url = (
        f"{pg_url}?password=ms-secret-1&sslpassword=ms-secret-2&listen_url={quote(listen, safe='')}"
    )
    agent = Path(__file__).parents[1] / "acceptance" / "cli_agent.py"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "worker", str(agent), "--db", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    guard = threading.Timer(60, proc.kill)  # a worker that never logs fails, not hangs
    guard.start()
    log: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "serving task queue" in line:  # the worker's own line, after the CLI's
                break
        proc.send_signal(signal.SIGTERM)
        log.extend(proc.stderr)  # the rest, up to its exit
        assert proc.wait() == 0, "".join(log)
    finally:
        guard.cancel()
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    text = "".join(log)
    shown = (
        f"(db {pg_url}?password=***&sslpassword=***&listen_url={pg_url}"
        "%3Fpassword%3D***%26sslpassword%3D***)"
    )
    assert shown in text, text
    assert "ms-secret" not in text, text


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("options=-c%20statement_timeout%3Dabc", 'invalid value for parameter "statement_timeout"'),
        ("options=-c%20bogus_setting%3D1", 'unrecognized configuration parameter "bogus_setting"'),
        ("connect_timeout=abc", "bad value for connect_timeout"),
        ("keepalives_idle=xyz", 'for connection option "keepalives_idle"'),
    ],
)
async def test_a_wrong_setting_is_named_as_such_not_as_an_unreachable_server(
    pg_url: str, query: str, named: str
) -> None:
    # the word "timeout" in a setting's name once made it "cannot reach PostgreSQL"
    with pytest.raises(StoreError) as info:
        await Client.connect(f"{pg_url}?{query}")
    assert not isinstance(info.value, StoreUnavailableError)  # retrying will not help
    msg = str(info.value)
    assert msg.startswith("a connection setting in the URL is wrong") and named in msg, msg
    assert "cannot reach" not in msg and "\n" not in msg
