"""What a ``postgresql://`` URL becomes: libpq's part passed on as written, Mainspring's
parameters taken out, and a clear error for what libpq could not use."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from mainspring.errors import StoreError
from mainspring.store._pg_url import _connect_error, parse_postgres_url
from mainspring.store._redact import redacted


def libpq(url: str) -> dict[str, object]:
    return conninfo_to_dict(parse_postgres_url(url).conninfo)


def test_a_socket_directory_with_no_host_in_the_authority_stays_a_socket() -> None:
    # the form Cloud SQL's proxy and local servers use: postgresql:///db?host=/dir
    s = parse_postgres_url("postgresql:///agents?host=/cloudsql/p:r:i&user=app&schema=blue")
    info = conninfo_to_dict(s.conninfo)
    assert (info["host"], info["dbname"], info["user"]) == ("/cloudsql/p:r:i", "agents", "app")
    assert "schema" not in info and s.schema == "blue"
    assert (s.host, s.dbname) == ("/cloudsql/p:r:i", "agents")


def test_a_host_list_with_a_port_each_reaches_libpq_whole() -> None:
    s = parse_postgres_url(
        "postgresql://app@db1:5432,db2:5433/agents?target_session_attrs=read-write&pool_size=4"
    )
    info = conninfo_to_dict(s.conninfo)
    assert (info["host"], info["port"]) == ("db1,db2", "5432,5433")
    assert info["target_session_attrs"] == "read-write" and s.pool_size == 4
    down = _connect_error(RuntimeError("Connection refused"), s)
    assert "PostgreSQL at db1:5432 or db2:5433" in str(down)


def test_one_port_for_a_host_list_is_every_host_s_and_a_missing_one_the_default() -> None:
    s = parse_postgres_url("postgresql:///agents?host=db1,db2&port=6432")
    assert "db1:6432 or db2:6432" in str(_connect_error(RuntimeError("timeout"), s))
    s = parse_postgres_url("postgresql://app@db1,db2:6432/agents")  # db1 on the default
    assert "db1:5432 or db2:6432" in str(_connect_error(RuntimeError("timeout"), s))


def test_ipv6_percent_encoded_passwords_and_the_short_scheme_pass_through() -> None:
    info = libpq("postgres://app:p%40ss%2Fw@[::1]:5433/agents")
    assert (info["host"], info["port"], info["password"]) == ("::1", "5433", "p@ss/w")


def test_libpq_defaults_are_added_unless_the_url_sets_them() -> None:
    info = libpq("postgresql://app@db/agents?connect_timeout=3&keepalives=0")
    assert (info["connect_timeout"], info["keepalives"]) == ("3", "0")
    assert info["application_name"] == "mainspring" and info["keepalives_idle"] == "30"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://app@db:abc/agents", "port 'abc' in the URL is not a port number"),
        ("postgresql://app@db:\u0663\u0664/agents", "is not a port number"),  # Arabic 34
        ("postgresql://app@db1:5432,db2:70000/a", "port '70000' in the URL is not a port"),
        ("postgresql://[::1/agents", "its host part cannot be read"),
        ("postgresql://app:se[cr]et@db/agents", "its host part cannot be read"),
        ("postgresql://app:hunter2@[::1]x/agents", "invalid PostgreSQL URL"),
        ("postgresql://app:hun%zzter2@db/agents", "invalid PostgreSQL URL"),
        ("postgresql://app:a@hunter2@db/agents", "holds '@'; write it as %40"),
        ("postgresql://app@db/a?listen_url=postgresql%3A%2F%2Fh2%3A99999%2Fa", "listen_url: port"),
        ("postgresql:/agents", "invalid PostgreSQL URL: not postgresql://"),
        ("postgresql://app:hunter2@db/a?schema=Blue", "not a plain lower-case identifier"),
        ("postgresql://app@db/a?schema=" + "s" * 53, "is 53 characters long; use at most 52"),
        ("postgresql://app@db/a?pool_size=0", "pool_size=0 in the URL: use a whole number"),
        ("postgresql://app@db/a?pool_size=two", "pool_size='two' in the URL: use a whole"),
        ("postgresql://app@db/a?lock_wait=soon", "lock_wait='soon' in the URL: use seconds"),
        ("postgresql://app@db/a?prepare_threshold=x", "prepare_threshold='x' in the URL"),
        ("postgresql://app@db/a?listen=maybe", "listen='maybe' in the URL: use on or off"),
        ("postgresql://app@db/a?lock_wait=inf", "lock_wait='inf' in the URL: use seconds"),
        ("postgresql://app@db/a?lock_wait=nan", "lock_wait='nan' in the URL"),
        ("postgresql://app@db/a?lock_wait=0.0001", "from 0.001 to 86400"),
    ],
)
def test_what_libpq_could_not_use_is_one_clear_error(url: str, says: str) -> None:
    with pytest.raises(StoreError, match=None) as err:
        parse_postgres_url(url)
    assert says in str(err.value) and "hunter2" not in str(err.value)


def test_the_listen_url_is_read_as_the_main_one_is_and_its_errors_name_its_host() -> None:
    s = parse_postgres_url(
        "postgresql://app@db1/agents?listen_url=postgresql%3A%2F%2Fapp%40direct%3A6432%2Fagents"
    )
    assert s.listener is not None and s.listen_conninfo == s.listener.conninfo
    assert conninfo_to_dict(s.listen_conninfo)["host"] == "direct"
    assert "PostgreSQL at direct:6432" in str(_connect_error(RuntimeError("refused"), s.listener))


def test_ipv6_hosts_are_named_in_brackets() -> None:
    s = parse_postgres_url("postgresql://app@[::1]:5433,[fe80::2]/agents")
    assert "PostgreSQL at [::1]:5433 or [fe80::2]:5432" in str(
        _connect_error(RuntimeError("refused"), s)
    )


def test_passwords_stay_out_of_logs_reprs_and_connection_errors() -> None:
    url = "postgresql://app:p%40ss%2Fword@db/agents"
    assert redacted(url) == "postgresql://app:***@db/agents"
    assert redacted("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
    assert redacted("postgresql://app:p%3apw@db/a") == "postgresql://app:***@db/a"
    assert redacted("postgresql://app:a@b@db/a") == "postgresql://app:***@db/a"
    inner = "postgresql://app:pw42@direct/agents"  # the main password is its prefix
    both = redacted(f"postgresql://app:pw@db/agents?listen_url={quote(inner, safe='')}")
    assert "pw" not in both.replace("%2Fagents", "") and "42" not in both and "direct" in both
    s = parse_postgres_url(url)
    assert "p%40ss" not in repr(s) and "p@ss" not in repr(s)
    err = _connect_error(RuntimeError('timeout expired for "app:p@ss/word@db"'), s)
    assert "p@ss/word" not in str(err) and "***" in str(err)


def test_a_malformed_url_s_error_does_not_show_its_password() -> None:
    with pytest.raises(StoreError) as err:
        parse_postgres_url("postgresql:/app:hunter2@db/agents")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    "why",
    [
        'FATAL:  too many connections for role "app"',
        "FATAL:  sorry, too many clients already",
        "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
    ],
)
def test_a_server_out_of_connections_says_what_to_raise_or_lower(why: str) -> None:
    s = parse_postgres_url("postgresql://app@db/agents")
    msg = str(_connect_error(RuntimeError(why), s))
    assert msg.startswith("PostgreSQL at db:5432 takes no more connections")
    assert "pool_size" in msg and "max_connections" in msg


def test_a_bare_listen_parameter_means_on() -> None:
    assert parse_postgres_url("postgresql://app@db/a?listen").listen_conninfo is not None
    assert parse_postgres_url("postgresql://app@db/a?listen=off").listen_conninfo is None


@pytest.mark.parametrize(("version", "named"), [(110022, "11"), (90624, "9.6"), (100023, "10")])
def test_a_server_older_than_12_is_refused_in_one_line(version: int, named: str) -> None:
    from mainspring.store.postgres import _check_server_version

    s = parse_postgres_url("postgresql://app@db:5433/agents")
    with pytest.raises(StoreError) as err:
        _check_server_version(s, version)
    assert str(err.value) == (
        f"PostgreSQL at db:5433/agents is version {named}; Mainspring needs PostgreSQL 12 "
        "or newer: upgrade the server"
    )
    _check_server_version(s, 120000)  # 12.0 and newer pass
    _check_server_version(s, 170002)
