"""The SQLite URL: the one parameter it takes, given once, with a value."""

from __future__ import annotations

import pytest

from mainspring.errors import StoreError
from mainspring.store.sqlite import parse_sqlite_url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:///x.db?synchronus=normal", "unknown parameter 'synchronus' in the SQLite URL"),
        ("sqlite:///x.db?synchronous=normal&synchronous=off", "synchronous is given twice"),
        ("sqlite:///x.db?synchronous=", "synchronous is empty in the SQLite URL"),
        ("sqlite:///x.db?synchronous", "synchronous is empty in the SQLite URL"),
    ],
)
def test_a_parameter_misspelt_repeated_or_empty_is_refused(url: str, says: str) -> None:
    # each of these once opened the file with synchronous=FULL (or the last value given)
    with pytest.raises(StoreError, match=says):
        parse_sqlite_url(url)


def test_the_parameter_given_once_is_read() -> None:
    assert parse_sqlite_url("sqlite:///x.db?synchronous=normal") == (
        "x.db",
        {"synchronous": "normal"},
    )
    assert parse_sqlite_url("sqlite:////abs/x.db") == ("/abs/x.db", {})
