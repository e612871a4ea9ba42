"""Through PgBouncer in transaction mode, set up as docs/postgres.md says: every
transaction may run on another server session, so nothing may rest on session state.

Runs when a ``pgbouncer`` binary is installed (Debian: ``apt-get install pgbouncer``);
``MAINSPRING_REQUIRE_PGBOUNCER=1`` (as in CI) fails instead of skipping without one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from mainspring import Client, EventType, Worker, activity, workflow
from tests import _pg

pytestmark = pytest.mark.skipif(
    _pg.pgbouncer_missing() is not None, reason=f"PgBouncer {_pg.pgbouncer_missing()}"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bouncer() -> Iterator[tuple[str, str]]:
    """PgBouncer in transaction mode with two server connections per database, in front
    of the test server; yields (URL of a fresh database through it, its direct URL)."""
    import psycopg

    admin = urlsplit(_pg.admin_url())
    user = admin.username or "postgres"
    work = Path(tempfile.mkdtemp(prefix="ms-pgbouncer-"))
    work.chmod(0o755)  # readable by the postgres user pgbouncer runs as under root
    port = _free_port()
    (work / "users.txt").write_text(f'"{user}" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={admin.hostname or '127.0.0.1'} port={admin.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {work / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 100\n"
    )
    for f in work.iterdir():
        f.chmod(0o644)
    cmd = [str(_pg.pgbouncer_binary()), str(work / "pgbouncer.ini")]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    log = (work / "pgbouncer.log").open("w")  # a file: a pipe nobody reads fills up
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        with _pg.fresh_database() as direct:
            db = urlsplit(direct).path.lstrip("/")
            pooled = f"postgresql://{user}@127.0.0.1:{port}/{db}"
            deadline = time.monotonic() + 30
            while True:  # until it accepts a connection (it exits if it cannot start)
                if proc.poll() is not None:
                    raise AssertionError(
                        f"pgbouncer exited: {(work / 'pgbouncer.log').read_text()}"
                    )
                try:
                    psycopg.connect(pooled, connect_timeout=2).close()
                    break
                except psycopg.OperationalError:
                    assert time.monotonic() < deadline, "pgbouncer did not start within 30 s"
                    time.sleep(0.05)
            yield pooled, direct
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@activity.defn
async def add(x: int, y: int) -> int:
    return x + y


@workflow.defn
class Sum:
    def __init__(self) -> None:
        self.extra: int | None = None

    @workflow.run
    async def run(self, n: int) -> int:
        total = 0
        for i in range(n):
            total = await add(total, i)
        await workflow.wait_condition(lambda: self.extra is not None)
        return total + (self.extra or 0)

    @workflow.signal
    def more(self, x: int) -> None:
        self.extra = x


async def test_transaction_pooling_with_the_documented_settings(
    bouncer: tuple[str, str],
) -> None:
    # Two processes' worth of clients and workers (three writer connections each)
    # share PgBouncer's two server connections: each transaction lands on whichever is
    # free, prepared statements are off (PgBouncer before 1.21 cannot keep them), and
    # the listener, which needs a session of its own, connects directly.
    pooled, direct = bouncer
    url = f"{pooled}?prepare_threshold=off&pool_size=3&listen_url={quote(direct, safe='')}"
    clients = list(await asyncio.gather(Client.connect(url), Client.connect(url)))
    try:
        workers = [
            Worker(c, task_queue="pooled", workflows=[Sum], activities=[add]) for c in clients
        ]
        async with workers[0], workers[1]:
            handles = [
                await clients[i % 2].start_workflow(Sum.run, 5, id=f"sum-{i}", task_queue="pooled")
                for i in range(20)
            ]
            for i, h in enumerate(handles):
                await clients[(i + 1) % 2].get_workflow_handle(h.id).signal(Sum.more, i)
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
        assert results == [10 + i for i in range(20)]
        assert all(c.store.live_wakeups for c in clients)  # the direct listener
        for h in handles:
            history = await h.fetch_history()
            assert [e.event_id for e in history] == list(range(1, len(history) + 1))
            done = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_COMPLETED]
            assert len(done) == 5
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_a_listener_behind_pgbouncer_hears_nothing_so_waiters_poll(
    bouncer: tuple[str, str],
) -> None:
    # Against the docs' advice, the listener goes through PgBouncer too: its LISTEN
    # lands on a pooled session that hands its notifications to no one. The store must
    # not trust it: waiters poll, so a result reaches its waiter within a poll (2 s)
    # rather than the 30 s that a waiter trusting wake-ups waits between reads.
    pooled, direct = bouncer
    client = await Client.connect(f"{pooled}?prepare_threshold=off")
    try:
        assert client.store._lconn is not None  # it did connect and LISTEN
        assert not client.store.live_wakeups
        async with (
            await Client.connect(direct) as other,
            Worker(other, task_queue="deaf", workflows=[Sum], activities=[add]),
        ):
            h = await client.start_workflow(Sum.run, 2, id="deaf", task_queue="deaf")
            # started: its first step is decided elsewhere; then the signal closes it
            await other.get_workflow_handle("deaf").signal(Sum.more, 5)
            # a guard: trusting a deaf listener, the waiter would sleep 30 s
            assert await asyncio.wait_for(h.result(), 15) == 6
        assert not client.store.live_wakeups
    finally:
        await client.close()
