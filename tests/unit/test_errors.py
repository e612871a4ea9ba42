from __future__ import annotations

from datetime import timedelta

from mainspring import (
    ActivityError,
    ApplicationError,
    Failure,
    MainspringError,
    TimeoutFailure,
    WorkflowAlreadyStartedError,
)
from mainspring.errors import error_to_failure, failure_to_error


def test_every_error_derives_from_the_root() -> None:
    import mainspring

    for name in mainspring.__all__:
        obj = getattr(mainspring, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, MainspringError), name


def test_default_message_is_the_docstring() -> None:
    assert "Check the id" in str(mainspring_not_found())


def mainspring_not_found() -> MainspringError:
    from mainspring import WorkflowNotFoundError

    return WorkflowNotFoundError()


def test_application_error_round_trip_keeps_retry_meaning() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ApplicationError(
                "outer",
                {"x": 1},
                type="Custom",
                non_retryable=True,
                next_retry_delay=timedelta(seconds=3),
            ) from inner
    except ApplicationError as exc:
        failure = error_to_failure(exc)
    assert failure.type == "Custom" and failure.non_retryable
    assert failure.cause is not None and failure.cause.type == "KeyError"
    assert "Traceback" in failure.stack
    again = Failure.from_dict(failure.to_dict())
    assert again == failure
    err = failure_to_error(again)
    assert isinstance(err, ApplicationError)
    assert err.type == "Custom" and err.non_retryable and err.details == [{"x": 1}]
    assert err.next_retry_delay == timedelta(seconds=3)
    assert isinstance(err.__cause__, ApplicationError) and err.__cause__.type == "KeyError"


def test_timeout_and_activity_errors_rebuild() -> None:
    f = error_to_failure(TimeoutFailure("slow", timeout_type="heartbeat"))
    err = failure_to_error(f)
    assert isinstance(err, TimeoutFailure) and err.timeout_type == "heartbeat"
    a = ActivityError("failed", activity_type="t", activity_id="3", attempt=5)
    a.__cause__ = ValueError("why")
    fa = error_to_failure(a)
    back = failure_to_error(fa)
    assert isinstance(back, ActivityError) and back.attempt == 5
    assert fa.describe().splitlines() == ["ActivityError: failed", "caused by ValueError: why"]


def test_already_started_error_says_how_to_fix() -> None:
    assert "use_existing" in str(WorkflowAlreadyStartedError("w", "r"))
