"""How PostgreSQL writes are shaped: multi-row INSERTs and fused statements."""

from __future__ import annotations

import pytest

from mainspring.store import _pg_statements
from mainspring.store._pg_statements import fuse, multi_row_inserts, qualified

INSERT_EVENT = "INSERT INTO mainspring_events (run_id, event_id) VALUES (%(run_id)s, %(id)s)"
UPDATE_RUN = "UPDATE mainspring_runs SET next_event_id = %(n)s WHERE run_id = %(run_id)s"
INSERT_ACTIVITY = "INSERT INTO mainspring_activities (run_id, seq) VALUES (%(run_id)s, %(seq)s)"


def test_writes_to_different_tables_become_one_statement_with_parameters_in_order() -> None:
    out = fuse(
        [
            (INSERT_EVENT, {"run_id": "r", "id": 7}),
            (UPDATE_RUN, {"run_id": "r", "n": 8}),
            (INSERT_ACTIVITY, {"seq": 3, "run_id": "r"}),
        ]
    )
    # PostgreSQL runs the main statement, then the WITH parts last to first: declared
    # in reverse, the parts run (and take their locks) in the order they were written
    assert out == [
        (
            "WITH w0 AS (INSERT INTO mainspring_activities (run_id, seq) VALUES (%s, %s)), "
            "w1 AS (UPDATE mainspring_runs SET next_event_id = %s WHERE run_id = %s) "
            "INSERT INTO mainspring_events (run_id, event_id) VALUES (%s, %s)",
            ["r", 3, 8, "r", "r", 7],
        )
    ]


def test_writes_to_one_table_stay_separate_and_in_order() -> None:
    # the parts of one statement do not see each other's changes: a second write to a
    # table must see the first, so it starts the next statement
    out = fuse(
        [
            (INSERT_EVENT, {"run_id": "r", "id": 1}),
            (UPDATE_RUN, {"run_id": "r", "n": 2}),
            ("DELETE FROM mainspring_events WHERE run_id = %(run_id)s", {"run_id": "r"}),
        ]
    )
    assert [sql.split(" ", 2)[:2] for sql, _ in out] == [["WITH", "w0"], ["DELETE", "FROM"]]
    assert out[0][1] == [2, "r", "r", 1] and out[1][1] == ["r"]


def test_a_write_naming_another_parts_table_is_not_fused() -> None:
    reads_activities = (
        "UPDATE mainspring_runs SET next_event_id = 1 WHERE run_id IN "
        "(SELECT run_id FROM mainspring_activities WHERE seq = %(seq)s)"
    )
    out = fuse([(INSERT_ACTIVITY, {"run_id": "r", "seq": 1}), (reads_activities, {"seq": 1})])
    assert len(out) == 2


def test_statements_that_return_rows_or_are_not_writes_go_out_as_they_came() -> None:
    returning = "DELETE FROM mainspring_timers WHERE run_id = %(run_id)s RETURNING seq"
    select = "SELECT pg_notify(%(channel)s, %(payload)s)"
    held = [
        (INSERT_EVENT, {"run_id": "r", "id": 1}),
        (returning, {"run_id": "r"}),
        (select, {"channel": "c", "payload": "p"}),
        (UPDATE_RUN, {"run_id": "r", "n": 2}),
    ]
    out = fuse(held)
    assert out[1] == held[1] and out[2] == held[2]
    assert out[0][0].startswith("INSERT") and out[3][0].startswith("UPDATE")


def test_fused_statements_stay_under_the_parameter_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pg_statements, "FUSE_PARAMS", 3)
    out = fuse(
        [
            (INSERT_EVENT, {"run_id": "r", "id": 1}),
            (UPDATE_RUN, {"run_id": "r", "n": 2}),
            (INSERT_ACTIVITY, {"run_id": "r", "seq": 3}),
        ]
    )
    assert [len(params) for _, params in out] == [2, 2, 2]


def test_multi_row_inserts_chunk_and_fuse_with_other_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pg_statements, "MULTI_ROW", 2)
    rows = [{"run_id": "r", "id": i} for i in range(3)]
    chunks = multi_row_inserts(INSERT_EVENT, rows)
    assert [params for _, params in chunks] == [["r", 0, "r", 1], ["r", 2]]
    assert chunks[0][0].endswith("VALUES (%s, %s), (%s, %s)")
    assert multi_row_inserts(INSERT_EVENT, rows[:1]) == [(INSERT_EVENT, rows[0])]
    out = fuse([*chunks, (UPDATE_RUN, {"run_id": "r", "n": 4})])
    # the second chunk writes the same table as the first: a statement of its own,
    # which the run's update then joins
    assert [params for _, params in out] == [["r", 0, "r", 1], [4, "r", "r", 2]]


def test_every_table_is_named_with_its_schema() -> None:
    queries = {"q": "SELECT 1 FROM mainspring_runs r JOIN mainspring_events e USING (run_id)"}
    assert qualified(queries, "mainspring") == {
        "q": "SELECT 1 FROM mainspring.mainspring_runs r JOIN mainspring.mainspring_events e "
        "USING (run_id)"
    }
    assert qualified(queries, '"Agents"')["q"].startswith('SELECT 1 FROM "Agents".mainspring_runs')


def test_a_schema_named_like_a_table_does_not_stop_fusion() -> None:
    sql = qualified({"e": INSERT_EVENT, "r": UPDATE_RUN}, "mainspring_prod")
    out = fuse([(sql["e"], {"run_id": "r", "id": 1}), (sql["r"], {"run_id": "r", "n": 2})])
    assert len(out) == 1
    assert out[0][0].startswith("WITH w0 AS (UPDATE mainspring_prod.mainspring_runs ")


def _step(run_id: str, seq: int = 1, fence: int = 1) -> list[tuple[str, dict[str, object]]]:
    return [
        ("take_activity", {"run_id": run_id, "seq": seq, "fence": fence}),
        ("run_by_id_for_update", {"run_id": run_id}),
    ]


def test_the_reads_of_leading_steps_of_distinct_runs_become_one_statement() -> None:
    from mainspring.store._pg_statements import batch_read

    other = [("get_meta", {"key": "k"})]
    found = batch_read([_step("a"), _step("b", 2, 3), _step("c"), other, _step("d")])
    assert found == (
        3,
        "take_activities_with_runs",
        {"run_ids": ["a", "b", "c"], "seqs": [1, 2, 1], "fences": [1, 3, 1]},
    )
    # it ends where run ids stop increasing: the statement locks runs in id order, once
    assert batch_read([_step("a"), _step("c"), _step("b")])[0] == 2  # type: ignore[index]
    assert batch_read([_step("a"), _step("a")]) is None  # one step alone gains nothing
    assert batch_read([other, _step("a"), _step("b")]) is None  # only a leading run
    mixed = [
        ("take_activity", {"run_id": "a", "seq": 1, "fence": 1}),
        ("run_by_id_for_update", {"run_id": "b"}),
    ]
    assert batch_read([mixed, _step("c")]) is None  # each step reads its own run


def test_the_statements_rows_go_back_to_each_step() -> None:
    from mainspring.store._pg_statements import split_batch_read

    run = ("r1", "wf")  # the run's columns (abridged), then taken?, attempt, cancel
    rows = [(*run, True, 2, 0), ("r3", "wf", False, None, None)]
    assert split_batch_read(rows, ["r1", "r2", "r3"]) == [
        [[(2, 0)], [run]],
        [[], []],  # no such run
        [[], [("r3", "wf")]],  # a stale attempt: nothing taken
    ]
