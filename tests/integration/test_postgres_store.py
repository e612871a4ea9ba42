"""What only the PostgreSQL store does: migrations under a lock, SKIP LOCKED claims,
reconnection, batched statements and clear connection errors (its wake-ups across
processes: test_postgres_wakeups.py)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta as td
from pathlib import Path
from typing import Any

import pytest

from mainspring import Client, Worker, WorkflowAlreadyStartedError, activity, workflow
from mainspring.errors import NotAMainspringDatabaseError, SchemaVersionError, StoreError
from mainspring.runtime.commands import ScheduleActivity
from mainspring.store.postgres import PgSettings, PostgresStore, _connect_error, schema_version
from mainspring.store.records import WorkflowTaskCompletion
from tests import _pg

pytestmark = pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with _pg.fresh_database() as url:
        yield url


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(pg_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def admin_sql(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# --------------------------------------------------------------------------- migrations


async def test_migrating_twice_is_idempotent(pg_url: str) -> None:
    for _ in range(2):
        s = PostgresStore(pg_url)
        await s.open()
        assert await s.schema_status() == (schema_version(), schema_version())
        await s.close()
    rows = admin_sql(pg_url, "SELECT key, value FROM mainspring.mainspring_meta ORDER BY key")
    assert rows == [
        ("compatible", "3"),
        ("schema", "mainspring"),
        ("version", str(schema_version())),
    ]


OPEN_AND_CLOSE = """
    import asyncio, sys, time
    from mainspring.store.postgres import PostgresStore
    async def main() -> None:
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        s = PostgresStore(sys.argv[1])
        await s.open()
        await s.close()
    asyncio.run(main())
"""


def test_ten_processes_opening_at_once_migrate_once(pg_url: str) -> None:
    start = str(time.time() + 1.5)
    procs = [run_python(OPEN_AND_CLOSE, pg_url, start) for _ in range(10)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    # the meta rows were written by one transaction, never rewritten
    assert admin_sql(
        pg_url, "SELECT count(DISTINCT xmin::text), count(*) FROM mainspring.mainspring_meta"
    ) == [(1, 3)]


async def test_newer_schema_is_refused(store: PostgresStore, pg_url: str) -> None:
    admin_sql(
        pg_url,
        "UPDATE mainspring.mainspring_meta SET value = '99' WHERE key IN ('version', 'compatible')",
    )
    with pytest.raises(SchemaVersionError, match="newer than this Mainspring"):
        await PostgresStore(pg_url).open()
    assert admin_sql(
        pg_url, "SELECT value FROM mainspring.mainspring_meta WHERE key = 'version'"
    ) == [("99",)]


async def test_foreign_schema_is_refused(pg_url: str) -> None:
    admin_sql(pg_url, "CREATE SCHEMA app; CREATE TABLE app.orders (id int)")
    with pytest.raises(NotAMainspringDatabaseError, match="orders"):
        await PostgresStore(pg_url + "?schema=app").open()
    store = PostgresStore(pg_url + "?schema=app2&pool_size=1")  # a schema of its own is fine
    await store.open()
    await store.close()


# --------------------------------------------------------------------------- errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line_error(url: str) -> str:
    with pytest.raises(StoreError) as info:
        asyncio.run(PostgresStore(url).open())
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_connection_errors_are_one_clear_line(pg_url: str) -> None:
    assert "port 'notaport' in the URL" in _one_line_error("postgresql://u@127.0.0.1:notaport/db")
    assert "invalid PostgreSQL URL" in _one_line_error(pg_url + "?no_such_option=1")
    msg = _one_line_error(f"postgresql://postgres:secret@127.0.0.1:{_free_port()}/x")
    assert "cannot reach PostgreSQL at 127.0.0.1" in msg and "secret" not in msg
    msg = _one_line_error(_pg.database_url("ms_test_missing_db"))
    assert "database 'ms_test_missing_db' does not exist" in msg and "createdb" in msg
    with pytest.raises(StoreError, match="pool_size"):
        PostgresStore(pg_url + "?pool_size=0")


def test_wrong_password_message() -> None:
    s = PgSettings(
        conninfo="",
        listen_conninfo=None,
        schema="mainspring",
        pool_size=1,
        prepare_threshold=5,
        lock_wait=0.25,
        host="db",
        port="5432",
        user="app",
        dbname="app",
    )
    exc = Exception(
        'connection failed: connection to server at "db", port 5432 failed: '
        'FATAL:  password authentication failed for user "app"'
    )
    msg = str(_connect_error(exc, s))
    assert "refused user 'app' (password authentication failed" in msg and "~/.pgpass" in msg


async def test_role_without_create_gets_the_grant(pg_url: str) -> None:
    role = f"ms_test_role_{uuid.uuid4().hex[:8]}"
    db = pg_url.rsplit("/", 1)[1]
    admin_sql(pg_url, f"CREATE ROLE {role} LOGIN")
    try:
        as_role = pg_url.replace("://postgres@", f"://{role}@", 1)
        assert as_role != pg_url
        with pytest.raises(StoreError) as info:
            await PostgresStore(as_role).open()
        assert f'GRANT CREATE ON DATABASE "{db}" TO "{role}";' in str(info.value)
        assert "lacks CREATE on database" in str(info.value)
        admin_sql(pg_url, f"GRANT CREATE ON DATABASE {db} TO {role}")
        s = PostgresStore(as_role + "?pool_size=1")
        await s.open()
        await s.close()
    finally:
        admin_sql(pg_url, f"DROP OWNED BY {role}")
        admin_sql(pg_url, f"DROP ROLE {role}")


async def test_a_role_using_tables_another_role_migrated_is_told_what_to_grant(
    pg_url: str,
) -> None:
    # A DBA migrates as the owner and lets the application's role use the schema: the
    # role lacks rights on the tables, not on the schema, and the advice says so.
    role = f"ms_test_app_{uuid.uuid4().hex[:8]}"
    db = pg_url.rsplit("/", 1)[1]
    owner = PostgresStore(pg_url + "?schema=shared&pool_size=1")
    await owner.open()
    await owner.close()
    admin_sql(pg_url, f"CREATE ROLE {role} LOGIN")
    admin_sql(pg_url, f"GRANT USAGE ON SCHEMA shared TO {role}")
    try:
        as_role = pg_url.replace("://postgres@", f"://{role}@", 1) + "?schema=shared&pool_size=1"
        with pytest.raises(StoreError) as info:
            await PostgresStore(as_role).open()
        msg = str(info.value)
        assert "may not use or change the Mainspring tables in schema shared" in msg, msg
        assert "(they belong to 'postgres')" in msg and "lacks USAGE" not in msg, msg
        grant = (
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "shared" TO "{role}";'
        )
        assert grant in msg, msg
        with pytest.raises(StoreError) as info:  # what reading commands ask first
            await PostgresStore(as_role).inspect_schema()
        assert grant in str(info.value), str(info.value)
        admin_sql(pg_url, grant.replace('"', ""))  # the advice, followed, is enough
        s = PostgresStore(as_role)
        await s.open()
        run_id, started = await s.start_workflow(
            workflow_id="w", workflow_type="T", task_queue="q", input="[]"
        )
        assert started and (await s.describe("w")).run_id == run_id
        await s.close()
        # without USAGE, the schema is what it lacks (and only USAGE: it need not migrate)
        admin_sql(pg_url, f"REVOKE USAGE ON SCHEMA shared FROM {role}")
        with pytest.raises(StoreError) as info:
            await PostgresStore(as_role).open()
        msg = str(info.value)
        assert f'lacks USAGE on schema shared in database "{db}"'.replace('"', "'") in msg, msg
        assert f'GRANT USAGE ON SCHEMA "shared" TO "{role}";' in msg, msg
        with pytest.raises(StoreError, match="may not read schema 'shared'"):  # db status
            await PostgresStore(as_role).inspect_schema()
    finally:
        admin_sql(pg_url, f"DROP OWNED BY {role}")
        admin_sql(pg_url, f"DROP ROLE {role}")


async def test_a_role_short_of_a_right_on_a_table_is_told_at_open_and_while_running(
    pg_url: str,
) -> None:
    # SELECT, INSERT and UPDATE but not DELETE: the worker would start, and its first
    # finished activity would fail to be recorded, again and again
    role = f"ms_test_app_{uuid.uuid4().hex[:8]}"
    owner = PostgresStore(pg_url + "?schema=shared&pool_size=1")
    await owner.open()
    await owner.close()
    admin_sql(pg_url, f"CREATE ROLE {role} LOGIN")
    admin_sql(pg_url, f"GRANT USAGE ON SCHEMA shared TO {role}")
    admin_sql(pg_url, f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA shared TO {role}")
    grant = f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "shared" TO "{role}";'
    try:
        as_role = pg_url.replace("://postgres@", f"://{role}@", 1) + "?schema=shared&pool_size=1"
        with pytest.raises(StoreError) as info:
            await PostgresStore(as_role).open()
        msg = str(info.value)
        assert "(it lacks DELETE on mainspring_activities, DELETE on mainspring_events" in msg
        assert grant in msg, msg
        admin_sql(pg_url, grant.replace('"', ""))
        s = PostgresStore(as_role)
        await s.open()
        try:  # a right taken away while it runs: the error says what to grant
            admin_sql(pg_url, f"REVOKE INSERT ON ALL TABLES IN SCHEMA shared FROM {role}")
            with pytest.raises(StoreError) as info:
                await s.start_workflow(
                    workflow_id="w", workflow_type="T", task_queue="q", input="[]"
                )
            msg = str(info.value)
            assert "permission denied for table mainspring_" in msg, msg
            assert f"role '{role}' lacks rights on Mainspring's tables" in msg, msg
            assert grant in msg, msg
        finally:
            await s.close()
    finally:
        admin_sql(pg_url, f"DROP OWNED BY {role}")
        admin_sql(pg_url, f"DROP ROLE {role}")


async def test_a_role_that_may_only_read_opens_and_is_told_what_to_grant_to_write(
    pg_url: str,
) -> None:
    """A dashboard's role, or one on a replica: SELECT alone is not a mistake."""
    role = f"ms_test_ro_{uuid.uuid4().hex[:8]}"
    owner = PostgresStore(pg_url + "?schema=shared&pool_size=1")
    await owner.open()
    await owner.start_workflow(workflow_id="w", workflow_type="T", task_queue="q", input="[]")
    await owner.close()
    admin_sql(pg_url, f"CREATE ROLE {role} LOGIN")
    admin_sql(pg_url, f"GRANT USAGE ON SCHEMA shared TO {role}")
    admin_sql(pg_url, f"GRANT SELECT ON ALL TABLES IN SCHEMA shared TO {role}")
    # a table of someone else's beside Mainspring's, with a name like theirs
    admin_sql(pg_url, "CREATE TABLE shared.mainspring_legacy (x int)")
    admin_sql(pg_url, f"REVOKE ALL ON shared.mainspring_legacy FROM {role}")
    try:
        as_role = pg_url.replace("://postgres@", f"://{role}@", 1) + "?schema=shared&pool_size=1"
        s = PostgresStore(as_role)
        await s.open()
        try:
            assert [r.workflow_id for r in await s.list_runs()] == ["w"]
            with pytest.raises(StoreError, match="GRANT SELECT, INSERT, UPDATE, DELETE"):
                await s.start_workflow(
                    workflow_id="w2", workflow_type="T", task_queue="q", input="[]"
                )
        finally:
            await s.close()
    finally:
        admin_sql(pg_url, "DROP TABLE shared.mainspring_legacy")
        admin_sql(pg_url, f"DROP OWNED BY {role}")
        admin_sql(pg_url, f"DROP ROLE {role}")


# --------------------------------------------------------------------------- concurrency


async def _schedule_activities(s: PostgresStore, n: int, task_queue: str) -> str:
    run_id, _ = await s.start_workflow(
        workflow_id="fan-out", workflow_type="FanOut", task_queue=task_queue, input="[]"
    )
    [task] = await s.claim_workflow_tasks(task_queue, "w", 1, 60, {})
    cmds = [
        ScheduleActivity(
            seq=i,
            activity_type="work",
            task_queue=task_queue,
            input="[]",
            options={"start_to_close_timeout": 60.0},
        )
        for i in range(1, n + 1)
    ]
    out = await s.complete_workflow_task(
        WorkflowTaskCompletion(
            run_id=run_id,
            fence=task.fence,
            owner="w",
            through=task.history_length,
            time=0.0,
            commands=list(cmds),
        )
    )
    assert out.accepted
    return run_id


CLAIMER = """
    import asyncio, json, sys, time
    from mainspring.store.postgres import PostgresStore
    async def main() -> None:
        s = PostgresStore(sys.argv[1] + "?pool_size=2&listen=off")
        await s.open()
        owner = sys.argv[3]
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        empty = 0
        while empty < 3:
            tasks = await s.claim_activities("claims", owner, 4)
            empty = 0 if tasks else empty + 1
            for t in tasks:
                print(json.dumps([t.seq, await s.complete_activity(t, '"done"')]), flush=True)
            if not tasks:
                await asyncio.sleep(0.05)
        await s.close()
    asyncio.run(main())
"""


async def test_skip_locked_claims_never_hand_out_a_task_twice(
    store: PostgresStore, pg_url: str
) -> None:
    n = 120
    await _schedule_activities(store, n, "claims")
    start = str(time.time() + 1.5)
    procs = [run_python(CLAIMER, pg_url, start, f"p{i}") for i in range(4)]
    claims: Counter[int] = Counter()
    per_process = []
    for p in procs:
        out, err = await asyncio.to_thread(p.communicate, timeout=90)
        assert p.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert all(ok for _, ok in lines)
        claims.update(seq for seq, _ in lines)
        per_process.append(len(lines))
    assert sorted(claims) == list(range(1, n + 1))
    assert set(claims.values()) == {1}, "a task was claimed twice"
    assert sum(1 for c in per_process if c) >= 2, per_process  # the work was shared
    _, events = await store.history("fan-out")
    completed = [e for e in events if e.event_type.value == "ActivityTaskCompleted"]
    assert len(completed) == n


async def test_concurrent_starts_of_one_id_start_one_run(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    await a.open()
    await b.open()
    try:

        async def start(s: PostgresStore) -> str | None:
            try:
                return (
                    await s.start_workflow(
                        workflow_id="once", workflow_type="T", task_queue="q", input="[]"
                    )
                )[0]
            except WorkflowAlreadyStartedError:
                return None

        results = await asyncio.gather(*(start(s) for s in (a, b) * 4))
        assert len([r for r in results if r is not None]) == 1
        assert len(await a.list_runs()) == 1
    finally:
        await a.close()
        await b.close()


async def test_a_deadlock_victim_is_re_run_and_both_succeed(pg_url: str) -> None:
    admin_sql(
        pg_url,
        "CREATE TABLE public.pair (id int PRIMARY KEY); INSERT INTO public.pair VALUES (1), (2)",
    )
    fast = pg_url + "?pool_size=1&options=-c%20deadlock_timeout%3D50ms"  # libpq options pass
    a, b = PostgresStore(fast), PostgresStore(fast)
    await a.open()
    await b.open()
    runs: Counter[str] = Counter()

    def lock(first: int, second: int, name: str) -> Callable[[Any], str]:
        def fn(tx: Any) -> str:
            runs[name] += 1
            lock_sql = "SELECT id FROM public.pair WHERE id = %s FOR UPDATE"
            tx.conn.execute(lock_sql, (first,))
            time.sleep(0.2)
            tx.conn.execute(lock_sql, (second,))
            return name

        return fn

    try:
        got = await asyncio.gather(a._run(lock(1, 2, "a")), b._run(lock(2, 1, "b")))
        assert got == ["a", "b"]
        assert sum(runs.values()) == 3  # one of them lost the deadlock and ran again
    finally:
        await a.close()
        await b.close()


async def test_writers_reconnect_after_the_server_drops_them(
    store: PostgresStore, pg_url: str
) -> None:
    await store.start_workflow(workflow_id="r1", workflow_type="T", task_queue="q", input="[]")
    db = pg_url.rsplit("/", 1)[1]
    killed = admin_sql(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (db,),
    )
    assert killed
    # the batch failed before commit, so it was re-run on a new connection
    await store.start_workflow(workflow_id="r2", workflow_type="T", task_queue="q", input="[]")
    assert {r.workflow_id for r in await store.list_runs()} == {"r1", "r2"}


# --------------------------------------------------------------------------- end to end


@activity.defn
async def shout(text: str) -> str:
    return text.upper() + "\x00!"


@workflow.defn
class NulAgent:
    def __init__(self) -> None:
        self.note: str | None = None

    @workflow.run
    async def run(self, text: str) -> str:
        loud = await workflow.execute_activity(shout, text, start_to_close_timeout=td(seconds=10))
        await workflow.wait_condition(lambda: self.note is not None)
        await workflow.sleep(td(milliseconds=50))
        return f"{loud}|{self.note}"

    @workflow.signal
    def annotate(self, note: str) -> None:
        self.note = note


async def test_workflow_with_nul_characters_completes(pg_url: str) -> None:
    client = await Client.connect(pg_url)
    try:
        async with Worker(
            client,
            task_queue="e2e",
            workflows=[NulAgent],
            activities=[shout],
            graceful_shutdown_timeout=td(milliseconds=200),
        ):
            handle = await client.start_workflow(NulAgent.run, "a\x00b", id="nul", task_queue="e2e")
            await handle.signal(NulAgent.annotate, "n\x00te")
            assert await asyncio.wait_for(handle.result(), 30) == "A\x00B\x00!|n\x00te"
        raw = admin_sql(pg_url, "SELECT input FROM mainspring.mainspring_runs")
        assert raw == [('["a\\u0000b"]',)]  # stored as JSON text, escaped, byte-exact
    finally:
        await client.close()


async def test_a_write_that_fails_in_a_pipelined_batch_fails_only_its_own_operation(
    store: PostgresStore,
) -> None:
    # Writes are pipelined, so the error of a bad one surfaces later, at another
    # operation's read or at the commit; the batch then re-runs statement by statement.
    writer = store._writers[0]

    def good(key: str) -> Callable[[Any], str]:
        def fn(tx: Any) -> str:
            tx.w("set_meta", {"key": key, "value": "v"})
            return tx.q("get_meta", {"key": key})[0][0]  # type: ignore[no-any-return]

        return fn

    def bad(tx: Any) -> None:
        tx.w("set_meta", {"key": None, "value": "v"})  # NOT NULL violation, deferred

    futures = [
        writer.submit(good("g1"), False),
        writer.submit(bad, False),
        writer.submit(good("g2"), False),
        writer.submit(good("g3"), False),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == results[2] == results[3] == "v"
    assert isinstance(results[1], StoreError) and "null" in str(results[1]).lower()
    assert [await store._run(good(k)) for k in ("g1", "g2", "g3")] == ["v"] * 3


@workflow.defn
class Shouts:
    @workflow.run
    async def run(self, n: int) -> list[str]:
        return list(await asyncio.gather(*(shout(f"s{i}") for i in range(n))))


async def test_events_past_one_insert_are_split_into_several(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A statement takes at most 65,535 parameters, so a decision's events go in chunks;
    # here chunks of 2 rows, so that 7 scheduled activities take four INSERTs.
    from mainspring.store import _pg_statements

    monkeypatch.setattr(_pg_statements, "MULTI_ROW", 2)
    client = await Client.connect(pg_url)
    try:
        async with Worker(client, task_queue="chunks", workflows=[Shouts], activities=[shout]):
            result = await client.execute_workflow(Shouts.run, 7, id="chunks", task_queue="chunks")
        assert result == [f"S{i}\x00!" for i in range(7)]
        _, events = await client.store.history("chunks")
        assert [e.event_id for e in events] == list(range(1, len(events) + 1))
        scheduled = [e for e in events if e.event_type.value == "ActivityTaskScheduled"]
        assert [e.attributes["seq"] for e in scheduled] == list(range(1, 8))
    finally:
        await client.close()


async def test_a_stalled_writer_does_not_hold_up_other_operations(
    store: PostgresStore, pg_url: str
) -> None:
    import psycopg

    from mainspring.store.postgres import STALLED

    await store.start_workflow(workflow_id="held", workflow_type="T", task_queue="q", input="[]")
    with psycopg.connect(pg_url) as other:  # another session holds the run's row lock
        other.execute(
            "SELECT 1 FROM mainspring.mainspring_runs WHERE workflow_id = 'held' FOR UPDATE"
        )
        blocked = asyncio.create_task(store.signal("held", None, "go", "[]"))
        first = store._writers[0]
        while first.busy_since is None or time.monotonic() - first.busy_since <= STALLED:
            await asyncio.sleep(0.01)  # until the first writer counts as stalled
        # the next operation goes to another writer instead of queueing behind the lock
        await asyncio.wait_for(
            store.start_workflow(workflow_id="free", workflow_type="T", task_queue="q", input="[]"),
            10,
        )
        assert not blocked.done()
        other.rollback()
    await asyncio.wait_for(blocked, 10)
    _, events = await store.history("held")
    assert events[-1].event_type.value == "WorkflowExecutionSignaled"


@workflow.defn(name="Echo")
class Echo:
    @workflow.run
    async def run(self, text: str) -> str:
        return await shout(text)


async def test_schemas_in_one_database_are_independent_installations(pg_url: str) -> None:
    # Every statement names its schema (none relies on search_path): the same workflow
    # id runs in each, and each installation sees only its own run. Any name the URL
    # takes works: a reserved word (quoted in SQL), the longest (its notification
    # channel, mainspring_<schema>, then has PostgreSQL's longest name, 63 bytes).
    longest = "s" * 52
    results = {}
    for schema in ("mainspring_blue", "user", longest):
        client = await Client.connect(f"{pg_url}?schema={schema}")
        try:
            async with Worker(client, task_queue="echo", workflows=[Echo], activities=[shout]):
                results[schema] = await client.execute_workflow(
                    Echo.run, schema, id="same-id", task_queue="echo"
                )
            assert [r.workflow_id for r in await client.list_workflows()] == ["same-id"]
        finally:
            await client.close()
    assert results == {
        "mainspring_blue": "MAINSPRING_BLUE\x00!",
        "user": "USER\x00!",
        longest: longest.upper() + "\x00!",
    }
    counts = admin_sql(
        pg_url,
        "SELECT table_schema, count(*) FROM information_schema.tables "
        "WHERE table_name LIKE 'mainspring%%' GROUP BY 1 ORDER BY 1",
    )
    # nothing in public or elsewhere
    assert counts == [("mainspring_blue", 7), (longest, 7), ("user", 7)]


def _one_batch(
    store: PostgresStore,
    ops: list[tuple[Callable[[Any], Any], str, Any]],
    return_exceptions: bool = False,
) -> Any:
    """Submit ``ops`` (fn, key, reads) so that one writer takes them as one batch: the
    writer is first held busy by an op that waits until all are queued."""
    import threading

    writer = store._writers[0]
    queued = threading.Event()
    hold = writer.submit(lambda tx: queued.wait(30), False)
    futures = [writer.submit(fn, False, key, False, reads) for fn, key, reads in ops]
    queued.set()
    return asyncio.gather(hold, *futures, return_exceptions=return_exceptions)


async def test_an_error_at_commit_fails_the_batch_and_keeps_none_of_it(
    store: PostgresStore, pg_url: str
) -> None:
    # The pipeline learns COMMIT's outcome only as it closes: an error there must reach
    # every operation of the batch (none of which was saved), never pass for success.
    admin_sql(
        pg_url,
        """
        CREATE FUNCTION mainspring.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
        CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON mainspring.mainspring_meta
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.key = 'refused')
        EXECUTE FUNCTION mainspring.refuse();
        """,
    )

    def put(key: str) -> Callable[[Any], None]:
        return lambda tx: tx.w("set_meta", {"key": key, "value": "v"})

    batch = [(put("c1"), "a", None), (put("refused"), "b", None), (put("c2"), "c", None)]
    _, *results = await _one_batch(store, batch, return_exceptions=True)
    assert all(isinstance(r, StoreError) and "refused at commit" in str(r) for r in results)
    rows = admin_sql(pg_url, "SELECT key FROM mainspring.mainspring_meta WHERE value = 'v'")
    assert rows == []
    await store._run(put("after"))  # the connection is fit for the next batch
    assert admin_sql(pg_url, "SELECT key FROM mainspring.mainspring_meta WHERE value = 'v'") == [
        ("after",)
    ]


async def test_reads_run_ahead_give_each_operation_its_own_rows(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mainspring.store import _pg_batch

    await store._run(
        lambda tx: [tx.w("set_meta", {"key": k, "value": k.upper()}) for k in ("a", "b", "c", "d")]
    )
    ahead: list[list[int]] = []
    real = _pg_batch._PgTx.read_ahead

    def spy(self: Any, ops: list[tuple[int, Any]]) -> None:
        ahead.append([op for op, _ in ops])
        real(self, ops)

    monkeypatch.setattr(_pg_batch._PgTx, "read_ahead", spy)

    def reader(key: str) -> tuple[Callable[[Any], Any], str, Any]:
        reads = [("get_meta", {"key": key})]
        return (lambda tx: tx.qs(reads)[0][0][0]), key, reads

    def writer(key: str) -> tuple[Callable[[Any], Any], str, Any]:  # says no reads
        return (lambda tx: tx.q("get_meta", {"key": key})[0][0]), key, None

    # Runs must still be locked in key order, so only a leading run of ops reads ahead:
    # it ends at the first op that says no reads ("c") or whose run appears twice in
    # the batch (another op's writes could change what it reads).
    _, *results = await _one_batch(store, [reader("a"), reader("b"), writer("c"), reader("d")])
    assert results == ["A", "B", "C", "D"]
    assert [len(batch) for batch in ahead] == [2]  # "a" and "b", in one round trip
    ahead.clear()
    _, *results = await _one_batch(store, [reader("a"), reader("b"), reader("b"), reader("c")])
    assert results == ["A", "B", "B", "C"]
    assert ahead == []  # only "a" leads: one op alone gains nothing


async def test_an_operation_not_starting_with_its_reads_falls_back_safely(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store._run(
        lambda tx: [tx.w("set_meta", {"key": k, "value": k.upper()}) for k in ("a", "b", "c")]
    )

    def honest(key: str) -> tuple[Callable[[Any], Any], str, Any]:
        reads = [("get_meta", {"key": key})]
        return (lambda tx: tx.qs(reads)[0][0][0]), key, reads

    def liar(tx: Any) -> str:  # says it reads "b", writes first, then reads "c"
        tx.w("set_meta", {"key": "c", "value": "C2"})
        return tx.qs([("get_meta", {"key": "c"})])[0][0][0]  # type: ignore[no-any-return]

    # read ahead, "c" would be read before the liar's write to it
    ops = [honest("a"), (liar, "b", [("get_meta", {"key": "b"})]), honest("c")]
    _, *results = await _one_batch(store, ops)
    assert results == ["A", "C2", "C2"]  # the batch ran again without reading ahead
    assert "did not start with the reads run ahead" in caplog.text


def test_fused_writes_run_in_the_order_they_were_written(pg_url: str) -> None:
    # Row locks are taken in the order statements run; fusing must not reorder them.
    # (PostgreSQL runs a statement's WITH parts after its main part, last to first.)
    import psycopg

    from mainspring.store._pg_statements import fuse

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE step")
        names = [f"mainspring_t{i}" for i in range(4)]
        for name in names:
            conn.execute(f"CREATE TABLE {name} (k text, at bigint DEFAULT nextval('step'))")
        held = [(f"INSERT INTO {name} (k) VALUES (%(k)s)", {"k": name}) for name in names]
        [(sql, params)] = fuse(held)
        conn.execute(sql, params)
        order = [conn.execute(f"SELECT k, at FROM {n}").fetchone() for n in names]
    assert [k for k, _ in sorted(order, key=lambda row: row[1])] == names


async def test_the_steps_of_a_batch_read_in_one_statement_each_its_own_rows(
    store: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mainspring.retry import RetryPolicy
    from mainspring.store import _pg_batch, _pg_tx
    from mainspring.store._tx import step_reads

    runs = []
    for wid in ("s1", "s2", "s3"):
        run_id, _ = await store.start_workflow(
            workflow_id=wid, workflow_type="W", task_queue="q", input="[]"
        )
        [wft] = await store.claim_workflow_tasks("q", "w", 1, 60, {})
        schedule = ScheduleActivity(
            seq=1,
            activity_type="a",
            task_queue="q",
            input="[]",
            options={"start_to_close_timeout": 60.0, "retry_policy": RetryPolicy().to_dict()},
        )
        out = await store.complete_workflow_task(
            WorkflowTaskCompletion(
                run_id=run_id,
                fence=wft.fence,
                owner="w",
                through=wft.history_length,
                time=0.0,
                commands=[schedule],
                eager_activity_slots=1,
                eager_seqs=frozenset({1}),
            )
        )
        [task] = out.eager
        runs.append((run_id, task.fence))
    runs.sort()
    together: list[int] = []
    real = _pg_tx.batch_read

    def spy(reads: Any) -> Any:
        found = real(reads)
        together.append(found[0] if found else 0)
        return found

    monkeypatch.setattr(_pg_tx, "batch_read", spy)
    careful: list[object] = []
    real_careful = _pg_batch.Batches._careful

    def no_fallback(self: Any, conn: Any, ops: Any) -> Any:
        careful.append(ops)  # the pipelined run failed: the rows below would not be its own
        return real_careful(self, conn, ops)

    monkeypatch.setattr(_pg_batch.Batches, "_careful", no_fallback)
    stale = runs[1][0]

    def step(run_id: str, fence: int) -> tuple[Callable[[Any], Any], str, Any]:
        reads = step_reads(run_id, 1, fence if run_id != stale else fence + 7)
        return (lambda tx: tx.qs(reads)), run_id, reads

    _, *results = await _one_batch(store, [step(r, f) for r, f in runs])
    assert together == [3]  # the three steps' reads were one statement
    assert careful == []  # ... which worked: the batch did not run again without it
    for (run_id, _), (taken, run_rows) in zip(runs, results, strict=True):
        assert [row[0] for row in run_rows] == [run_id]  # its own run, locked
        assert taken == ([] if run_id == stale else [(1, 0)])  # (attempt, cancel)
    left = admin_sql(pg_url, "SELECT run_id FROM mainspring.mainspring_activities")
    assert left == [(stale,)]  # only the attempts whose fence matched were taken


async def test_connections_keep_alive_unless_the_url_says_otherwise(pg_url: str) -> None:
    """A server that vanished without closing the connection (a NAT or load balancer
    dropped it) is noticed by TCP keepalives within about a minute: Mainspring sets
    them on every connection, and a URL's own settings win."""
    for url, idle in ((pg_url, "30"), (pg_url + "?keepalives_idle=5", "5")):
        s = PostgresStore(url)
        await s.open()
        try:
            assert s._lconn is not None
            dsn = dict(part.split("=", 1) for part in s._lconn.info.dsn.split())
            assert (dsn["keepalives"], dsn["keepalives_idle"]) == ("1", idle)
            assert (dsn["keepalives_interval"], dsn["keepalives_count"]) == ("10", "3")
        finally:
            await s.close()
