"""Compact JSON text that any UTF-8 database column takes.

Python strings may hold lone surrogates (``"\\ud83d"``: a stream cut in the middle of
a surrogate pair, bytes decoded with ``surrogateescape``), which have no UTF-8 form:
SQLite and PostgreSQL drivers refuse such text, and a payload holding one could never
be saved. Text is kept as it is where it can be, and escaped (``\\ud83d``) where it
cannot, so it decodes back to the very same string.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def encoder(default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """A function returning ``value`` as compact JSON text that is valid UTF-8.

    Non-ASCII characters stay as they are, unless the text holds a lone surrogate: then
    the whole text is written with ASCII escapes, which decode to the same value.
    ``default`` converts what JSON has no type for (as in :func:`json.dumps`).
    """
    plain = json.JSONEncoder(default=default, separators=(",", ":"), ensure_ascii=False).encode
    escaped = json.JSONEncoder(default=default, separators=(",", ":")).encode

    def encode(value: Any) -> str:
        text = plain(value)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return escaped(value)
        return text

    return encode
