from __future__ import annotations

import importlib.resources

import mainspring

EXPECTED = {
    "ActivityError",
    "ApplicationError",
    "CancelledFailure",
    "Client",
    "Event",
    "EventType",
    "Failure",
    "FailureError",
    "InvalidNameError",
    "MainspringError",
    "NondeterminismError",
    "NotAMainspringDatabaseError",
    "PayloadError",
    "PayloadTooLargeError",
    "PendingActivity",
    "PendingActivityState",
    "QueryFailedError",
    "QueryTimeoutError",
    "Replayer",
    "RetryPolicy",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "TerminatedFailure",
    "TimeoutFailure",
    "Worker",
    "WorkerError",
    "WorkerInfo",
    "WorkerState",
    "WorkflowAlreadyStartedError",
    "WorkflowClosedError",
    "WorkflowDescription",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowResultTimeoutError",
    "WorkflowStatus",
    "__version__",
    "activity",
    "workflow",
}


def test_public_names_are_pinned() -> None:
    assert set(mainspring.__all__) == EXPECTED
    for name in mainspring.__all__:
        assert hasattr(mainspring, name), name


def test_py_typed_ships() -> None:
    assert (importlib.resources.files("mainspring") / "py.typed").is_file()


def test_workflow_and_activity_modules_expose_the_documented_calls() -> None:
    for name in (
        "defn",
        "run",
        "signal",
        "query",
        "execute_activity",
        "sleep",
        "wait_condition",
        "now",
        "random",
        "uuid4",
        "info",
        "logger",
        "patched",
    ):
        assert hasattr(mainspring.workflow, name), name
    for name in ("defn", "heartbeat", "info"):
        assert hasattr(mainspring.activity, name), name
