"""The line `mainspring workflow describe` prints for each unfinished activity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mainspring import PendingActivity, PendingActivityState
from mainspring._cli_common import pending_dict, pending_text
from mainspring.errors import Failure

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def _activity(**changes: object) -> PendingActivity:
    fields: dict[str, object] = {
        "seq": 4,
        "activity_type": "call_llm",
        "task_queue": "agents",
        "state": PendingActivityState.STARTED,
        "attempt": 3,
        "maximum_attempts": 0,
        "scheduled_time": NOW - timedelta(minutes=5),
        "next_attempt_time": None,
        "worker": "box-7:4242:ab12cd34",
        "lease_expires": NOW + timedelta(seconds=30),
        "deadline": None,
        "last_failure": Failure(type="RateLimitError", message="429\nretry later"),
        "heartbeat_details": [],
        "cancel_requested": False,
    }
    fields.update(changes)
    return PendingActivity(**fields)  # type: ignore[arg-type]


def test_a_running_activity_names_its_worker_and_its_last_failure() -> None:
    text = pending_text(_activity(), NOW).plain
    assert text.startswith("call_llm, attempt 3: running on box-7:4242:ab12cd34 (lease until ")
    assert text.endswith("; last failure: RateLimitError: 429")  # its first line only


def test_a_lapsed_lease_says_the_worker_was_lost() -> None:
    lapsed = _activity(lease_expires=NOW - timedelta(seconds=1), last_failure=None)
    text = pending_text(lapsed, NOW).plain
    assert "running on box-7:4242:ab12cd34 (its lease ran out at " in text
    assert text.endswith(": that worker was lost, and another takes it over)")


def test_a_queued_activity_names_its_queue_and_a_cancel_request() -> None:
    queued = _activity(
        state=PendingActivityState.SCHEDULED,
        attempt=1,
        maximum_attempts=5,
        worker=None,
        lease_expires=None,
        last_failure=None,
        cancel_requested=True,
    )
    assert pending_text(queued, NOW).plain == (
        "call_llm, attempt 1 of 5: waiting for a worker of task queue 'agents', cancel requested"
    )


def test_as_json_every_time_is_iso_8601() -> None:
    data = pending_dict(_activity(deadline=NOW + timedelta(days=1)))
    assert data["state"] == "STARTED"
    assert data["lease_expires"] == "2026-11-27T12:00:30+00:00"
    assert data["deadline"] == "2026-11-28T12:00:00+00:00"
    assert data["next_attempt_time"] is None
    assert data["last_failure"]["message"] == "429\nretry later"
    assert "stack" not in data["last_failure"]
