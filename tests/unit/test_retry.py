from __future__ import annotations

import random
from datetime import timedelta

import pytest

from mainspring import RetryPolicy


def test_temporal_defaults() -> None:
    p = RetryPolicy()
    assert p.initial_interval == timedelta(seconds=1)
    assert p.backoff_coefficient == 2.0
    assert p.maximum_attempts == 0
    assert p.maximum_interval is None


def test_backoff_grows_and_is_capped_at_100x_initial() -> None:
    p = RetryPolicy(jitter=0)
    assert [p.backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert p.backoff(50) == 100.0
    capped = RetryPolicy(jitter=0, maximum_interval=timedelta(seconds=5))
    assert capped.backoff(10) == 5.0


def test_jitter_stays_within_bounds() -> None:
    p = RetryPolicy(jitter=0.2)
    rng = random.Random(7)
    delays = [p.backoff(3, rng) for _ in range(200)]
    assert all(3.2 <= d <= 4.8 for d in delays)
    assert len(set(delays)) > 100


def test_should_retry() -> None:
    p = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["BadInput"])
    assert p.should_retry(1, "ValueError", False)
    assert p.should_retry(2, "ValueError", False)
    assert not p.should_retry(3, "ValueError", False)
    assert not p.should_retry(1, "BadInput", False)
    assert not p.should_retry(1, "ValueError", True)
    assert RetryPolicy().should_retry(10_000, "ValueError", False)


def test_round_trip() -> None:
    p = RetryPolicy(
        maximum_attempts=4,
        non_retryable_error_types=["X"],
        jitter=0.1,
        maximum_interval=timedelta(seconds=9),
    )
    assert RetryPolicy.from_dict(p.to_dict()) == RetryPolicy(
        maximum_attempts=4,
        non_retryable_error_types=("X",),
        jitter=0.1,
        maximum_interval=timedelta(seconds=9),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_interval": timedelta(0)},
        {"backoff_coefficient": 0.5},
        {"maximum_attempts": -1},
        {"jitter": 2.0},
        {"maximum_interval": timedelta(milliseconds=1)},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_error_types_must_be_a_list() -> None:
    with pytest.raises(TypeError):
        RetryPolicy(non_retryable_error_types="BadInput")
