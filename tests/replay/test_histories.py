"""Saved histories replay against the current code; a changed workflow is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mainspring import NondeterminismError, Replayer
from tests.replay.workflows import FanOut, ResearchAgent, ResearchAgentChanged

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_exist() -> None:
    assert {p.stem for p in HISTORIES} >= {"research_agent", "fanout"}


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
def test_saved_history_replays(path: Path) -> None:
    Replayer(workflows=[ResearchAgent, FanOut]).replay(path)


def test_changed_workflow_raises_nondeterminism_naming_the_event() -> None:
    path = Path(__file__).parent / "histories" / "research_agent.json"
    with pytest.raises(NondeterminismError) as info:
        Replayer(workflows=[ResearchAgentChanged]).replay(path)
    message = str(info.value)
    doc = json.loads(path.read_text())
    first = next(e for e in doc["events"] if e["event_type"] == "ActivityTaskScheduled")
    assert f"event {first['event_id']} " in message
    assert doc["run_id"] in message
    assert "'search'" in message and "'summarize'" in message


def test_history_format_is_versioned() -> None:
    doc = json.loads((Path(__file__).parent / "histories" / "fanout.json").read_text())
    assert doc["format"] == "mainspring.history/1"
    assert doc["events"][0]["event_type"] == "WorkflowExecutionStarted"


def test_replayer_rejects_unknown_type_and_empty_history() -> None:
    path = Path(__file__).parent / "histories" / "fanout.json"
    with pytest.raises(ValueError, match="not registered"):
        Replayer(workflows=[ResearchAgent]).replay(path)
    with pytest.raises(ValueError, match="must start with"):
        Replayer(workflows=[ResearchAgent]).replay([])
