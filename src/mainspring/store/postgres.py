"""The PostgreSQL store: many workers on many machines share one database.

``postgresql://user:password@host:5432/db?schema=mainspring&pool_size=2`` (the URL's
parameters, PgBouncer and the reasoning about lost commits: ``docs/postgres.md``). The
tables live in their own schema, named per transaction with ``SET LOCAL search_path`` (no
session state). ``pool_size`` writer threads each own one connection, opened on first use
and reopened with backoff, and commit what is queued to them in batches. A batch that
wrote sends one ``NOTIFY``; the listener wakes this process's pollers, which also poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from ..errors import NotAMainspringDatabaseError, SchemaVersionError, StoreError
from ._tx import Tx
from .base import Clock, GroupCommitThread, Store, _Op
from .sqlfile import load_queries

T = TypeVar("T")
Conn = psycopg.Connection[Any]

log = logging.getLogger("mainspring.store")

SCHEMA_MARK = "mainspring"
_OWN_PARAMS = ("schema", "pool_size", "listen", "listen_url", "prepare_threshold", "lock_wait")
# serialization failure, deadlock, unique violation (a concurrent start), lock timeout
_CONFLICTS = frozenset({"40001", "40P01", "23505", "55P03"})
_MAX_CONFLICT_RETRIES = 8
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("mainspring.store") / "migrations" / "postgres"
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def schema_version() -> int:
    """The schema version this code writes."""
    return _migrations()[-1][0]


def _line(exc: BaseException) -> str:
    """The first meaningful line of a driver message, without libpq's prefixes."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first.rsplit(" failed: ", 1)[-1]
    return re.sub(r"^(FATAL|ERROR):\s+", "", first).strip()


def _ident(name: str) -> str:
    return name if _IDENT.match(name) else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, kw_only=True)
class PgSettings:
    """What a ``postgresql://`` URL asks for, split into libpq's part and Mainspring's."""

    conninfo: str
    listen_conninfo: str | None
    schema: str
    pool_size: int
    prepare_threshold: int | None
    lock_wait: float
    host: str
    port: str
    user: str
    dbname: str


def _libpq_url(url: str) -> tuple[str, dict[str, str]]:
    """Return (the URL with Mainspring's parameters removed, those parameters)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # validates the port
    except ValueError as exc:
        raise StoreError(
            f"invalid PostgreSQL URL ({exc}); use postgresql://user:password@host:5432/dbname"
        ) from exc
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in query if k not in _OWN_PARAMS]
    names = {k for k, _ in rest}
    rest += [
        (k, v)
        for k, v in (("connect_timeout", "10"), ("application_name", "mainspring"))
        if k not in names
    ]
    return urlunsplit(
        ("postgresql", parts.netloc, parts.path, urlencode(rest, quote_via=quote), "")
    ), own


def parse_postgres_url(url: str) -> PgSettings:
    """Split and check a ``postgresql://`` URL; raise :class:`StoreError` if it is invalid."""
    conninfo, own = _libpq_url(url)
    try:
        info = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise StoreError(
            f"invalid PostgreSQL URL: {_line(exc)}; use postgresql://user:password@host:5432/dbname"
        ) from exc
    schema = own.get("schema", "mainspring")
    if not _IDENT.match(schema):
        raise StoreError(f"schema={schema!r} in the URL is not a plain lower-case identifier")
    threshold_text = own.get("prepare_threshold", "5").lower()
    wait_text = own.get("lock_wait", "0.25").lower()
    try:
        pool_size = int(own.get("pool_size", "2"))
        threshold = None if threshold_text in ("off", "none") else int(threshold_text)
        lock_wait = 0.0 if wait_text in ("off", "none") else float(wait_text)
        if not 1 <= pool_size <= 64 or lock_wait < 0:
            raise ValueError
    except ValueError:
        raise StoreError(
            "pool_size in the URL must be a whole number from 1 to 64, "
            "prepare_threshold a whole number or off, lock_wait seconds or off"
        ) from None
    listen = own.get("listen", "on").lower() not in ("off", "0", "false", "no")
    listen_conninfo = _libpq_url(own["listen_url"])[0] if "listen_url" in own else conninfo
    user = str(info.get("user") or "the current user")
    return PgSettings(
        conninfo=conninfo,
        listen_conninfo=listen_conninfo if listen else None,
        schema=schema,
        pool_size=pool_size,
        prepare_threshold=threshold,
        lock_wait=lock_wait,
        host=str(info.get("host") or "localhost"),
        port=str(info.get("port") or "5432"),
        user=user,
        dbname=str(info.get("dbname") or user),
    )


def _connect_error(exc: BaseException, s: PgSettings) -> StoreError:
    """Translate a failed connection into one line saying what to do."""
    why = _line(exc)
    low = str(exc).lower()
    where = f"PostgreSQL at {s.host}:{s.port}"
    if "password" in low or "authentication failed" in low:
        return StoreError(
            f"{where} refused user {s.user!r} ({why}); put the right password in "
            "the URL (postgresql://user:password@host/db) or in ~/.pgpass"
        )
    if "database" in low and "does not exist" in low:
        return StoreError(
            f"database {s.dbname!r} does not exist on {where}; create it "
            f"(createdb -h {s.host} -p {s.port} {s.dbname}) or fix the URL"
        )
    if "role" in low and "does not exist" in low:
        return StoreError(
            f"role {s.user!r} does not exist on {where}; create it "
            f"(CREATE ROLE {_ident(s.user)} LOGIN) or fix the user in the URL"
        )
    if "pg_hba.conf" in low:
        return StoreError(
            f"{where} does not accept user {s.user!r} from this host ({why}); "
            "add a pg_hba.conf entry for it"
        )
    if any(w in low for w in ("refused", "resolve", "timeout", "unreachable", "no route")):
        return StoreError(
            f"cannot reach {where} ({why}); check that the server is running "
            "and the host and port in the URL"
        )
    return StoreError(f"cannot connect to {where}: {why}")


class _PgTx:
    """The :class:`Tx` primitives over one psycopg connection; notes whether it wrote.

    With ``pipe`` set (pipeline mode), :meth:`w` and :meth:`xmany` only queue their
    statement: it travels with the next read or the commit, in one round trip.
    """

    __slots__ = ("conn", "pipe", "said", "sql", "topics", "wrote")

    def __init__(self, conn: Conn, sql: dict[str, str], pipe: psycopg.Pipeline | None) -> None:
        self.conn = conn
        self.sql = sql
        self.pipe = pipe
        self.wrote = False  # by the current op
        self.said: list[str] | None = None  # the current op's topics, if it published
        self.topics: set[str] = set()  # to NOTIFY at commit; "" means everyone

    def publish(self, *topics: str) -> None:
        self.said = [*(self.said or ()), *topics]

    def end_op(self) -> None:
        """Account for the op just run: its topics, or everyone if it wrote unsaid."""
        if self.said is not None:
            self.topics.update(self.said)
        elif self.wrote:
            self.topics.add("")
        self.wrote = False
        self.said = None

    def payload(self, token: str) -> str | None:
        """The NOTIFY payload for what the transaction's ops published (None: none)."""
        if not self.topics:
            return None
        if "" in self.topics:
            return token
        text = "\n".join([token, *sorted(self.topics)])
        return text if len(text) < 7000 and text.count("\n") == len(self.topics) else token

    def q(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(self.sql[name], params)
        rows = cur.fetchall()
        if cur.rowcount > 0 and not self.sql[name].startswith("SELECT"):
            self.wrote = True
        return rows

    def qs(self, queries: Any) -> list[list[tuple[Any, ...]]]:
        cursors = [(n, self.conn.execute(self.sql[n], p)) for n, p in queries]
        out = []
        for name, cur in cursors:  # in pipeline mode the first fetch flushes them all
            out.append(cur.fetchall())
            if cur.rowcount > 0 and not self.sql[name].startswith("SELECT"):
                self.wrote = True
        return out

    def x(self, name: str, params: dict[str, Any]) -> int:
        cur = self.conn.execute(self.sql[name], params)
        if self.pipe is not None:
            self.pipe.sync()  # the row count is needed now
        n = cur.rowcount
        if n > 0:
            self.wrote = True
        return n

    def w(self, name: str, params: dict[str, Any]) -> None:
        self.conn.execute(self.sql[name], params)
        self.wrote = True  # perhaps; a needless NOTIFY costs a poll, a missing one a wait

    def xmany(self, name: str, params: Any) -> None:
        rows = list(params)
        if not rows:
            return
        if len(rows) == 1:
            self.conn.execute(self.sql[name], rows[0])
        else:  # one INSERT of many rows: one statement, scalar parameters
            sql, keys = _multi_row(self.sql[name], len(rows))
            self.conn.execute(sql, [r[k] for r in rows for k in keys])
        self.wrote = True


_VALUES = re.compile(r"^(?P<head>INSERT\b.*\bVALUES\s*)\((?P<row>.*)\)\s*;?\s*$", re.S)


@functools.lru_cache(maxsize=64)
def _multi_row(insert: str, n: int) -> tuple[str, tuple[str, ...]]:
    """``INSERT … VALUES (%(a)s, %(b)s)`` for ``n`` rows, positional: (SQL, keys in order)."""
    m = _VALUES.match(insert)
    if m is None:
        raise StoreError(f"not a one-row INSERT … VALUES statement: {insert[:60]!r}")
    keys = tuple(re.findall(r"%\((\w+)\)s", m["row"]))
    row = "(" + re.sub(r"%\(\w+\)s", "%s", m["row"]) + ")"
    return m["head"] + ", ".join([row] * n), keys


class _Lost(Exception):
    """The connection broke; ``ambiguous`` if it broke while committing."""

    def __init__(self, ambiguous: bool) -> None:
        super().__init__()
        self.ambiguous = ambiguous


class _Link:
    """A writer thread's connection: opened on first use, reopened with backoff."""

    def __init__(self, connect: Callable[[], Conn]) -> None:
        self._connect = connect
        self.conn: Conn | None = None
        self._delay = 0.0
        self._next_try = 0.0

    def get(self) -> Conn:
        if self.conn is not None and not (self.conn.closed or self.conn.broken):
            return self.conn
        self.close()
        time.sleep(max(0.0, self._next_try - time.monotonic()))
        try:
            self.conn = self._connect()
        except StoreError:
            self._delay = min(max(self._delay * 2, 0.05), 2.0)
            self._next_try = time.monotonic() + self._delay
            raise
        self._delay = 0.0
        return self.conn

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class PostgresStore(Store):
    """A :class:`Store` on a PostgreSQL database shared by any number of processes."""

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__(url, clock)
        self.settings = parse_postgres_url(url)
        self._sql = load_queries("postgres")
        self._writers: list[GroupCommitThread] = []
        self._load: list[int] = []
        self._listener: asyncio.Task[None] | None = None
        self._lconn: psycopg.AsyncConnection[Any] | None = None
        self._token = uuid.uuid4().hex
        schema = self.settings.schema
        self._channel = f"mainspring_{schema}"
        self._begin = f"BEGIN; SET LOCAL search_path TO {_ident(schema)}"
        wait = self.settings.lock_wait
        self._begin_batch = self._begin + (
            f"; SET LOCAL lock_timeout = {int(wait * 1000)}" if wait else ""
        )
        # the same, one statement each, for pipeline mode
        self._begin_steps = ["BEGIN", f"SET LOCAL search_path TO {_ident(schema)}"]
        self._batch_steps = self._begin_steps + (
            [f"SET LOCAL lock_timeout = {int(wait * 1000)}"] if wait else []
        )
        self._notify_sql = "SELECT pg_notify(%s, %s)"
        self.commits = 0

    # ------------------------------------------------------------------ connection

    def _connect(self, conninfo: str | None = None) -> Conn:
        try:
            return psycopg.connect(
                conninfo or self.settings.conninfo,
                autocommit=True,
                prepare_threshold=self.settings.prepare_threshold,
            )
        except psycopg.Error as exc:
            raise _connect_error(exc, self.settings) from exc

    def _migrate(self) -> None:
        """Create or upgrade the schema, once, however many processes start together."""
        s = self.settings
        migrations = _migrations()
        latest = migrations[-1][0]
        conn = self._connect()
        user, db = s.user, s.dbname
        need = f"USAGE and CREATE on schema {s.schema}"
        grant = f"GRANT USAGE, CREATE ON SCHEMA {_ident(s.schema)} TO {{user}};"
        try:
            with conn.transaction():
                row = conn.execute("SELECT current_user, current_database()").fetchone()
                user, db = row if row else (user, db)
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))",
                    (f"mainspring migrate {s.schema}",),
                )
                if (
                    conn.execute(
                        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (s.schema,)
                    ).fetchone()
                    is None
                ):
                    need = f"CREATE on database {db}"
                    grant = f"GRANT CREATE ON DATABASE {_ident(db)} TO {{user}};"
                    conn.execute(f"CREATE SCHEMA {_ident(s.schema)}")
                    need = f"USAGE and CREATE on schema {s.schema}"
                    grant = f"GRANT USAGE, CREATE ON SCHEMA {_ident(s.schema)} TO {{user}};"
                conn.execute(f"SET LOCAL search_path TO {_ident(s.schema)}")
                tables = {
                    r[0]
                    for r in conn.execute(
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                        "c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', "
                        "'f')",
                        (s.schema,),
                    )
                }
                current = 0
                if tables:
                    current = self._check_existing(conn, tables, latest)
                for version, _name, script in migrations:
                    if version > current:
                        conn.execute(script)
                        for key, value in (("schema", SCHEMA_MARK), ("version", str(version))):
                            conn.execute(self._sql["set_meta"], {"key": key, "value": value})
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"role {user!r} lacks {need} in database {db!r} ({_line(exc)}); as the "
                f"database owner run: {grant.format(user=_ident(user))}"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot prepare the Mainspring schema {s.schema!r} on "
                f"{s.host}:{s.port}/{s.dbname}: {_line(exc)}"
            ) from exc
        finally:
            conn.close()

    def _check_existing(self, conn: Conn, tables: set[str], latest: int) -> int:
        """The version of an existing schema; refuse one that is not ours or is newer."""
        where = f"schema {self.settings.schema!r} of {self.settings.dbname!r}"
        if "mainspring_meta" not in tables:
            raise NotAMainspringDatabaseError(
                f"{where} holds tables that are not Mainspring's "
                f"({', '.join(sorted(tables)[:5])}); refusing to touch it. Use another "
                "schema (?schema=… in the URL) or database"
            )
        meta = dict(conn.execute("SELECT key, value FROM mainspring_meta").fetchall())
        if meta.get("schema") != SCHEMA_MARK:
            raise NotAMainspringDatabaseError(f"{where} is not a Mainspring schema (no mark)")
        current = int(meta.get("version", "0"))
        if current > latest:
            raise SchemaVersionError(
                f"{where} has schema version {current}, newer than this Mainspring's "
                f"{latest}; upgrade Mainspring (pip install -U mainspring) to open it. "
                "Nothing was changed"
            )
        return current

    # ------------------------------------------------------------------ batches

    def _execute(self, link: _Link, batch: list[_Op]) -> None:
        """Run a batch; re-run it if the connection broke before commit; retry conflicts.

        Never raises: each op ends with a result or an error. An op that lost a
        deadlock or a race on a unique key re-runs alone after the others commit.
        """
        # ops lock their runs in one global order (by run id), so concurrent batches
        # rarely deadlock; ops without a key (mostly claims, which skip locked rows and
        # never wait) go last
        groups = [sorted(batch, key=lambda op: (op.key is None, op.key or ""))]
        lost = 0
        tries: dict[int, int] = {}
        while groups:
            ops = groups.pop(0)
            try:
                rerun, conflict = self._transaction(link.get(), ops)
            except _Lost as exc:
                link.close()
                lost += 1
                if exc.ambiguous or lost > 2:
                    _fail(
                        ops,
                        StoreError(
                            "the connection to PostgreSQL was lost"
                            + (
                                " while committing: the change may or may not be saved"
                                if exc.ambiguous
                                else ""
                            )
                            + "; retry (stale retries are no-ops)"
                        ),
                        exc.__cause__,
                    )
                else:
                    log.warning("PostgreSQL connection lost; reconnecting")
                    groups.insert(0, ops)
                continue
            except StoreError as exc:
                _fail(ops, exc, exc.__cause__)
                continue
            if rerun:
                groups.insert(0, rerun)
            if conflict is not None:
                op, err = conflict
                tries[id(op)] = n = tries.get(id(op), 0) + 1
                if n > _MAX_CONFLICT_RETRIES:
                    _fail(
                        [op],
                        StoreError(
                            f"gave up after {n - 1} retries of a conflict with "
                            f"other transactions ({_line(err)}); retry"
                        ),
                        err,
                    )
                else:
                    time.sleep(random.uniform(0, 0.002 * n))
                    groups.append([op])

    def _transaction(
        self, conn: Conn, ops: list[_Op]
    ) -> tuple[list[_Op], tuple[_Op, psycopg.Error] | None]:
        """Run ``ops`` in one transaction and commit: pipelined, or carefully on trouble.

        The pipelined run sends each op's writes with the next read or the commit, so a
        step costs a round trip per read. An error there cannot be pinned on the op
        that caused it, so on any error the transaction rolls back and the batch runs
        again the careful way, statement by statement, where each error is the op's
        own. Returns what :meth:`_careful` returns.
        """
        if self._pipelined(conn, ops):
            return [], None
        return self._careful(conn, ops)

    def _pipelined(self, conn: Conn, ops: list[_Op]) -> bool:
        """Run ``ops`` in pipeline mode and commit; ``False`` (rolled back) on any error."""
        committing = False
        failed = False
        try:
            with conn.pipeline() as pipe:
                tx = _PgTx(conn, self._sql, pipe)
                try:
                    for statement in self._begin_steps if len(ops) == 1 else self._batch_steps:
                        conn.execute(statement)
                    for op in ops:
                        op.result = op.error = None
                        op.result = op.fn(tx)
                        tx.end_op()
                    payload = tx.payload(self._token)
                    if payload is not None and self.settings.listen_conninfo is not None:
                        conn.execute(self._notify_sql, (self._channel, payload))
                    if all(op.lazy for op in ops):  # fenced leases: a crash may lose them
                        conn.execute("SET LOCAL synchronous_commit TO off")
                    committing = True
                    conn.execute("COMMIT")
                    pipe.sync()
                except Exception:
                    if conn.broken or conn.closed:
                        raise
                    failed = True
                    with contextlib.suppress(psycopg.Error):
                        pipe.sync()
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _Lost(committing) from exc
            failed = True
        if failed:
            for op in ops:
                op.result = op.error = None
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            if conn.broken or conn.closed:
                raise _Lost(False)
            return False
        self.commits += 1
        return True

    def _careful(
        self, conn: Conn, ops: list[_Op]
    ) -> tuple[list[_Op], tuple[_Op, psycopg.Error] | None]:
        """Run ``ops`` in one transaction, statement by statement, and commit.

        No savepoint per op (each would cost a round trip): when a writing op raises,
        the transaction rolls back, the op keeps its error (or is returned as a
        conflict to retry), and the other ops are returned to run again. Nothing has
        been delivered yet, so running them again is safe.
        """
        tx = _PgTx(conn, self._sql, None)
        committing = False
        try:
            conn.execute(self._begin if len(ops) == 1 else self._begin_batch)
            for op in ops:
                op.result = op.error = None
                try:
                    op.result = op.fn(tx)
                    tx.end_op()
                except Exception as exc:  # delivered to the caller
                    if conn.broken or conn.closed:
                        raise
                    if op.readonly and not _in_error(conn):
                        op.error = exc  # wrote nothing: nothing to undo
                        tx.end_op()
                        continue
                    conn.execute("ROLLBACK")
                    others = [o for o in ops if o is not op]
                    if isinstance(exc, psycopg.Error) and exc.sqlstate in _CONFLICTS:
                        return others, (op, exc)
                    op.error = _op_error(exc)
                    return others, None
            committing = True
            listening = self.settings.listen_conninfo is not None
            payload = tx.payload(self._token) if listening else None
            if payload is not None:
                conn.execute(self._notify_sql, (self._channel, payload))
            if all(op.lazy for op in ops):
                conn.execute("SET LOCAL synchronous_commit TO off")
            conn.execute("COMMIT")
            self.commits += 1
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _Lost(committing) from exc
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            raise StoreError(f"database error: {_line(exc)}") from exc
        return [], None

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, create or migrate the schema, and start listening for changes."""
        if self._writers:
            return
        await asyncio.to_thread(self._migrate)
        if self.settings.listen_conninfo is not None:
            self._lconn = await self._listen_connect()
        self._writers = [
            await asyncio.to_thread(
                GroupCommitThread, f"mainspring-pg-{i}", lambda: _Link(self._connect), self._execute
            )
            for i in range(self.settings.pool_size)
        ]
        self._load = [0] * len(self._writers)
        if self._lconn is not None:
            self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        """Finish queued transactions and disconnect."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._lconn is not None:
            await self._lconn.close()
            self._lconn = None
        writers, self._writers = self._writers, []
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in writers))

    async def schema_status(self) -> tuple[int, int]:
        """``(version in the database, latest version this code knows)``."""

        def read(tx: Tx) -> int:
            rows = tx.q("get_meta", {"key": "version"})
            return int(rows[0][0]) if rows else 0

        return await self._run(read, readonly=True), schema_version()

    async def _run(
        self,
        fn: Callable[[Tx], T],
        *,
        readonly: bool = False,
        key: str | None = None,
        lazy: bool = False,
    ) -> T:
        if not self._writers:
            raise StoreError("the store is closed; use Client.connect() to open it")
        i = self._load.index(min(self._load))  # the least busy writer; idle ones stay shut
        self._load[i] += 1
        try:
            return await self._writers[i].submit(fn, readonly, key, lazy)
        finally:
            self._load[i] -= 1

    # ------------------------------------------------------------------ notifications

    async def _listen_connect(self) -> psycopg.AsyncConnection[Any]:
        assert self.settings.listen_conninfo is not None
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.settings.listen_conninfo, autocommit=True
            )
        except psycopg.Error as exc:
            raise _connect_error(exc, self.settings) from exc
        await conn.execute(f"LISTEN {_ident(self._channel)}")
        return conn

    async def _listen(self) -> None:
        """Wake local pollers on other processes' commits; reconnect when the link drops."""
        delay = 0.1
        while True:
            try:
                if self._lconn is None:
                    self._lconn = await self._listen_connect()
                    self.notify_external()  # notifications were lost while disconnected
                delay = 0.1
                async for n in self._lconn.notifies():
                    token, _, topics = n.payload.partition("\n")
                    if token == self._token:
                        continue  # this process's own commit: its waiters know
                    if topics:
                        self.notify_topics(topics.split("\n"))
                    else:
                        self.notify_external()
            except (psycopg.Error, StoreError) as exc:
                log.warning(
                    "PostgreSQL listener lost its connection (%s); polling meanwhile", _line(exc)
                )
                if self._lconn is not None:
                    await self._lconn.close()
                    self._lconn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _in_error(conn: Conn) -> bool:
    return conn.info.transaction_status == pq.TransactionStatus.INERROR


def _op_error(exc: Exception) -> Exception:
    if not isinstance(exc, psycopg.Error):
        return exc
    err = StoreError(f"database error: {_line(exc)}")
    err.__cause__ = exc
    return err


def _fail(ops: list[_Op], err: StoreError, cause: BaseException | None) -> None:
    if cause is not None and err.__cause__ is None:
        err.__cause__ = cause
    for op in ops:
        op.result, op.error = None, err
