"""Passwords out of what is shown: a database URL in a log line, a driver's message."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit


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
    """``url`` with its password, and that of any ``listen_url`` in it, replaced by
    ``***`` (for logs and messages); rebuilt from its parts, not searched."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be read)"
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{host}" if at and ":" in userinfo else parts.netloc
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "listen_url" for k, _ in query):
        text = urlencode([(k, redacted(v) if k == "listen_url" else v) for k, v in query])
    else:
        text = parts.query
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{text}" if text else "")
