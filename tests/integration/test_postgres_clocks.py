"""On PostgreSQL every process keeps time by the server's clock: a worker on a machine
whose clock is an hour off neither steals other workers' leases nor writes times an
hour off. Each "machine" here is a process whose ``time.time`` is moved."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta as td
from pathlib import Path
from typing import Any

import pytest

from mainspring import Client, RetryPolicy, Worker, activity, workflow
from mainspring.store import _pg_clock
from mainspring.store.postgres import PostgresStore
from tests import _pg

pytestmark = pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0

# set by a test in its own process; a worker in another process runs the same code
# without them (its `hold` then never returns)
_HERE: dict[str, asyncio.Event] = {}


@activity.defn
async def hold(ledger: str) -> int:
    """Record who runs it; in the test's own process, wait until the test says so."""
    with open(ledger, "a") as f:
        f.write(f"hold {os.getpid()}\n")
    if "started" in _HERE:
        _HERE["started"].set()
    await _HERE.get("release", asyncio.Event()).wait()
    return os.getpid()


@activity.defn
async def quick(ledger: str) -> int:
    with open(ledger, "a") as f:
        f.write(f"quick {os.getpid()}\n")
    return os.getpid()


@workflow.defn
class Holding:
    @workflow.run
    async def run(self, ledger: str) -> int:
        return int(
            await workflow.execute_activity(
                hold,
                ledger,
                start_to_close_timeout=td(minutes=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        )


@workflow.defn
class Quick:
    @workflow.run
    async def run(self, ledger: str) -> int:
        return int(
            await workflow.execute_activity(quick, ledger, start_to_close_timeout=td(minutes=10))
        )


@workflow.defn
class Stamp:
    """When it started and when its timer fired, by workflow time."""

    @workflow.run
    async def run(self) -> list[float]:
        started = workflow.now().timestamp()
        await workflow.sleep(0.2)
        return [started, workflow.now().timestamp()]


# A worker process on a "machine" whose clock is argv[2] seconds off. It prints how far
# its store's "now" is from the true time, then serves argv[3] until stdin closes.
SKEWED_WORKER = """
    import asyncio, sys, time
    real = time.time
    skew = float(sys.argv[2])
    time.time = lambda: real() + skew
    from mainspring import Client, Worker
    from tests.integration.test_postgres_clocks import Holding, Quick, Stamp, hold, quick

    async def main() -> None:
        async with await Client.connect(sys.argv[1]) as client:
            async with Worker(
                client,
                task_queue=sys.argv[3],
                workflows=[Holding, Quick, Stamp],
                activities=[hold, quick],
                poll_interval=0.2,
            ):
                print("READY", client.store.clock.now() - real(), flush=True)
                await asyncio.to_thread(sys.stdin.read)

    asyncio.run(main())
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    with _pg.fresh_database() as url:
        yield url


class SkewedWorker:
    """A worker process whose machine's clock is ``skew`` seconds off."""

    def __init__(self, url: str, skew: float, task_queue: str) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SKEWED_WORKER), url, str(skew), task_queue],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )

    async def ready(self) -> float:
        """Wait until it serves; how far its "now" is from the true time (seconds)."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        if not line.startswith("READY"):
            raise AssertionError(f"the worker did not start: {line!r} {self.stop()}")
        return float(line.split()[1])

    def stop(self) -> str:
        """Stop it (if it still runs); everything it logged."""
        if self.proc.poll() is None:
            self.proc.kill()
        _, err = self.proc.communicate(timeout=30)  # closes its pipes
        return err


async def test_a_worker_whose_clock_is_an_hour_ahead_writes_the_servers_time(
    pg_url: str, tmp_path: Path
) -> None:
    tq = f"ahead-{uuid.uuid4().hex[:6]}"
    worker = SkewedWorker(pg_url, HOUR, tq)
    try:
        assert abs(await worker.ready()) < 1.0  # its store reads the server's time
        async with await Client.connect(pg_url) as client:
            before = time.time()
            started, fired = await client.execute_workflow(Stamp.run, id="stamp", task_queue=tq)
            after = time.time()
        # decided and fired there: workflow time is the server's, not that machine's
        assert before - 1.0 <= started <= fired <= after + 1.0
        assert fired - started >= 0.2
    finally:
        log = worker.stop()
    assert "this machine's clock is 3600.0 s ahead of that of PostgreSQL" in log
    assert "fix this machine's clock (NTP)" in log


async def test_a_worker_whose_clock_is_an_hour_ahead_leaves_other_workers_leases_alone(
    pg_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    ledger.touch()
    tq = f"lease-{uuid.uuid4().hex[:6]}"
    _HERE.update(started=asyncio.Event(), release=asyncio.Event())
    try:
        async with (
            await Client.connect(pg_url) as client,
            Worker(
                client,
                task_queue=tq,
                workflows=[Holding, Quick, Stamp],
                activities=[hold, quick],
                max_concurrent_activities=1,  # busy with `hold`: `quick` goes elsewhere
            ),
        ):
            holding = await client.start_workflow(
                Holding.run, str(ledger), id="holding", task_queue=tq
            )
            await asyncio.wait_for(_HERE["started"].wait(), 30)
            # Its lease runs for 10 minutes. Were times this machine's, the one an hour
            # ahead would see it as expired: time the attempt out, or claim it again.
            ahead = SkewedWorker(pg_url, HOUR, tq)
            try:
                await ahead.ready()
                # this worker is full, so the other one ran `quick`: it has been polling
                # (and its maintenance pass, which times leases out, ran at its start)
                pid = await client.execute_workflow(
                    Quick.run, str(ledger), id="quick", task_queue=tq
                )
                assert pid == ahead.proc.pid
                _HERE["release"].set()
                assert await holding.result(timeout=30) == os.getpid()
            finally:
                ahead.stop()
    finally:
        _HERE.clear()
    runs = ledger.read_text().split("\n")
    assert runs.count(f"hold {os.getpid()}") == 1
    assert [r for r in runs if r.startswith("hold")] == [f"hold {os.getpid()}"]


class Moved:
    """Stands in for one of ``_pg_clock``'s clocks, read ``shift`` seconds off."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, shift: float = 0.0) -> None:
        self.shift = shift
        real = getattr(_pg_clock, name)
        monkeypatch.setattr(_pg_clock, name, lambda: real() + self.shift)


async def _until(ok: Any, what: str) -> None:
    """Wait (30 s at most) until ``ok()``, which the store's next reading brings about."""
    deadline = time.monotonic() + 30
    while not ok():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def _right(store: PostgresStore) -> bool:
    return abs(store.clock.now() - time.time()) < 0.5  # this machine's clock is right


@pytest.mark.parametrize(("offset", "says"), [(5.0, "5.0 s ahead of"), (-3.0, "3.0 s behind")])
async def test_a_machine_whose_clock_is_off_the_servers_is_warned_at_start(
    pg_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    offset: float,
    says: str,
) -> None:
    Moved(monkeypatch, "_wall", offset)
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert _right(store)  # the server's time all the same
    finally:
        await store.close()
    [warning] = [r for r in caplog.records if "clock" in r.getMessage()]
    assert warning.levelname == "WARNING" and says in warning.getMessage()
    assert "NTP" in warning.getMessage()


async def test_a_machine_in_step_with_the_server_is_not_warned(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    await store.close()
    assert not [r for r in caplog.records if "clock" in r.getMessage()]


async def test_setting_the_machines_clock_while_running_does_not_move_the_time(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wall = Moved(monkeypatch, "_wall", -HOUR)  # an hour behind: warned at start
    monkeypatch.setattr(_pg_clock, "CLOCK_SYNC", 0.05)
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert _right(store)
        wall.shift = 0.0  # someone sets it right while the worker runs
        assert _right(store)  # at once: no lease, timer or deadline sees a jump
        said = "this machine's clock was set 3600.0 s forward; Mainspring keeps time"
        await _until(lambda: said in caplog.text, "the next reading never noticed")
        assert _right(store)
    finally:
        await store.close()


async def test_the_servers_clock_moving_is_followed_at_the_next_reading(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # moving both of this machine's clocks is, to it, the server's clock moving back
    steady, wall = Moved(monkeypatch, "_steady"), Moved(monkeypatch, "_wall")
    monkeypatch.setattr(_pg_clock, "CLOCK_SYNC", 0.05)
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert _right(store)
        caplog.set_level(logging.WARNING, "mainspring.store")
        steady.shift = wall.shift = HOUR
        await _until(lambda: _right(store), "the store kept the old reading")
    finally:
        await store.close()
    assert "the clock of PostgreSQL at 127.0.0.1:5432/" in caplog.text
    assert "moved 3600.0 s back (a failover to a server whose clock differs?)" in caplog.text


async def test_open_reads_again_until_a_reading_is_usable_and_says_when_none_is(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mainspring.store")
    monkeypatch.setattr(_pg_clock, "FAIR_READING", -1.0)  # no reading is quick enough
    monkeypatch.setattr(_pg_clock, "CLOCK_RETRY", 0.05)
    store = PostgresStore(pg_url)
    await store.open()
    try:
        clock = store.clock
        assert isinstance(clock, _pg_clock.ServerClock)
        # the migration's reading and four more, all before open returned
        # (and perhaps more since, by the timekeeper, while open waited for the listener)
        assert clock.uncertainty is None and clock.unread >= _pg_clock.UNREAD_WARNING
        assert "could not read the clock of PostgreSQL at 127.0.0.1:5432/" in caplog.text
        assert "5 times in a row (the reading took" in caplog.text
        monkeypatch.setattr(_pg_clock, "FAIR_READING", 1.0)
        await _until(lambda: clock.uncertainty is not None, "no later reading was used")
        assert "read the clock of PostgreSQL at 127.0.0.1:5432/" in caplog.text
    finally:
        await store.close()


async def test_a_writer_connecting_anew_reads_the_servers_clock_again_at_once(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    steady, wall = Moved(monkeypatch, "_steady"), Moved(monkeypatch, "_wall")
    monkeypatch.setattr(_pg_clock, "CLOCK_SYNC", HOUR)  # no reading falls due meanwhile
    monkeypatch.setattr(_pg_clock, "CLOCK_RETRY", 0.05)
    store = PostgresStore(pg_url)
    await store.open()
    try:
        clock = store.clock
        assert isinstance(clock, _pg_clock.ServerClock)
        assert clock.readings == 2  # the migration's and open's, through the writer
        # a failover: the connections break, and the server they reach has another clock
        steady.shift = wall.shift = HOUR  # both of this machine's clocks: the server moved
        admin = _pg.admin_url()
        dbname = pg_url.rsplit("/", 1)[1].split("?")[0]
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
        await store.schema_status()  # reconnects
        await _until(lambda: _right(store), "the new connection's server was not read")
        assert clock.readings == 3
    finally:
        await store.close()


async def test_a_sleep_the_steady_clock_missed_is_put_right_within_seconds(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    steady = Moved(monkeypatch, "_steady")
    monkeypatch.setattr(_pg_clock, "CLOCK_SYNC", HOUR)  # no reading falls due meanwhile
    monkeypatch.setattr(_pg_clock, "CLOCK_RETRY", 0.05)
    caplog.set_level(logging.INFO, "mainspring.store")
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert _right(store) and store.clock.readings == 2  # type: ignore[attr-defined]
        steady.shift = -600.0  # the machine slept ten minutes; its steady clock missed them
        assert store.clock.now() < time.time() - 599
        await _until(lambda: _right(store), "the missed sleep was not put right")
    finally:
        await store.close()
    assert "steady clock parted from the clock of PostgreSQL at 127.0.0.1:5432/" in caplog.text
    assert "moved" not in caplog.text  # the server is not blamed


PRUNE_ON_A_MACHINE_AN_HOUR_BEHIND = """
    import datetime, sys, time
    real = time.time
    time.time = lambda: real() - 3600

    class MachineTime(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.fromtimestamp(time.time(), tz)

    datetime.datetime = MachineTime  # this machine's clock, however it is read
    from mainspring.cli import main
    sys.argv = ["mainspring", "db", "prune", "--older-than", "1h", "--dry-run", "--json"]
    main()
"""


async def test_db_prune_reports_the_cutoff_it_used_by_the_servers_clock(pg_url: str) -> None:
    from datetime import datetime

    await (await Client.connect(pg_url)).close()  # a database to prune
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "MAINSPRING_DB": pg_url}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRUNE_ON_A_MACHINE_AN_HOUR_BEHIND)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    cutoff = datetime.fromisoformat(json.loads(done.stdout)["closed_before"]).timestamp()
    assert abs(cutoff - (time.time() - HOUR)) < 30  # not two hours ago


async def test_a_clock_of_the_callers_own_is_used_as_it_is(pg_url: str) -> None:
    from tests._clock import ManualClock

    clock = ManualClock()
    clock.t -= HOUR
    store = PostgresStore(pg_url, clock)
    await store.open()
    try:
        assert store.clock is clock
        assert store.clock.now() == clock.t
    finally:
        await store.close()
