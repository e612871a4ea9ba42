"""Named SQL queries loaded from ``sql/<dialect>.sql``."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def load_queries(dialect: str) -> dict[str, str]:
    """Return ``{name: sql}`` of the blocks headed ``-- name: NAME`` in the dialect's file."""
    text = (resources.files("mainspring.store") / "sql" / f"{dialect}.sql").read_text("utf-8")
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            if name is not None:
                queries[name] = "\n".join(lines).strip().rstrip(";")
            name = stripped.split(":", 1)[1].strip()
            if name in queries:
                raise ValueError(f"duplicate query name {name!r} in {dialect}.sql")
            lines = []
        elif name is not None and not stripped.startswith("--"):
            lines.append(line)
    if name is not None:
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries
