"""Testing helpers: replay exported histories against current code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .converter import PayloadConverter
from .errors import NondeterminismError
from .history import Event, EventType, events_from_json
from .runtime.instance import WorkflowInstance, WorkflowTaskError
from .workflow import WorkflowDefinition, WorkflowInfo

__all__ = ["Replayer"]


class Replayer:
    """Replays recorded histories against the current workflow code.

    Run it in CI before a deploy: a history recorded by the old code that the new code
    cannot reproduce raises :class:`~mainspring.NondeterminismError`, naming the event.
    """

    def __init__(self, *, workflows: Sequence[type]) -> None:
        defs = [WorkflowDefinition.of(c) for c in workflows]
        self._workflows = {d.name: d for d in defs}
        self._converter = PayloadConverter()

    def replay(self, history: list[Event] | dict[str, Any] | str | Path) -> None:
        """Replay one history (events, an export document, its JSON text, or a file).

        Raises:
            NondeterminismError: the code does not match the history.
            ValueError: the history is empty or its workflow type is not registered.
        """
        if isinstance(history, Path):
            history = history.read_text(encoding="utf-8")
        if isinstance(history, str):
            history = json.loads(history)
        events = self._events(history)
        if not events or events[0].event_type is not EventType.WORKFLOW_EXECUTION_STARTED:
            raise ValueError("a history must start with WorkflowExecutionStarted")
        start = events[0].attributes
        name = str(start["workflow_type"])
        definition = self._workflows.get(name)
        if definition is None:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise ValueError(f"workflow type {name!r} is not registered (registered: {known})")
        info = WorkflowInfo(
            workflow_id=str(start.get("workflow_id", "replay")),
            run_id=str(start.get("run_id", "")) or "replay",
            workflow_type=name,
            task_queue=str(start.get("task_queue", "")),
            start_time=datetime.fromtimestamp(events[0].time, UTC),
        )
        run_id = history.get("run_id") if isinstance(history, dict) else None
        if run_id:
            from dataclasses import replace

            info = replace(info, run_id=str(run_id))
        inst = WorkflowInstance(definition, info, self._converter)
        try:
            inst.replay(events)
        except WorkflowTaskError as exc:
            raise NondeterminismError(
                f"replaying {info.workflow_id!r} raised {exc}; the code fails on history "
                "it used to run"
            ) from exc.cause
        finally:
            inst.discard()

    def _events(self, history: list[Event] | dict[str, Any] | str | Path) -> list[Event]:
        if isinstance(history, list):
            return history
        if isinstance(history, Path):
            history = history.read_text(encoding="utf-8")
        if isinstance(history, str):
            history = json.loads(history)
        return events_from_json(history)  # type: ignore[arg-type]
