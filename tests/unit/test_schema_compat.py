"""Which code may run on a database, from the migration scripts that made it."""

from __future__ import annotations

from mainspring.store._schema import compatible_from, migrations


def test_a_script_without_the_line_needs_code_of_its_own_version() -> None:
    scripts = [(1, "a", "CREATE TABLE t (x int);"), (2, "b", "ALTER TABLE t ADD y int;")]
    assert compatible_from(scripts, 1) == 1
    assert compatible_from(scripts, 2) == 2


def test_compatible_scripts_keep_the_oldest_code_that_every_applied_script_allows() -> None:
    scripts = [
        (1, "a", "CREATE TABLE t (x int);"),
        (2, "b", "-- an index\n-- compatible: 1\nCREATE INDEX i ON t (x);"),
        (3, "c", "ALTER TABLE t ADD y int NOT NULL;"),  # breaks code of version 2
        (4, "d", "-- compatible: 3\nCREATE INDEX j ON t (y);"),
        (5, "e", "-- compatible: 9\nSELECT 1;"),  # no script can vouch for later code
    ]
    assert [compatible_from(scripts, v) for v in (1, 2, 3, 4, 5)] == [1, 1, 3, 3, 5]


def test_the_line_must_stand_alone() -> None:
    scripts = [(1, "a", "SELECT 1;"), (2, "b", "SELECT 1; -- compatible: 1\n--compatible: 1")]
    assert compatible_from(scripts, 2) == 2


def test_both_stores_say_the_same_of_their_own_scripts() -> None:
    pg, lite = migrations("postgres"), migrations("sqlite")
    assert [v for v, _, _ in pg] == [v for v, _, _ in lite]
    assert [compatible_from(pg, v) for v, _, _ in pg] == [
        compatible_from(lite, v) for v, _, _ in lite
    ]
