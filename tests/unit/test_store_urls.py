"""Which store a URL names, and the one line a URL that names none gets."""

from __future__ import annotations

import pytest

from mainspring.errors import StoreError
from mainspring.store import store_from_url


def test_a_libpq_key_value_string_is_refused_not_taken_for_a_file_name() -> None:
    # it once became a SQLite file called "host=db password=secret dbname=agents"
    with pytest.raises(StoreError) as info:
        store_from_url("host=db password=secret dbname=agents")
    msg = str(info.value)
    assert "libpq key=value string" in msg and "postgresql://" in msg
    assert "secret" not in msg and "password=***" in msg


def test_an_unknown_scheme_is_named_without_its_password() -> None:
    with pytest.raises(StoreError, match="unknown database URL 'postgresq://u:\\*\\*\\*@h/db'"):
        store_from_url("postgresq://u:qspw@h/db")


def test_a_path_with_an_equals_sign_is_still_a_file() -> None:
    assert type(store_from_url("sqlite:///runs=1.db")).__name__ == "SQLiteStore"
    assert type(store_from_url("my file=1.db")).__name__ == "SQLiteStore"
