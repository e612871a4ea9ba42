"""The rule for names users choose (ids, task queues, workflow/activity/signal/query
names): the same on every store, checked before anything is written."""

from __future__ import annotations

import pytest

from mainspring import Client, InvalidNameError, Worker, activity, workflow
from mainspring._names import MAX_NAME_BYTES, check_name
from mainspring.errors import WorkerError


@pytest.mark.parametrize(
    "name", ["a", "agent-7f3a/step:2", "é" * (MAX_NAME_BYTES // 2), "x" * MAX_NAME_BYTES]
)
def test_names_within_the_rule_pass_unchanged(name: str) -> None:
    assert check_name(name, "workflow id") is name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "workflow id must be a non-empty string, not ''"),
        (None, "workflow id must be a non-empty string, not None"),
        (42, "workflow id must be a non-empty string, not 42"),
        ("a\x00b", "workflow id 'a\\x00b' holds the NUL character"),
        ("x" * (MAX_NAME_BYTES + 1), "is 1,001 bytes long in UTF-8; the limit is 1,000"),
        ("é" * 501, "is 1,002 bytes long in UTF-8"),
        ("bad\udc80", "is not valid Unicode (surrogates not allowed)"),
    ],
)
def test_names_outside_the_rule_are_refused_saying_why(name: object, says: str) -> None:
    with pytest.raises(InvalidNameError) as err:
        check_name(name, "workflow id")
    assert says in str(err.value) and len(str(err.value)) < 200
    assert isinstance(err.value, ValueError)  # as bad arguments always were


def test_definitions_check_their_names_when_declared() -> None:
    with pytest.raises(InvalidNameError, match="workflow name"):

        @workflow.defn(name="w\x00")
        class W:
            @workflow.run
            async def run(self) -> None: ...

    with pytest.raises(InvalidNameError, match="signal name"):
        workflow.signal(name="s" * 2000)(lambda self: None)
    with pytest.raises(InvalidNameError, match="query name"):
        workflow.query(name="q\x00")(lambda self: None)
    with pytest.raises(InvalidNameError, match="activity name"):
        activity.defn(name="a\x00")(lambda: None)


@activity.defn
async def noop() -> None:
    return None


def test_a_worker_checks_its_task_queue_and_identity() -> None:
    with pytest.raises(WorkerError, match="task_queue 'q\\\\x00' holds the NUL"):
        Worker(None, task_queue="q\x00", activities=[noop])  # type: ignore[arg-type]
    with pytest.raises(WorkerError, match=r"worker identity .* bytes long"):
        Worker(None, task_queue="q", activities=[noop], identity="i" * 5000)  # type: ignore[arg-type]


def test_a_handle_s_empty_run_id_still_means_the_latest_run() -> None:
    client = Client.__new__(Client)
    assert client.get_workflow_handle("w", run_id="").run_id is None
    assert client.get_workflow_handle("w", run_id="r1").run_id == "r1"
    with pytest.raises(InvalidNameError, match="run id"):
        client.get_workflow_handle("w", run_id="r\x00")
