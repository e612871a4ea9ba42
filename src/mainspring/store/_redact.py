"""Passwords out of what is shown: a database URL in a log line, a driver's message."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlsplit


def _password(url: str) -> str:
    """The password in ``url``, as written ('' if none)."""
    userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
    return userinfo.partition(":")[2]


def scrub(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (as written or decoded) in it."""
    password = _password(url)
    for form in {password, unquote(password)}:
        if form:
            text = text.replace(form, "***")
    return text


def redacted(url: str) -> str:
    """``url`` with its password, and that of a ``listen_url`` in it, replaced by
    ``***`` (for logs and messages)."""
    text = scrub(url, url)
    try:
        query = dict(parse_qsl(urlsplit(url).query))
    except ValueError:
        return text
    inner = query.get("listen_url")
    if inner:
        password = _password(inner)
        for form in {password, unquote(password), quote(password, safe="")}:
            if form:
                text = text.replace(form, "***")
    return text
