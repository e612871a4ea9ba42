"""Preparing a PostgreSQL database: checking the server, creating or migrating the
schema once however many processes start together, and saying exactly what is missing
when the role may not.

Runs on one short-lived connection (``connect``), in a thread, before the store opens.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import psycopg

from ..errors import StoreError
from . import _pg_clock
from ._pg_clock import ServerClock
from ._pg_url import PgSettings, _hosts, _ident, _line
from ._schema import SCHEMA_MARK, compatible_from, existing_version, migrations
from ._store_core import Clock
from .records import SchemaInfo

Conn = psycopg.Connection[Any]

log = logging.getLogger("mainspring.store")

OLDEST_SERVER = 120000  # PostgreSQL 12: the oldest release this code is written for


def schema_version() -> int:
    """The schema version this code writes."""
    return migrations("postgres")[-1][0]


def check_server_version(s: PgSettings, version: int) -> None:
    """Refuse a server older than :data:`OLDEST_SERVER` in one clear line."""
    if version < OLDEST_SERVER:
        major = f"{version // 10000}" + (f".{version // 100 % 100}" if version < 100000 else "")
        raise StoreError(
            f"PostgreSQL at {_hosts(s)}/{s.dbname} is version {major}; Mainspring needs "
            f"PostgreSQL {OLDEST_SERVER // 10000} or newer: upgrade the server"
        )


def migrate(connect: Callable[[], Conn], s: PgSettings, set_meta: str, clock: Clock) -> str:
    """Create or upgrade the schema, once, however many processes start together (under
    an advisory lock); return the name of the database the connection reached.

    Refuses, with one line saying what to do: a server too old, a read-only server
    whose schema is missing or behind, a schema that is not Mainspring's or is newer,
    and a role without the rights it needs (naming them and the SQL that grants them).
    A :class:`ServerClock` takes its first reading of the server's clock here.
    """
    scripts = migrations("postgres")
    latest = scripts[-1][0]
    conn = connect()
    try:
        check_server_version(s, conn.info.server_version)
    except StoreError:
        conn.close()
        raise
    user, db = s.user, s.dbname
    try:
        with conn.transaction():
            before = _pg_clock._steady()
            row = conn.execute(
                "SELECT current_user, current_database(), pg_is_in_recovery(),"
                " current_setting('transaction_read_only'),"
                " extract(epoch FROM clock_timestamp())::float8"
            ).fetchone()
            after, wall = _pg_clock._steady(), _pg_clock._wall()
            read_only = None  # why the server takes no writes, if it takes none
            if row:
                if isinstance(clock, ServerClock):  # the first reading of the server's
                    clock.adopt(float(row[4]), before, after, wall - (after - before) / 2)
                user, db = row[0], row[1]
                if row[2] or row[3] == "on":
                    read_only = "a standby" if row[2] else "default_transaction_read_only"
            if read_only is None:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))",
                    (f"mainspring migrate {s.schema}",),
                )
            if _schema_exists(conn, s.schema) is None:
                if read_only is not None:
                    raise _read_only_refusal(s, db, read_only, "does not exist yet")
                conn.execute(f"CREATE SCHEMA {_ident(s.schema)}")
            conn.execute(f"SET LOCAL search_path TO {_ident(s.schema)}")
            tables = _tables(conn, s.schema)
            if not _usable(conn, s.schema):  # its tables would look missing
                why = f"permission denied for schema {s.schema}"
                raise _privilege_error(conn, s, str(user), str(db), why)
            current = _check_existing(conn, s, tables, latest) if tables else 0
            if read_only is not None and current < latest:
                # reading a current schema on a replica is fine; migrating is not
                state = f"is at version {current}, this code needs {latest}"
                raise _read_only_refusal(s, db, read_only, state)
            for version, _name, script in scripts:
                if version > current:
                    conn.execute(script)
                    for key, value in (
                        ("schema", SCHEMA_MARK),
                        ("version", str(version)),
                        ("compatible", str(compatible_from(scripts, version))),
                    ):
                        conn.execute(set_meta, {"key": key, "value": value})
            lacking = _lacking(conn, s.schema, _own_tables(scripts), read_only is not None)
            if lacking:  # else the first step that needs it fails, at run time
                raise _privilege_error(conn, s, str(user), str(db), lacking)
        return str(db)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _privilege_error(conn, s, str(user), str(db), _line(exc)) from exc
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot prepare the Mainspring schema {s.schema!r} on "
            f"{_hosts(s)}/{s.dbname}: {_line(exc)}"
        ) from exc
    finally:
        conn.close()


def inspect(connect: Callable[[], Conn], s: PgSettings) -> SchemaInfo:
    """The schema's version, in a read-only transaction: nothing is created or changed."""
    latest = schema_version()
    conn = connect()
    try:
        check_server_version(s, conn.info.server_version)
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            if _schema_exists(conn, s.schema) is None:
                return SchemaInfo(current=0, latest=latest, exists=False)
            conn.execute(f"SET LOCAL search_path TO {_ident(s.schema)}")
            tables = _tables(conn, s.schema)
            if tables and not _usable(conn, s.schema):
                raise StoreError(
                    f"role {s.user!r} may not read schema {s.schema!r} (it lacks USAGE on "
                    f"it); as the database owner run: GRANT USAGE ON SCHEMA "
                    f"{_ident(s.schema)} TO {_ident(s.user)};"
                )
            current = _check_existing(conn, s, tables, latest) if tables else 0
            return SchemaInfo(current=current, latest=latest, exists=True)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _privilege_error(conn, s, s.user, s.dbname, _line(exc)) from exc
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot read the Mainspring schema {s.schema!r} on "
            f"{_hosts(s)}/{s.dbname}: {_line(exc)}"
        ) from exc
    finally:
        conn.close()


def _privilege_error(conn: Conn, s: PgSettings, user: str, db: str, why: str) -> StoreError:
    """What the role lacks (``why``: the server's words), and the SQL that grants it,
    asked of the server, so that the advice names only what is missing."""
    who, schema = _ident(user), _ident(s.schema)
    try:
        owner, has_create_db, has_usage, has_create = conn.execute(
            "SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = %(s)s"
            "   AND tablename = 'mainspring_meta'),"
            " has_database_privilege(current_database(), 'CREATE'),"
            " (SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = %(s)s),"
            " (SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = %(s)s)",
            {"s": s.schema},
        ).fetchone() or (None, True, True, True)
    except psycopg.Error:  # the link itself failed: give the general advice
        owner, has_create_db, has_usage, has_create = None, True, False, False
    if has_usage is None:  # no such schema: creating it failed
        return StoreError(
            f"role {user!r} lacks CREATE on database {db!r} ({why}); as the database "
            f"owner run: GRANT CREATE ON DATABASE {_ident(db)} TO {who}; (or create the "
            f"schema for it: CREATE SCHEMA {schema} AUTHORIZATION {who};)"
            if not has_create_db
            else f"role {user!r} may not create schema {s.schema!r} ({why})"
        )
    missing = [p for p, has in (("USAGE", has_usage), ("CREATE", has_create)) if not has]
    if owner is not None and "USAGE" in missing:
        missing = ["USAGE"]  # its tables are there: it needs CREATE only to migrate
    if "USAGE" in missing or (missing and owner is None):
        rights = " and ".join(missing)
        return StoreError(
            f"role {user!r} lacks {rights} on schema {s.schema} in database {db!r} ({why}); "
            f"as the database owner run: GRANT {', '.join(missing)} ON SCHEMA {schema} TO {who};"
        )
    # the schema is there and usable: the tables are another role's
    by = f" (they belong to {owner!r})" if owner and owner != user else ""
    return StoreError(
        f"role {user!r} may not use or change the Mainspring tables in schema "
        f"{s.schema}{by} ({why}). To run with it, as their owner run: GRANT SELECT, "
        f"INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {who}; and run "
        "`mainspring db migrate` as their owner whenever a new Mainspring needs a migration"
    )


def _check_existing(conn: Conn, s: PgSettings, tables: set[str], latest: int) -> int:
    """The version of an existing schema; refuse one that is not ours or is newer."""
    return existing_version(
        f"schema {s.schema!r} of {s.dbname!r}",
        tables,
        lambda: dict(conn.execute("SELECT key, value FROM mainspring_meta").fetchall()),
        latest,
        "Use another schema (?schema=… in the URL) or database",
    )


def _read_only_refusal(s: PgSettings, db: str, why: str, state: str) -> StoreError:
    return StoreError(
        f"PostgreSQL at {_hosts(s)}/{db} is read-only ({why}) and its Mainspring schema "
        f"{s.schema!r} {state}: point the URL at the primary (with a list of hosts, add "
        "target_session_attrs=read-write)"
    )


_CREATE_TABLE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.IGNORECASE)


def _own_tables(scripts: list[tuple[int, str, str]]) -> list[str]:
    """The tables Mainspring's migration scripts create."""
    return sorted({t for _v, _n, sql in scripts for t in _CREATE_TABLE.findall(sql)})


def _lacking(conn: Conn, schema: str, tables: list[str], read_only: bool) -> str | None:
    """What the role lacks on Mainspring's ``tables`` in ``schema``, in the server's
    words (None: nothing): SELECT, INSERT, UPDATE and DELETE on each, or SELECT alone
    on a read-only session, or for a role that may only read (no INSERT, UPDATE or
    DELETE on any of them: a dashboard's, say; what it tries to write is refused, with
    the GRANT to run)."""
    rows = conn.execute(
        "SELECT c.relname, p.privilege FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p(privilege) "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname = ANY(%s) "
        "AND NOT has_table_privilege(c.oid, p.privilege) ORDER BY 1, 2",
        (schema, tables),
    ).fetchall()
    writes = {(t, p) for t, p in rows if p != "SELECT"}
    reader = len(writes) == 3 * len(tables)
    if read_only or reader:
        rows = [(t, p) for t, p in rows if p == "SELECT"]
    if not rows:
        return None
    shown = ", ".join(f"{privilege} on {table}" for table, privilege in rows[:3])
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    return f"it lacks {shown}{more}"


def _usable(conn: Conn, schema: str) -> bool:
    row = conn.execute("SELECT has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone()
    return bool(row and row[0])


def _schema_exists(conn: Conn, schema: str) -> tuple[Any, ...] | None:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()


def _tables(conn: Conn, schema: str) -> set[str]:
    """The names of the tables (and table-like relations) in ``schema``."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        (schema,),
    )
    return {r[0] for r in rows}
