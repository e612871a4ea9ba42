"""The line `mainspring workflow describe` prints for each unfinished activity."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mainspring import PendingActivity, PendingActivityState
from mainspring._cli_common import fmt_time, pending_dict, pending_text
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
    assert text.endswith(
        ": this attempt timed out, its worker lost or too slow; the next maintenance pass "
        "of any worker fails it, and the retry policy decides what follows)"
    )


def test_a_queued_activity_shows_its_deadline_and_when_it_has_passed() -> None:
    queued = _activity(
        state=PendingActivityState.SCHEDULED,
        worker=None,
        lease_expires=None,
        last_failure=None,
        able_workers=1,
    )
    soon = pending_text(replace(queued, deadline=NOW + timedelta(hours=1)), NOW).plain
    when = fmt_time(NOW + timedelta(hours=1))  # in this machine's time zone
    assert soon.endswith(f"waiting for a worker of task queue 'agents' (must finish by {when})")
    late = pending_text(replace(queued, deadline=NOW - timedelta(hours=1)), NOW).plain
    assert "(past its deadline 20" in late


def test_control_characters_in_users_text_are_escaped() -> None:
    hostile = _activity(
        activity_type="call\x1b[2J", last_failure=Failure(type="E", message="\x1b[31mred\x07")
    )
    text = pending_text(hostile, NOW).plain
    assert "\x1b" not in text and "\x07" not in text
    assert text.startswith("call\\x1b[2J, attempt 3")
    assert text.endswith("; last failure: E: \\x1b[31mred\\x07")


def test_a_queued_activity_names_its_queue_and_a_cancel_request() -> None:
    queued = _activity(
        state=PendingActivityState.SCHEDULED,
        attempt=1,
        maximum_attempts=5,
        worker=None,
        lease_expires=None,
        last_failure=None,
        cancel_requested=True,
        able_workers=2,
    )
    assert pending_text(queued, NOW).plain == (
        "call_llm, attempt 1 of 5: waiting for a worker of task queue 'agents', cancel requested"
    )


def test_a_queued_activity_no_live_worker_serves_says_so() -> None:
    queued = _activity(
        state=PendingActivityState.SCHEDULED, worker=None, lease_expires=None, last_failure=None
    )
    assert pending_text(queued, NOW).plain == (
        "call_llm, attempt 3: waiting for a worker of task queue 'agents' (no live worker "
        "there registers call_llm: start one that does)"
    )


def test_as_json_every_time_is_iso_8601() -> None:
    data = pending_dict(_activity(deadline=NOW + timedelta(days=1)))
    assert data["state"] == "STARTED"
    assert data["lease_expires"] == "2026-11-27T12:00:30+00:00"
    assert data["deadline"] == "2026-11-28T12:00:00+00:00"
    assert data["next_attempt_time"] is None
    assert data["last_failure"]["message"] == "429\nretry later"
    assert "stack" not in data["last_failure"]
