"""What a ``postgresql://`` URL asks for, and one-line errors for failed connections."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, quote, urlencode, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..errors import StoreError, StoreUnavailableError
from ._redact import redacted, scrub, split_query

_OWN_PARAMS = ("schema", "pool_size", "listen", "listen_url", "prepare_threshold", "lock_wait")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
# the notification channel is mainspring_<schema>, and PostgreSQL names end at 63 bytes
MAX_SCHEMA_LENGTH = 63 - len("mainspring_")
_URL_FORM = "use postgresql://user:password@host:5432/dbname"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_PORT = re.compile(r"^(\[[^\]]*\]|[^:]*)(?::(.*))?$")  # one host[:port] of a list
_WHOLE = re.compile(r"^[0-9]{1,18}$")  # ASCII digits only: int() also reads "1_0", " 3", "٣"
_SECONDS = re.compile(r"^([0-9]+\.?[0-9]*|\.[0-9]+)$")


def _line(exc: BaseException) -> str:
    """The first meaningful line of a driver message, without libpq's prefixes."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first.rsplit(" failed: ", 1)[-1]
    return re.sub(r"^(FATAL|ERROR):\s+", "", first).strip()


def _shown(value: str, limit: int = 64) -> str:
    """``value`` quoted for an error message, cut to about ``limit`` characters so the
    message stays one line."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value):,} characters)"


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (quoted always: ``user`` or ``order``, say,
    are reserved words, and would not parse unquoted)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, kw_only=True)
class PgSettings:
    """What a ``postgresql://`` URL asks for, split into libpq's part and Mainspring's."""

    conninfo: str
    listen_conninfo: str | None
    schema: str
    pool_size: int
    prepare_threshold: int | None
    lock_wait: float
    host: str
    port: str
    user: str
    dbname: str
    listener: PgSettings | None = None  # the listen_url's settings, when one is given

    def __repr__(self) -> str:  # the connection strings hold the password
        return f"PgSettings(schema={self.schema!r}, host={self.host!r}, dbname={self.dbname!r})"


# libpq settings Mainspring gives every connection unless the URL sets them: a peer that
# vanished without a reset (a NAT or load balancer dropped the link) is found out by TCP
# keepalives within about a minute, not the operating system's two hours.
_LIBPQ_DEFAULTS = (
    ("connect_timeout", "10"),
    ("application_name", "mainspring"),
    ("keepalives", "1"),
    ("keepalives_idle", "30"),
    ("keepalives_interval", "10"),
    ("keepalives_count", "3"),
    # data sent and not acknowledged for 30 s (a network that drops every packet):
    # the connection fails rather than wait for the OS's retransmissions (~15 minutes)
    ("tcp_user_timeout", "30000"),
)


def _libpq_url(url: str) -> tuple[str, dict[str, str | None]]:
    """Return (the URL with Mainspring's parameters removed, those parameters: a bare
    ``name`` without ``=`` maps to None).

    Everything but the query is passed on as written, for libpq to read: a host list
    (``h1:5432,h2:5432``, tried in turn), a socket directory (``postgresql:///db?host=
    /run/postgresql``, or percent-encoded as the host), IPv6 addresses in brackets. The
    query is read as libpq reads it (``+`` is a plus sign). A parameter given twice, or
    given both in the query and in the URL's user, host, port or database part, is
    refused: libpq would silently take the last one.
    """
    if not url.lower().startswith(("postgresql://", "postgres://")):
        raise StoreError(f"invalid PostgreSQL URL: not postgresql://…; {_URL_FORM}")
    if "#" in url:  # urlsplit would cut the URL there; libpq would not
        raise StoreError(
            "invalid PostgreSQL URL: it holds '#'; write it as %23 "
            "(postgresql://user:p%23ss@host/db)"
        )
    if "?" in url.partition("://")[2].partition("/")[0].rpartition("@")[0]:
        raise StoreError(  # libpq would read all before the '@' as user and password
            "invalid PostgreSQL URL: a '?' comes before its '@'; write ? in a password "
            "as %3F, and @ in a query parameter as %40"
        )
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracket out of place; its message may quote the password
        raise StoreError(
            f"invalid PostgreSQL URL: its host part cannot be read (a [ or ] out of "
            f"place?); {_URL_FORM}"
        ) from None
    if parts.netloc.count("@") > 1:
        raise StoreError(
            "invalid PostgreSQL URL: its user name or password holds '@'; "
            "write it as %40 (postgresql://user:p%40ss@host/db)"
        )
    if _BAD_ESCAPE.search(parts.query):  # the message would quote it: it may be a password
        raise StoreError(
            "invalid PostgreSQL URL: a '%' in its query is not followed by two hex digits; "
            "write % itself as %25"
        )
    query = split_query(parts.query)
    _refuse_repeats(parts, query)
    own = {k: v for k, _, v in query if k in _OWN_PARAMS}
    rest = [(k, v or "") for k, _, v in query if k not in _OWN_PARAMS]
    names = {k for k, _ in rest}
    rest += [(k, v) for k, v in _LIBPQ_DEFAULTS if k not in names]
    # not urlunsplit: it drops the "//" of an empty host (postgresql:///db?host=…)
    return f"postgresql://{parts.netloc}{parts.path}?{urlencode(rest, quote_via=quote)}", own


def _refuse_repeats(parts: SplitResult, query: list[tuple[str, str, str | None]]) -> None:
    """Raise :class:`StoreError` naming a parameter that ``query`` gives twice, or that
    it gives and the URL's user, host, port or database part gives too."""
    seen: dict[str, str] = {}  # each setting, and the name it was given under
    for name, _, value in query:
        key = "sslmode" if (name, value) == ("ssl", "true") else name  # libpq's alias
        if key in seen:
            also = " (ssl=true is libpq's sslmode=require)" if "ssl" in (seen[key], name) else ""
            raise StoreError(f"{key} is given twice in the URL{also}; give it once")
        seen[key] = name
    userinfo, at, hostport = parts.netloc.rpartition("@")
    pairs = [_HOST_PORT.match(piece) for piece in hostport.split(",")]
    written = {
        "user": at and userinfo.partition(":")[0],
        "password": at and ":" in userinfo,
        "host": any(m and m.group(1) for m in pairs),
        "port": any(m and m.group(2) for m in pairs),
        "dbname": parts.path.lstrip("/"),
    }
    for name, given in written.items():
        if given and name in seen:
            raise StoreError(
                f"{name} is given twice in the URL (before its ?, and as ?{name}=); give it once"
            )


def _checked(url: str) -> tuple[str, dict[str, str | None], dict[str, Any]]:
    """(libpq's URL, Mainspring's parameters, what libpq reads in it), or a clear error."""
    conninfo, own = _libpq_url(url)
    try:
        info = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:  # not chained: libpq's message may quote the password
        why = _line(exc).replace(conninfo, redacted(url))  # the URL as given, not as sent
        raise StoreError(f"invalid PostgreSQL URL: {scrub(why, url)}; {_URL_FORM}") from None
    for port in str(info.get("port") or "").split(","):
        digits = port.strip()
        if digits and not (digits.isascii() and digits.isdigit() and 0 < int(digits) < 65536):
            raise StoreError(f"port {_shown(port)} in the URL is not a port number (1-65535)")
    return conninfo, own, info


def parse_postgres_url(url: str) -> PgSettings:
    """Split and check a ``postgresql://`` URL; raise :class:`StoreError`, one line naming
    what is wrong and never showing a password, if it is invalid: unreadable by libpq, a
    parameter given twice (or both in the query and before it), a Mainspring parameter
    given empty or out of range, a schema PostgreSQL would not create."""
    conninfo, raw, info = _checked(url)
    own = _given(raw)
    schema = own.get("schema", "mainspring")
    if not _IDENT.match(schema):
        raise StoreError(
            f"schema={_shown(schema)} in the URL is not a plain lower-case identifier "
            "(letters a-z, digits and underscores, not starting with a digit)"
        )
    if schema.startswith("pg_"):
        raise StoreError(
            f"schema={_shown(schema)} in the URL starts with pg_, which PostgreSQL reserves for "
            "its own schemas; choose a name that does not"
        )
    if len(schema) > MAX_SCHEMA_LENGTH:
        raise StoreError(
            f"schema={_shown(schema)} in the URL is {len(schema)} characters long; use at most "
            f"{MAX_SCHEMA_LENGTH} (Mainspring's notification channel, mainspring_<schema>, "
            "must fit PostgreSQL's 63-byte limit on names)"
        )
    pool_size = _whole(own, "pool_size", "2", "a whole number from 1 to 64")
    if not 1 <= pool_size <= 64:
        raise StoreError(f"pool_size={pool_size} in the URL: use a whole number from 1 to 64")
    threshold = (
        None
        if own.get("prepare_threshold", "").lower() in ("off", "none")
        else _whole(own, "prepare_threshold", "5", "a whole number (0 or more) or off")
    )
    wait_text = own.get("lock_wait", "0.25")
    if wait_text.lower() in ("off", "none"):
        lock_wait = 0.0
    elif _SECONDS.match(wait_text):
        lock_wait = float(wait_text)
    else:
        raise StoreError(
            f"lock_wait={_shown(wait_text)} in the URL: use seconds (0 or more) or off"
        )
    if not (lock_wait == 0 or 0.001 <= lock_wait <= 86400):
        raise StoreError(
            f"lock_wait={_shown(wait_text)} in the URL: use seconds from 0.001 to 86400, or off"
        )
    listen_text = own.get("listen", "on").lower()
    if listen_text not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
        raise StoreError(f"listen={_shown(own['listen'])} in the URL: use on or off")
    listen = listen_text in ("on", "1", "true", "yes")
    listener = None
    if "listen_url" in own:  # checked as the main URL is; its errors name its host
        try:
            listener = parse_postgres_url(own["listen_url"])
        except StoreError as exc:
            raise StoreError(f"listen_url: {exc}") from None
    user = str(info.get("user") or "the current user")
    return PgSettings(
        conninfo=conninfo,
        listen_conninfo=(listener.conninfo if listener else conninfo) if listen else None,
        schema=schema,
        pool_size=pool_size,
        prepare_threshold=threshold,
        lock_wait=lock_wait,
        host=str(info.get("host") or "localhost"),
        port=str(info.get("port") or "5432"),
        user=user,
        dbname=str(info.get("dbname") or user),
        listener=listener,
    )


# what an empty parameter's error suggests instead
_EXAMPLES = {
    "schema": "mainspring",
    "pool_size": "2",
    "listen": "off",
    "listen_url": "postgresql%3A%2F%2Fuser%40host%2Fdbname",
    "prepare_threshold": "off",
    "lock_wait": "0.25",
}


def _given(raw: dict[str, str | None]) -> dict[str, str]:
    """Mainspring's parameters and their values; a bare ``listen`` means on, and any other
    bare or empty one (``?schema=``) is refused rather than taken for the default."""
    own: dict[str, str] = {}
    for name, value in raw.items():
        if value is None and name == "listen":
            value = "on"
        if not value or not value.strip():
            raise StoreError(
                f"{name} is empty in the URL; give it a value ({name}={_EXAMPLES[name]}) "
                "or leave it out"
            )
        own[name] = value
    return own


def _whole(own: dict[str, str], name: str, default: str, rule: str) -> int:
    """Mainspring's URL parameter ``name`` as a whole number written in ASCII digits, or
    a clear error naming ``rule``."""
    text = own.get(name, default)
    if not _WHOLE.match(text):
        raise StoreError(f"{name}={_shown(text)} in the URL: use {rule}")
    return int(text)


def _hosts(s: PgSettings) -> str:
    """``host:port``, or each of a host list with its port (libpq tries them in turn)."""
    hosts, ports = s.host.split(","), s.port.split(",")
    if len(ports) != len(hosts):
        ports = ports[:1] * len(hosts)  # one port for every host
    pairs = zip(hosts, ports, strict=True)
    return " or ".join(
        f"{f'[{h}]' if ':' in h and not h.startswith('/') else h or 'localhost'}:{p or '5432'}"
        for h, p in pairs
    )


# what the server says of a bad options=-c setting, and libpq of a bad parameter
_BAD_SETTING = (
    "invalid value for parameter",
    "unrecognized configuration parameter",
    "for connection option",
    "invalid connection option",
    "invalid sslmode value",
    "bad value for",  # psycopg reads connect_timeout itself
)


def _connect_error(exc: BaseException, s: PgSettings) -> StoreError:
    """Translate a failed connection into one line saying what to do."""
    why = scrub(_line(exc), s.conninfo)
    low = str(exc).lower()
    where = "PostgreSQL at " + _hosts(s)
    if "password" in low or "authentication failed" in low:
        return StoreError(
            f"{where} refused user {s.user!r} ({why}); put the right password in "
            "the URL (postgresql://user:password@host/db) or in ~/.pgpass"
        )
    if "database" in low and "does not exist" in low:
        return StoreError(
            f"database {s.dbname!r} does not exist on {where}; create it "
            f"(createdb -h {s.host} -p {s.port} {s.dbname}) or fix the URL"
        )
    if "role" in low and "does not exist" in low:
        return StoreError(
            f"role {s.user!r} does not exist on {where}; create it "
            f"(CREATE ROLE {_ident(s.user)} LOGIN) or fix the user in the URL"
        )
    if "too many" in low or "connection slots are reserved" in low:
        return StoreUnavailableError(
            f"{where} takes no more connections ({why}); each Mainspring process opens "
            "up to pool_size writer connections and one listener: raise max_connections "
            "or the role's CONNECTION LIMIT, lower pool_size in the URL, or pool with PgBouncer",
            maybe_saved=False,
        )
    if "pg_hba.conf" in low:
        return StoreError(
            f"{where} does not accept user {s.user!r} from this host ({why}); "
            "add a pg_hba.conf entry for it"
        )
    if any(w in low for w in _BAD_SETTING):  # before "timeout": a setting may name one
        return StoreError(
            f"a connection setting in the URL is wrong ({why}); fix it: the connection "
            "parameters, or the server settings in options=-c…"
        )
    if any(w in low for w in ("refused", "resolve", "timeout", "unreachable", "no route")):
        return StoreUnavailableError(
            f"cannot reach {where} ({why}); check that the server is running "
            "and the host and port in the URL",
            maybe_saved=False,
        )
    return StoreUnavailableError(f"cannot connect to {where}: {why}", maybe_saved=False)
