"""Quieting one of psycopg's log lines that repeats one of ours.

When a writer's connection drops in the middle of a pipeline, psycopg logs "error
ignored terminating <Pipeline>: the connection is lost" on its own logger, beside the
store's own line saying the connection was lost and what happens next. For the store's
connections only, that line of psycopg's is dropped; everything else psycopg logs, and
that line for anyone else's connections, passes as before.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

_OURS: weakref.WeakSet[Any] = weakref.WeakSet()
_NOISE = "error ignored terminating %r: %s"


class _OwnPipelineNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _NOISE or not isinstance(record.args, tuple) or not record.args:
            return True
        conn = getattr(record.args[0], "_conn", None)
        return conn is None or conn not in _OURS


_FILTER = _OwnPipelineNoise()


def adopt(conn: Any) -> None:
    """Count ``conn`` as the store's: psycopg's repeat of a lost pipeline on it is dropped."""
    _OURS.add(conn)
    logger = logging.getLogger("psycopg")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
