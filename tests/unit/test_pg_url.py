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
        # PostgreSQL refuses CREATE SCHEMA for these: refused here, not at migrate
        ("postgresql://app@db/a?schema=pg_foo", "schema='pg_foo' in the URL starts with pg_"),
        ("postgresql://app@db/a?schema=pg_temp", "reserves for its own schemas"),
        # a parameter given twice: libpq and Python would silently take the last one
        ("postgresql://app@db/a?schema=a&schema=b", "schema is given twice in the URL; give"),
        ("postgresql://app@db/a?pool_size=2&pool_size=3", "pool_size is given twice"),
        ("postgresql://app@db/a?password=hunter2&pass%77ord=x", "password is given twice"),
        ("postgresql://app@db/a?sslmode=require&sslmode=disable", "sslmode is given twice"),
        ("postgresql://app@db/a?ssl=true&sslmode=disable", "(ssl=true is libpq's sslmode"),
        (
            "postgresql://app@db/a?listen_url=postgresql%3A%2F%2Fh%2Fa%3Fuser%3Dx%26user%3Dy",
            "listen_url: user is given twice",
        ),
        ("postgresql://app:hunter2@db/a?password=x", "password is given twice in the URL (before"),
        ("postgresql://app@db/a?user=bob", "user is given twice in the URL (before its ?, and"),
        ("postgresql://app@db/a?host=db2", "host is given twice"),
        ("postgresql://app@db:5433/a?port=5434", "port is given twice"),
        ("postgresql://app@db/a?dbname=b", "dbname is given twice"),
        # an empty value is refused, not taken for the default
        ("postgresql://app@db/a?schema=", "schema is empty in the URL; give it a value"),
        ("postgresql://app@db/a?schema", "schema is empty in the URL"),
        ("postgresql://app@db/a?pool_size=", "pool_size is empty in the URL"),
        ("postgresql://app@db/a?lock_wait=", "lock_wait is empty in the URL"),
        ("postgresql://app@db/a?prepare_threshold=", "prepare_threshold is empty"),
        ("postgresql://app@db/a?listen_url=", "listen_url is empty in the URL"),
        ("postgresql://app@db/a?listen=", "listen is empty in the URL"),
        # numbers as Python reads them but nobody writes them
        ("postgresql://app@db/a?pool_size=%D9%A3", "pool_size='\u0663' in the URL: use a"),
        ("postgresql://app@db/a?pool_size=1_0", "pool_size='1_0' in the URL: use a whole"),
        ("postgresql://app@db/a?pool_size=%203", "pool_size=' 3' in the URL"),
        ("postgresql://app@db/a?lock_wait=1e2", "lock_wait='1e2' in the URL: use seconds"),
        ("postgresql://app@db/a?prepare_threshold=-1", "use a whole number (0 or more) or off"),
        ("postgresql://app@db/a?pool_size=" + "9" * 5000, "… (5,000 characters) in the URL"),
        # what urlsplit would read otherwise than libpq does, and might show a password of
        ("postgresql://app:hun#ter2@db/a", "it holds '#'; write it as %23"),
        ("postgresql://app:hun?ter2@db/a", "a '?' comes before its '@'; write ? in a password"),
        ("postgresql://app@db/a?password=hunter2%zz", "not followed by two hex digits"),
    ],
)
def test_what_libpq_could_not_use_is_one_clear_error(url: str, says: str) -> None:
    with pytest.raises(StoreError, match=None) as err:
        parse_postgres_url(url)
    assert says in str(err.value) and "hunter2" not in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app@db:5432/agents?password=qspw",
            "postgresql://app@db:5432/agents?password=***",
        ),
        (
            "postgresql://app@db/a?sslpassword=qspw&sslmode=require&PassWord=qspw",
            "postgresql://app@db/a?sslpassword=***&sslmode=require&PassWord=***",
        ),
        ("postgresql://app@db/a?pass%77ord=qspw", "postgresql://app@db/a?pass%77ord=***"),
        (  # a listen_url's password, in its user part and in its query
            "postgresql://app@db/a?schema=s&listen_url="
            + quote("postgresql://app:qspw@direct/a?password=qspw&sslpassword=qspw", safe=""),
            "postgresql://app@db/a?schema=s&listen_url=postgresql://app:***@direct/a"
            "%3Fpassword%3D***%26sslpassword%3D***",
        ),
        (  # a listen_url written unencoded
            "postgresql://app@db/a?listen_url=postgresql://direct/a?password=qspw",
            "postgresql://app@db/a?listen_url=postgresql://direct/a%3Fpassword%3D***",
        ),
        (  # a libpq key=value string (taken for a SQLite file name, but shown)
            "host=db password=qspw sslpassword = 'qs pw' dbname=a",
            "host=db password=*** sslpassword = *** dbname=a",
        ),
        ("postgresql://app:qs#pw@db/a", "(a URL that cannot be read)"),
        ("postgresql://app:qs?pw@db/a", "(a URL that cannot be read)"),
        ("mainspring.db", "mainspring.db"),
    ],
)
def test_every_password_in_a_shown_url_is_hidden(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_password_given_as_a_parameter_stays_out_of_connection_errors() -> None:
    inner = "postgresql://app@direct/a?password=lq%2Bpw"
    s = parse_postgres_url(f"postgresql://app@db/a?password=qs%40pw&listen_url={quote(inner)}")
    for form in ("qs@pw", "qs%40pw"):
        err = _connect_error(RuntimeError(f"timeout expired ({form})"), s)
        assert form not in str(err) and "(***)" in str(err)
    assert s.listener is not None
    assert "lq+pw" not in str(_connect_error(RuntimeError("lq+pw refused"), s.listener))


def test_the_query_is_read_as_libpq_reads_it_a_plus_is_a_plus() -> None:
    assert libpq("postgresql://app@db/a?password=a+b&application_name=x+y")["password"] == "a+b"
    assert libpq("postgresql://app@db/a?application_name=x+y")["application_name"] == "x+y"


def test_settings_given_once_either_way_are_taken() -> None:
    # the socket form: no host before the ?, so ?host= is its only host
    assert libpq("postgresql://:5433/a?host=/run/pg&user=app")["host"] == "/run/pg"
    assert libpq("postgresql://app@/a?host=/run/pg&port=5433")["port"] == "5433"
    assert libpq("postgresql://db/?dbname=a&user=app")["dbname"] == "a"
    assert libpq("postgresql://db/a?ssl=true")["sslmode"] == "require"
    assert parse_postgres_url("postgresql://db/a?lock_wait=.5").lock_wait == 0.5


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
