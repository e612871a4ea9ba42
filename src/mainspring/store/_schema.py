"""What both stores check before they touch a database: whose it is, which version."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from ..errors import NotAMainspringDatabaseError, SchemaVersionError, StoreError

SCHEMA_MARK = "mainspring"  # the value of the "schema" key in mainspring_meta


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, file name, SQL)`` of the dialect's migration scripts, in order."""
    folder = resources.files("mainspring.store") / "migrations" / dialect
    found = [
        (int(entry.name[:4]), entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql") and entry.name[:4].isdigit()
    ]
    return sorted(found)


def existing_version(
    where: str,
    tables: set[str],
    read_meta: Callable[[], dict[str, str]],
    latest: int,
    instead: str,
) -> int:
    """The schema version of the database ``where`` holding ``tables`` (0 if none).

    Raises :class:`NotAMainspringDatabaseError` if the tables are not Mainspring's
    (``instead`` says what to point at instead), :class:`SchemaVersionError` if the
    version is newer than ``latest``, and :class:`StoreError` if the recorded version
    is not a whole number (a damaged database); in each case nothing has been changed.
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
        raise SchemaVersionError(
            f"{where} has schema version {current}, newer than this Mainspring's "
            f"{latest}; upgrade Mainspring (pip install -U mainspring) to open it. "
            "Nothing was changed"
        )
    return current
