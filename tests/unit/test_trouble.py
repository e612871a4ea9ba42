"""Worker loops report database trouble in one line, at most every 30 s, and bugs in full."""

from __future__ import annotations

import logging

import pytest

from mainspring import StoreError, _trouble


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_trouble, "_last", {})


def test_database_trouble_is_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("mainspring.test")
    with caplog.at_level(logging.WARNING, logger="mainspring.test"):
        _trouble.report(log, "claiming activities", StoreError("cannot reach PostgreSQL"))
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == "claiming activities failed: cannot reach PostgreSQL; retrying"


def test_the_same_trouble_is_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = logging.getLogger("mainspring.test")
    now = [1000.0]
    monkeypatch.setattr(_trouble.time, "monotonic", lambda: now[0])
    down = StoreError("cannot reach PostgreSQL")
    with caplog.at_level(logging.WARNING, logger="mainspring.test"):
        for what in ("claiming activities", "claiming queries", "the maintenance pass"):
            _trouble.report(log, what, down)
        now[0] += _trouble.REPEAT_EVERY - 1
        _trouble.report(log, "claiming activities", down)
        _trouble.report(log, "claiming activities", StoreError("database 'x' does not exist"))
        now[0] += 2
        _trouble.report(log, "claiming queries", down)
    assert [r.getMessage() for r in caplog.records] == [
        "claiming activities failed: cannot reach PostgreSQL; retrying",
        "claiming activities failed: database 'x' does not exist; retrying",
        "claiming queries failed: cannot reach PostgreSQL; retrying "
        "(3 more like it in the last 30 s)",
    ]


def test_anything_else_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("mainspring.test")
    try:
        raise KeyError("bug")
    except KeyError as exc:
        with caplog.at_level(logging.WARNING, logger="mainspring.test"):
            for _ in range(2):  # never held back
                _trouble.report(log, "a workflow task", exc, "it runs again")
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert record.levelno == logging.ERROR and record.exc_info is not None
        assert record.getMessage() == "a workflow task failed; it runs again"
