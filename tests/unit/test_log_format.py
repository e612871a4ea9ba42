"""`mainspring worker` logs users' data (ids, failure messages) without letting it steer
the terminal or forge log lines."""

from __future__ import annotations

import logging
import sys

from mainspring._cli_worker import LogFormatter


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    return logging.LogRecord(
        "mainspring.worker", logging.ERROR, __file__, 1, msg, args, sys.exc_info() if exc else None
    )


def test_control_characters_and_newlines_in_a_message_are_escaped() -> None:
    line = LogFormatter("%(levelname)s %(message)s").format(
        _record("workflow task of %s failed: %s", "ev\x1b[2J", "bug\n2026 INFO forged line")
    )
    assert line == "ERROR workflow task of ev\\x1b[2J failed: bug\\n2026 INFO forged line"


def test_a_traceback_still_prints_on_its_own_lines() -> None:
    try:
        raise KeyError("boom")
    except KeyError:
        record = _record("a bug %s", "here", exc=True)
    text = LogFormatter("%(message)s").format(record)
    first, *rest = text.splitlines()
    assert first == "a bug here"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "KeyError: 'boom'"
    assert record.getMessage() == "a bug here"  # other handlers see the record unchanged


def test_a_tracebacks_message_cannot_steer_the_terminal() -> None:
    try:
        raise RuntimeError("bug \x1b[2J\x1b[31mred")
    except RuntimeError:
        record = _record("workflow task failed", exc=True)
    text = LogFormatter("%(message)s").format(record)
    assert "\x1b" not in text
    assert text.splitlines()[-1] == "RuntimeError: bug \\x1b[2J\\x1b[31mred"
