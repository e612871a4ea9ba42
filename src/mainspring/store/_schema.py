"""What both stores check before they touch a database: whose it is, which version."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from importlib import resources

from ..errors import NotAMainspringDatabaseError, SchemaVersionError, StoreError

SCHEMA_MARK = "mainspring"  # the value of the "schema" key in mainspring_meta

log = logging.getLogger("mainspring.store")

# How often (seconds) a running process reads the schema's version, to find a database
# migrated past it (see :func:`outgrown`): on PostgreSQL with the server's clock (its
# CLOCK_SYNC) unless the process keeps a clock of its own; on SQLite also whenever the
# file's schema changes.
SCHEMA_WATCH = 60.0

# A migration script whose change code of an earlier schema version can still run on
# (an index; a column or table that earlier code neither reads, nor must write, nor must
# clean up when it prunes) says so in a line "-- compatible: N": code of version N or newer may
# then use a database this script has upgraded. Without the line, only code of the
# script's own version or newer may.
_COMPATIBLE = re.compile(r"^-- compatible: (\d+)[ \t]*$", re.MULTILINE)


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, file name, SQL)`` of the dialect's migration scripts, in order."""
    folder = resources.files("mainspring.store") / "migrations" / dialect
    found = [
        (int(entry.name[:4]), entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql") and entry.name[:4].isdigit()
    ]
    return sorted(found)


def compatible_from(scripts: list[tuple[int, str, str]], version: int) -> int:
    """The oldest schema version whose code may run on a database that ``scripts`` (as
    :func:`migrations` returns them) brought to ``version``: the most any applied
    script requires (see ``_COMPATIBLE``)."""
    oldest = 0
    for v, _name, sql in scripts:
        if v > version:
            break
        said = _COMPATIBLE.search(sql)
        oldest = max(oldest, min(int(said.group(1)), v) if said else v)
    return oldest


def oldest_code(meta: dict[str, str], current: int) -> int:
    """The oldest code's schema version that may run on a database at ``current`` whose
    ``mainspring_meta`` holds ``meta``: its "compatible" key, else (missing or not a
    whole number) ``current`` itself."""
    said = str(meta.get("compatible", ""))
    return int(said) if said.isascii() and said.isdigit() else current


def outgrown(meta: dict[str, str], latest: int) -> str | None:
    """Why code of schema version ``latest`` may no longer run on a database it opened,
    now that its ``mainspring_meta`` holds ``meta`` (None: it still may). For a process
    that finds the database migrated past it while it runs."""
    recorded = str(meta.get("version", ""))
    if not (recorded.isascii() and recorded.isdigit()) or int(recorded) <= latest:
        return None
    current = int(recorded)
    needs = oldest_code(meta, current)
    if needs <= latest:
        return None
    return (
        f"the database was migrated to schema version {current} while this process ran, "
        f"and this Mainspring (schema version {latest}) cannot run on it (it needs a "
        f"Mainspring of schema version {needs} or newer): upgrade Mainspring here and "
        "start again. From now on this process writes nothing"
    )


def existing_version(
    where: str,
    tables: set[str],
    read_meta: Callable[[], dict[str, str]],
    latest: int,
    instead: str,
) -> int:
    """The schema version of the database ``where`` holding ``tables`` (0 if none).

    A version newer than ``latest`` is returned (with a warning in the log) if the
    migrations that made it recorded that code of ``latest`` may still run on it (the
    "compatible" key): during a rolling upgrade, workers of the previous release go on
    while the new release's start one by one.

    Raises :class:`NotAMainspringDatabaseError` if the tables are not Mainspring's
    (``instead`` says what to point at instead), :class:`SchemaVersionError` if the
    version is newer than ``latest`` and not compatible with it, and
    :class:`StoreError` if the recorded version is not a whole number (a damaged
    database); in each case nothing has been changed.
    """
    if not tables:
        return 0
    if "mainspring_meta" not in tables and "mainspring_runs" in tables:
        raise StoreError(
            f"{where} holds Mainspring's tables but not mainspring_meta, which records "
            "the schema's version: the database is damaged; restore it from a backup. "
            "Nothing was changed"
        )
    if "mainspring_meta" not in tables:
        raise NotAMainspringDatabaseError(
            f"{where} holds tables that are not Mainspring's "
            f"({', '.join(sorted(tables)[:5])}); refusing to touch it. {instead}"
        )
    meta = read_meta()
    if meta.get("schema") != SCHEMA_MARK:
        raise NotAMainspringDatabaseError(f"{where} is not Mainspring's (no schema mark)")
    recorded = str(meta.get("version", "0"))
    if not (recorded.isascii() and recorded.isdigit()):
        raise StoreError(
            f"{where} records schema version {recorded[:40]!r} in mainspring_meta, "
            "which is not a whole number: the database is damaged; restore it from a "
            "backup, or set the version right. Nothing was changed"
        )
    current = int(recorded)
    if current > latest:
        needs = oldest_code(meta, current)
        if needs <= latest:
            log.warning(
                "%s has schema version %d, newer than this Mainspring's %d, and was made "
                "to work with it; running on it, but upgrade Mainspring "
                "(pip install -U mainspring) on this machine too",
                where,
                current,
                latest,
            )
            return current
        needed = f" (it needs a Mainspring of schema version {needs} or newer)"
        raise SchemaVersionError(
            f"{where} has schema version {current}, newer than this Mainspring's {latest}"
            f"{needed if needs < current else ''}; upgrade Mainspring "
            "(pip install -U mainspring) to open it. Nothing was changed"
        )
    return current
