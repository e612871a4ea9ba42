"""How PostgreSQL statements are shaped: multi-row INSERTs and fused writes.

A step's writes cost the driver (psycopg) and the server most per statement executed,
not per row: rows of one table go into one multi-row ``INSERT``, and writes to
different tables into one statement whose parts are data-modifying ``WITH`` clauses.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from ..errors import StoreError

MULTI_ROW = 500  # rows per INSERT; a statement takes at most 65,535 parameters
FUSE_PARAMS = 2000  # parameters per fused statement at most (one chunk of events alone: 2,500)

_UNQUALIFIED = re.compile(r"(?<![\w.\"])mainspring_(?=[a-z])")


def qualified(queries: dict[str, str], schema: str) -> dict[str, str]:
    """``queries`` with every Mainspring table named with its schema (``schema`` quoted
    as needed): no statement depends on ``search_path``, so a transaction needs no
    ``SET`` first and behaves the same on any server connection (PgBouncer)."""
    prefix = schema + "."
    return {
        name: _UNQUALIFIED.sub(lambda _: prefix + "mainspring_", sql)
        for name, sql in queries.items()
    }


_NAMED = re.compile(r"%\((\w+)\)s")
# a table's name, not a schema's ("mainspring_x".mainspring_runs names one table)
_TABLE = re.compile(r"(?<![\w\"])mainspring_\w+(?![\w.])")
_DML = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.I)


@functools.lru_cache(maxsize=256)
def _positional(sql: str) -> tuple[str, tuple[str, ...], frozenset[str] | None]:
    """(``sql`` with ``%s`` placeholders, the names in order, the tables it names).

    The tables are ``None`` for a statement that must not be fused: not a plain
    ``INSERT``/``UPDATE``/``DELETE``, or one that returns rows.
    """
    body = sql.strip().rstrip(";")
    fusable = _DML.match(body) is not None and not re.search(r"\bRETURNING\b", body, re.I)
    tables = frozenset(_TABLE.findall(body)) if fusable else None
    return _NAMED.sub("%s", body), tuple(_NAMED.findall(body)), tables


@functools.lru_cache(maxsize=256)
def _fused_sql(parts: tuple[str, ...]) -> str:
    """One statement running ``parts`` (s0, s1, s2) in their order, as far as locks go.

    PostgreSQL runs the main statement first and then the data-modifying ``WITH`` parts
    from the last declared to the first, so the parts are declared in reverse:
    ``WITH w0 AS (s2), w1 AS (s1) s0``. (Its documentation calls the order
    unpredictable; it matters only for the order in which row locks are taken.)
    """
    head = ", ".join(f"w{i} AS ({p})" for i, p in enumerate(reversed(parts[1:])))
    return f"WITH {head} {parts[0]}"


def fuse(held: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Fuse consecutive writes into one statement where that changes nothing.

    The parts of one statement all see the database as it was before it, so only
    writes that touch disjoint sets of tables (and name no table another part writes)
    are fused; the rest go out as they came, in their order. Each statement then costs
    the driver and the server one execution instead of several.
    """
    out: list[tuple[str, Any]] = []
    parts: list[tuple[str, list[Any]]] = []  # (SQL, its positional parameters)
    count = 0
    seen: set[str] = set()

    def emit() -> None:
        nonlocal count
        if len(parts) == 1:
            out.append(parts[0])
        elif parts:
            # parameters in the order the text names them: s0 comes last (see _fused_sql)
            values = [v for _, args in [*reversed(parts[1:]), parts[0]] for v in args]
            out.append((_fused_sql(tuple(sql for sql, _ in parts)), values))
        parts.clear()
        seen.clear()
        count = 0

    for sql, params in held:
        positional: str
        tables: frozenset[str] | None
        if isinstance(params, dict):
            positional, names, tables = _positional(sql)
            args = [params[n] for n in names]
        else:  # a multi-row INSERT (see _multi_row), already positional
            positional, tables = sql, frozenset(_TABLE.findall(sql))
            args = list(params)
        if tables is None:
            emit()
            out.append((sql, params))
            continue
        if tables & seen or count + len(args) > FUSE_PARAMS:
            emit()
        parts.append((positional, args))
        count += len(args)
        seen.update(tables)
    emit()
    return out


_VALUES = re.compile(r"^(?P<head>INSERT\b.*\bVALUES\s*)\((?P<row>.*)\)\s*;?\s*$", re.S)


def multi_row_inserts(insert: str, rows: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """``rows`` for a one-row ``INSERT``: itself for one row, else one multi-row INSERT
    per :data:`MULTI_ROW` rows with positional parameters (under PostgreSQL's 65,535)."""
    if len(rows) == 1:
        return [(insert, rows[0])]
    out: list[tuple[str, Any]] = []
    for i in range(0, len(rows), MULTI_ROW):
        chunk = rows[i : i + MULTI_ROW]
        sql, keys = _multi_row(insert, len(chunk))
        out.append((sql, [r[k] for r in chunk for k in keys]))
    return out


@functools.lru_cache(maxsize=64)
def _multi_row(insert: str, n: int) -> tuple[str, tuple[str, ...]]:
    """``INSERT … VALUES (%(a)s, %(b)s)`` for ``n`` rows, positional: (SQL, keys in order)."""
    m = _VALUES.match(insert)
    if m is None:
        raise StoreError(f"not a one-row INSERT … VALUES statement: {insert[:60]!r}")
    keys = tuple(_NAMED.findall(m["row"]))
    row = "(" + _NAMED.sub("%s", m["row"]) + ")"
    return m["head"] + ", ".join([row] * n), keys


def _split_taken_run(rows: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """``take_activity_with_run``'s row as ``[take_activity's rows, the run's rows]``."""
    if not rows:  # no run (never started, or pruned when closed): no such activity either
        return [[], []]
    *run, taken, attempt, cancel = rows[0]  # the run's columns, then the taken attempt's
    return [[(attempt, cancel)] if taken else [], [tuple(run)]]


# Reads a step makes together (Tx.qs), as one statement: the sequence of query names,
# the one query that does them all (it takes the union of their parameters), and how to
# split its rows into each one's.
READ_FUSIONS: dict[
    tuple[str, ...],
    tuple[str, Callable[[list[tuple[Any, ...]]], list[list[tuple[Any, ...]]]]],
] = {
    ("take_activity", "run_by_id_for_update"): ("take_activity_with_run", _split_taken_run),
}


# Reads that several operations of one batch make, each of its own run, as one statement
# for them all: the sequence of query names each makes, the statement, how to build its
# parameters from theirs, and how to split its rows into each one's (by run id).
_STEP_READS = ("take_activity", "run_by_id_for_update")


def batch_read(
    reads: list[list[tuple[str, dict[str, Any]]]],
) -> tuple[int, str, dict[str, Any]] | None:
    """One statement for the reads of the first operations of ``reads`` (each operation's
    reads, in the order they lock runs): ``(how many, its name, its parameters)``, or
    ``None`` if fewer than two of the first operations can share one.

    Those are steps (take an activity's attempt, lock its run) of distinct runs in
    increasing run-id order: the statement locks the runs in that order.
    """
    run_ids: list[str] = []
    seqs: list[int] = []
    fences: list[int] = []
    for r in reads:
        if tuple(name for name, _ in r) != _STEP_READS:
            break
        take, run = r[0][1], r[1][1]
        run_id = take["run_id"]
        if run["run_id"] != run_id or (run_ids and run_id <= run_ids[-1]):
            break
        run_ids.append(run_id)
        seqs.append(take["seq"])
        fences.append(take["fence"])
    if len(run_ids) < 2:
        return None
    params = {"run_ids": run_ids, "seqs": seqs, "fences": fences}
    return len(run_ids), "take_activities_with_runs", params


def split_batch_read(
    rows: list[tuple[Any, ...]], run_ids: list[str]
) -> list[list[list[tuple[Any, ...]]]]:
    """``take_activities_with_runs``'s rows as each operation's ``[take_activity's rows,
    the run's rows]``, in the order of ``run_ids``."""
    by_run = {row[0]: row for row in rows}
    out: list[list[list[tuple[Any, ...]]]] = []
    for run_id in run_ids:
        row = by_run.get(run_id)
        out.append(_split_taken_run([row] if row is not None else []))
    return out
