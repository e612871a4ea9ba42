"""PostgreSQL test databases.

``enabled()`` says whether the PostgreSQL half of the suite runs: it does when the server
at ``MAINSPRING_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
answers. With ``MAINSPRING_REQUIRE_PG=1`` an unreachable server fails the run instead of
skipping it. ``fresh_database()`` yields the URL of a new database and drops it afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """The URL of the server's maintenance database that test databases are made from."""
    return os.environ.get("MAINSPRING_TEST_PG") or DEFAULT_URL


@functools.cache
def _probe() -> str | None:
    """``None`` if the server answers, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'mainspring[postgres]')"
    try:
        with psycopg.connect(admin_url(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{_safe(admin_url())} is not reachable ({first})"
    return None


def _safe(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        cred, host = netloc.rsplit("@", 1)
        netloc = cred.split(":", 1)[0] + "@" + host
    return urlunsplit(parts._replace(netloc=netloc))


def enabled() -> bool:
    """Whether the PostgreSQL tests run; raise if ``MAINSPRING_REQUIRE_PG=1`` and it cannot."""
    why = _probe()
    if why is not None and os.environ.get("MAINSPRING_REQUIRE_PG") == "1":
        raise RuntimeError(f"MAINSPRING_REQUIRE_PG=1 but PostgreSQL {why}")
    return why is None


def report_header() -> str:
    """A line for pytest's header saying whether the PostgreSQL half runs."""
    why = _probe()
    if why is None:
        return f"mainspring: PostgreSQL tests RUN against {_safe(admin_url())}"
    return (
        f"mainspring: PostgreSQL tests SKIPPED: {why}; set MAINSPRING_TEST_PG to a "
        "reachable server (and MAINSPRING_REQUIRE_PG=1 to fail instead of skipping)"
    )


def database_url(name: str) -> str:
    """The admin URL with its database replaced by ``name``."""
    return urlunsplit(urlsplit(admin_url())._replace(path="/" + name))


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """Yield the URL of a new, empty database ``ms_test_<random>``; drop it afterwards."""
    import psycopg

    name = f"ms_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pgbouncer_binary() -> str | None:
    """The installed ``pgbouncer`` executable, if any."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


@functools.cache
def pgbouncer_missing() -> str | None:
    """``None`` if the PgBouncer tests can run, else why not; raise instead if
    ``MAINSPRING_REQUIRE_PGBOUNCER=1`` (as in CI)."""
    why = None
    if not enabled():
        why = f"PostgreSQL {_probe()}"
    elif pgbouncer_binary() is None:
        why = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
    elif os.geteuid() == 0:  # PgBouncer refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            why = "running as root, and there is no postgres user to run pgbouncer as"
    if why is not None and os.environ.get("MAINSPRING_REQUIRE_PGBOUNCER") == "1":
        raise RuntimeError(f"MAINSPRING_REQUIRE_PGBOUNCER=1 but {why}")
    return why


def pgbouncer_report() -> str:
    """A line for pytest's header saying whether the PgBouncer tests run."""
    why = pgbouncer_missing()
    if why is None:
        return f"mainspring: PgBouncer tests RUN with {pgbouncer_binary()}"
    return f"mainspring: PgBouncer tests SKIPPED: {why}"
