"""Every error a Mainspring user can catch.

One root, :class:`MainspringError`. Each class's docstring is its default message and says
how to fix the problem. Errors that travel through history (an activity's failure, a
workflow's failure) derive from :class:`FailureError` and convert to and from
:class:`Failure`, a structured record (type, message, stack, cause) that is stored as
JSON, never as a bare string.
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any


class MainspringError(Exception):
    """Base class of every Mainspring error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- failures


@dataclass(frozen=True, kw_only=True)
class Failure:
    """A failure as recorded in history.

    Attributes:
        type: The exception's type name (``ApplicationError``'s ``type`` if given).
        message: The exception's message.
        stack: The formatted traceback text, empty when none was available.
        non_retryable: Whether the failure asked not to be retried.
        kind: The Mainspring error class that raised it (``ApplicationError``,
            ``TimeoutError``, ``CancelledError``, ``ActivityError``…).
        details: Extra JSON-able data attached to the failure.
        cause: The failure that caused this one, if any.
    """

    type: str
    message: str
    stack: str = ""
    non_retryable: bool = False
    kind: str = "ApplicationError"
    details: dict[str, Any] = field(default_factory=dict)
    cause: Failure | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of this failure and its causes."""
        out: dict[str, Any] = {
            "type": self.type,
            "message": self.message,
            "stack": self.stack,
            "non_retryable": self.non_retryable,
            "kind": self.kind,
        }
        if self.details:
            out["details"] = self.details
        if self.cause is not None:
            out["cause"] = self.cause.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        """Rebuild a failure from :meth:`to_dict` output."""
        cause = data.get("cause")
        return cls(
            type=str(data.get("type", "Error")),
            message=str(data.get("message", "")),
            stack=str(data.get("stack", "")),
            non_retryable=bool(data.get("non_retryable", False)),
            kind=str(data.get("kind", "ApplicationError")),
            details=dict(data.get("details") or {}),
            cause=cls.from_dict(cause) if isinstance(cause, dict) else None,
        )

    def describe(self) -> str:
        """One line per failure in the cause chain: ``type: message``."""
        lines = [f"{self.type}: {self.message}"]
        if self.cause is not None:
            lines.append("caused by " + self.cause.describe())
        return "\n".join(lines)


class FailureError(MainspringError):
    """A failure that can be recorded in history and raised again on the other side."""

    def __init__(self, message: str | None = None, *, failure: Failure | None = None) -> None:
        super().__init__(message)
        self.failure = failure

    @property
    def cause_failure(self) -> Failure | None:
        """The recorded failure this error was rebuilt from, if any."""
        return self.failure


class ApplicationError(FailureError):
    """An error raised by user code, with retry meaning.

    Raised in an activity, it fails the attempt: retried under the retry policy unless
    ``non_retryable`` is set or ``type`` is listed in ``non_retryable_error_types``.
    Raised in workflow code, it fails the workflow (any other exception only fails the
    workflow task, which is retried, so a bug fix can resume the run).
    """

    def __init__(
        self,
        message: str,
        *details: Any,
        type: str | None = None,
        non_retryable: bool = False,
        next_retry_delay: timedelta | None = None,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self.type = type
        self.details = list(details)
        self.non_retryable = non_retryable
        self.next_retry_delay = next_retry_delay


class TimeoutFailure(FailureError):
    """An activity attempt or the whole activity ran out of time.

    Raise the relevant timeout (``start_to_close_timeout``, ``schedule_to_close_timeout``,
    ``heartbeat_timeout``) or heartbeat more often.
    """

    def __init__(
        self, message: str | None = None, *, timeout_type: str = "", failure: Failure | None = None
    ) -> None:
        super().__init__(message, failure=failure)
        self.timeout_type = timeout_type


class CancelledFailure(FailureError):
    """The operation was cancelled."""


class TerminatedFailure(FailureError):
    """The workflow was terminated."""


class ActivityError(FailureError):
    """An activity failed after its last attempt; ``cause`` holds why.

    Catch it in the workflow to handle the failure, or let it propagate to fail the
    workflow.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        activity_type: str = "",
        activity_id: str = "",
        attempt: int = 0,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self.activity_type = activity_type
        self.activity_id = activity_id
        self.attempt = attempt


# --------------------------------------------------------------------------- client side


class WorkflowAlreadyStartedError(MainspringError):
    """A workflow with this id is already running.

    Pick another id, wait for the running one to finish, or pass
    ``id_conflict_policy="use_existing"`` to get a handle to the running workflow.
    """

    def __init__(self, workflow_id: str, run_id: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} is already running (run {run_id}); pass "
            'id_conflict_policy="use_existing" to attach to it, or choose another id'
        )
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowNotFoundError(MainspringError):
    """No workflow with this id exists. Check the id (``mainspring workflow list``)."""


class WorkflowClosedError(MainspringError):
    """The workflow has already closed, so it cannot take a signal, query or cancel."""


class WorkflowFailureError(MainspringError):
    """The workflow did not complete successfully; ``cause`` holds why."""

    def __init__(self, message: str, *, status: str, failure: Failure | None) -> None:
        super().__init__(message)
        self.status = status
        self.failure = failure
        self.__cause__ = failure_to_error(failure) if failure is not None else None

    @property
    def cause(self) -> BaseException | None:
        """The error that closed the workflow, rebuilt from its recorded failure."""
        return self.__cause__


class WorkflowResultTimeoutError(MainspringError, TimeoutError):
    """The workflow did not close within the given timeout; it is still running."""


class QueryTimeoutError(MainspringError, TimeoutError):
    """No worker answered the query in time.

    Check that a worker serving this workflow's task queue is running.
    """


class QueryFailedError(MainspringError):
    """The query handler raised, or the workflow has no query of that name."""


class NondeterminismError(MainspringError):
    """Workflow code no longer matches its recorded history.

    The run is blocked, not failed: restore the code that recorded the history, or guard
    the change with ``workflow.patched("change-id")``, and the run resumes.
    """


class PayloadError(MainspringError):
    """A value cannot be converted to or from a payload."""


class PayloadTooLargeError(PayloadError):
    """A payload exceeds the size limit.

    Store large data elsewhere and pass a reference, or raise the limit
    (``Client.connect(..., max_payload_size=...)``).
    """


class StoreError(MainspringError):
    """The database cannot be used as a Mainspring store."""


class StoreUnavailableError(StoreError):
    """The database could not be reached, or the connection to it was lost, or it takes
    no writes just now: the same operation may succeed later.

    :attr:`maybe_saved` is ``False`` when the operation surely changed nothing (it was
    never sent, or the database refused it), ``True`` when it may have been committed
    (the answer to its commit was lost).
    """

    def __init__(self, message: str | None = None, *, maybe_saved: bool = True) -> None:
        super().__init__(message)
        self.maybe_saved = maybe_saved


class StoreClosedError(StoreError):
    """The store was closed; open another with ``Client.connect()``."""


class SchemaVersionError(StoreError):
    """The database was written by a newer Mainspring; upgrade Mainspring to open it."""


class NotAMainspringDatabaseError(StoreError):
    """The database holds tables that are not Mainspring's; point ``--db`` elsewhere."""


class WorkerError(MainspringError):
    """The worker is misconfigured."""


class InvalidNameError(MainspringError, ValueError):
    """A workflow id, task queue or name breaks the rule every store keeps: a non-empty
    string of at most 1,000 bytes of UTF-8, without the NUL character."""


# --------------------------------------------------------------------------- conversion


def error_to_failure(exc: BaseException) -> Failure:
    """Record ``exc`` (and its cause chain) as a :class:`Failure`."""
    return _to_failure(exc, depth=0)


# A failure is recorded in history (and in the run's row when it ends the run), so its
# text is kept to a size that history can afford: the head of a message, the head and
# the tail of a stack (its last frames say where it was raised).
MAX_FAILURE_MESSAGE = 16 * 1024  # characters
MAX_FAILURE_STACK = 32 * 1024  # characters


def _cut_text(text: str, limit: int, *, keep_tail: bool = False) -> str:
    """``text`` if at most ``limit`` characters, else its head (and tail) around a note
    saying how much was left out."""
    if len(text) <= limit:
        return text
    if keep_tail:
        half = limit // 2
        return f"{text[:half]}\n… [{len(text) - 2 * half:,} characters cut] …\n{text[-half:]}"
    return f"{text[:limit]}… [{len(text) - limit:,} more characters cut]"


def _to_failure(exc: BaseException, depth: int) -> Failure:
    if isinstance(exc, FailureError) and exc.failure is not None:
        return exc.failure  # rebuilt from history: keep the original record
    failure = _record(exc, depth)
    message = _cut_text(failure.message, MAX_FAILURE_MESSAGE)
    stack = _cut_text(failure.stack, MAX_FAILURE_STACK, keep_tail=True)
    if message is failure.message and stack is failure.stack:
        return failure
    return dataclasses.replace(failure, message=message, stack=stack)


def _record(exc: BaseException, depth: int) -> Failure:
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False))
    cause_exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    cause = None
    if isinstance(exc, FailureError) and exc.failure is not None and cause_exc is None:
        cause = exc.failure.cause
    elif cause_exc is not None and depth < 20:
        cause = _to_failure(cause_exc, depth + 1)
    if isinstance(exc, ApplicationError):
        details: dict[str, Any] = {}
        if exc.details:
            details["details"] = exc.details
        if exc.next_retry_delay is not None:
            details["next_retry_delay"] = exc.next_retry_delay.total_seconds()
        return Failure(
            type=exc.type or "ApplicationError",
            message=exc.message,
            stack=stack,
            non_retryable=exc.non_retryable,
            kind="ApplicationError",
            details=details,
            cause=cause,
        )
    if isinstance(exc, TimeoutFailure):
        return Failure(
            type="TimeoutError",
            message=exc.message,
            stack=stack,
            kind="TimeoutError",
            details={"timeout_type": exc.timeout_type},
            cause=cause,
        )
    if isinstance(exc, ActivityError):
        return Failure(
            type="ActivityError",
            message=exc.message,
            stack=stack,
            kind="ActivityError",
            details={
                "activity_type": exc.activity_type,
                "activity_id": exc.activity_id,
                "attempt": exc.attempt,
            },
            cause=cause,
        )
    if isinstance(exc, FailureError):
        kind = type(exc).__name__
        return Failure(type=kind, message=exc.message, stack=stack, kind=kind, cause=cause)
    return Failure(
        type=type(exc).__name__,
        message=str(exc),
        stack=stack,
        kind="ApplicationError",
        cause=cause,
    )


def failure_to_error(failure: Failure) -> FailureError:
    """Rebuild the error a :class:`Failure` records, with its cause chain."""
    err: FailureError
    if failure.kind == "TimeoutError":
        err = TimeoutFailure(
            failure.message,
            timeout_type=str(failure.details.get("timeout_type", "")),
            failure=failure,
        )
    elif failure.kind == "ActivityError":
        err = ActivityError(
            failure.message,
            activity_type=str(failure.details.get("activity_type", "")),
            activity_id=str(failure.details.get("activity_id", "")),
            attempt=int(failure.details.get("attempt", 0)),
            failure=failure,
        )
    elif failure.kind == "CancelledFailure":
        err = CancelledFailure(failure.message, failure=failure)
    elif failure.kind == "TerminatedFailure":
        err = TerminatedFailure(failure.message, failure=failure)
    else:
        delay = failure.details.get("next_retry_delay")
        err = ApplicationError(
            failure.message,
            *list(failure.details.get("details", [])),
            type=failure.type,
            non_retryable=failure.non_retryable,
            next_retry_delay=timedelta(seconds=float(delay)) if delay is not None else None,
            failure=failure,
        )
    if failure.cause is not None:
        err.__cause__ = failure_to_error(failure.cause)
    return err
