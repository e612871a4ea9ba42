"""Passwords out of what is shown: a database URL in a log line, a driver's message."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

# query parameters that hold a secret (libpq's names are case-sensitive; these are
# matched in any case, to hide a misspelt one too)
SECRET_PARAMS = frozenset({"password", "sslpassword"})
# a secret in a libpq key=value string: password=x, sslpassword = 'a b\'c'
_CONNINFO_SECRET = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']*)", re.I)
_SHOWN_SAFE = ":/@*,[]"  # left unencoded in a shown listen_url, for readability


def split_query(query: str) -> list[tuple[str, str, str | None]]:
    """Each ``name=value`` of a URL's query as (``name`` decoded, the piece as written,
    ``value`` decoded, or None for a bare ``name`` without ``=``), read as libpq reads
    them: ``+`` is a plus sign, not a space. Empty pieces (``a=1&&b=2``) are skipped."""
    pairs: list[tuple[str, str, str | None]] = []
    for piece in query.split("&"):
        if piece:
            name, eq, value = piece.partition("=")
            pairs.append((unquote(name), piece, unquote(value) if eq else None))
    return pairs


def _secrets(url: str) -> set[str]:
    """Every password in ``url`` (its user part's, its query's ``password`` and
    ``sslpassword``, a ``listen_url``'s given either way, or a key=value string's), each
    as written and decoded."""
    if "://" not in url:
        found = {m.group(2) for m in _CONNINFO_SECRET.finditer(url)}
        return found | {f.strip("'").replace("\\'", "'") for f in found}
    rest = url.partition("://")[2]
    userinfo = rest.partition("/")[0].rpartition("@")[0]  # as libpq finds the '@'
    found = {userinfo.partition(":")[2]}
    for name, written, value in split_query(rest.partition("?")[2]):
        if name.lower() in SECRET_PARAMS and value is not None:
            found |= {written.partition("=")[2], value}
        elif name == "listen_url" and value is not None:
            found |= _secrets(value)
    return found | {unquote(f) for f in found}


def scrub(text: str, url: str) -> str:
    """``text`` with every password of ``url`` (as :func:`redacted` finds them, as
    written or decoded) replaced by ``***``."""
    for secret in sorted(_secrets(url), key=len, reverse=True):  # pw42 before pw
        if secret:
            text = text.replace(secret, "***")
    return text


def redacted(url: str) -> str:
    """``url`` with every password in it replaced by ``***``, for logs and messages: the
    user part's, a ``password`` or ``sslpassword`` query parameter's, and those of a
    ``listen_url`` (given either way); in a libpq key=value string, its ``password`` and
    ``sslpassword``. Rebuilt from its parts, not searched; the rest is shown as written,
    but for a ``#fragment``, which is left out."""
    if "://" not in url:  # a file path, or a key=value string
        return _CONNINFO_SECRET.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be read)"
    if re.search("[?#]", url.partition("://")[2].partition("/")[0].rpartition("@")[0]):
        return "(a URL that cannot be read)"  # a '?' or '#' in the password cuts it short
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{host}" if at and ":" in userinfo else parts.netloc
    shown = []
    for name, written, value in split_query(parts.query):
        key = written.partition("=")[0]
        if name.lower() in SECRET_PARAMS and value is not None:
            shown.append(f"{key}=***")
        elif name == "listen_url" and value is not None:
            shown.append(f"{key}={quote(redacted(value), safe=_SHOWN_SAFE)}")
        else:
            shown.append(written)
    query = "&".join(shown)
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
