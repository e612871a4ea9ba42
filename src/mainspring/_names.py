"""The rule for the names users choose, the same on every store.

Workflow ids, run ids, task queues and the names of workflows, activities, signals and
queries are stored as text and some are indexed. PostgreSQL's text cannot hold the NUL
character and its indexes take entries of at most 2,704 bytes, while SQLite takes
anything: one rule for both keeps code that runs on SQLite running on PostgreSQL.
"""

from __future__ import annotations

from .errors import InvalidNameError

MAX_NAME_BYTES = 1000


def check_name(value: object, what: str) -> str:
    """``value`` if it is a valid name, else raise :class:`InvalidNameError` saying why.

    A valid name is a non-empty ``str`` of at most :data:`MAX_NAME_BYTES` bytes in UTF-8,
    without the NUL character.
    """
    if not isinstance(value, str) or not value:
        raise InvalidNameError(f"{what} must be a non-empty string, not {_show(value)}")
    if "\x00" in value:
        raise InvalidNameError(f"{what} {_show(value)} holds the NUL character; remove it")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidNameError(
            f"{what} {_show(value)} is not valid Unicode ({exc.reason})"
        ) from None
    if size > MAX_NAME_BYTES:
        raise InvalidNameError(
            f"{what} {_show(value)} is {size:,} bytes long in UTF-8; "
            f"the limit is {MAX_NAME_BYTES:,}"
        )
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"
