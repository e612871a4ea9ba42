"""Retry policies and backoff."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failed activity attempt is retried.

    The defaults are Temporal's: the first retry after 1 s, each next delay doubled, no
    delay above 100 times the first, unlimited attempts. Mainspring adds jitter so many
    runs failing together do not retry in lock-step.

    Attributes:
        initial_interval: Delay before the first retry.
        backoff_coefficient: Factor applied to the delay after each retry (at least 1).
        maximum_interval: Cap on the delay; ``None`` means 100 × ``initial_interval``.
        maximum_attempts: Total attempts allowed, 0 for unlimited.
        non_retryable_error_types: Error type names that are never retried.
        jitter: Fraction (0–1) by which each delay is randomly shortened or lengthened.
    """

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta | None = None
    maximum_attempts: int = 0
    non_retryable_error_types: Sequence[str] = ()
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_interval <= timedelta(0):
            raise ValueError("RetryPolicy.initial_interval must be positive")
        if self.backoff_coefficient < 1:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1")
        if self.maximum_attempts < 0:
            raise ValueError("RetryPolicy.maximum_attempts must be 0 (unlimited) or more")
        if not 0 <= self.jitter <= 1:
            raise ValueError("RetryPolicy.jitter must be between 0 and 1")
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("RetryPolicy.maximum_interval must not be below initial_interval")
        if isinstance(self.non_retryable_error_types, str):
            raise TypeError("RetryPolicy.non_retryable_error_types must be a list of names")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = (self.maximum_interval or self.initial_interval * 100).total_seconds()
        base = self.initial_interval.total_seconds() * self.backoff_coefficient ** max(
            0, min(attempt - 1, 200)
        )
        delay = min(base, cap)
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            delay = max(0.0, delay * (1 + spread))
        return delay

    def should_retry(self, attempt: int, error_type: str, non_retryable: bool) -> bool:
        """Whether a failure of ``error_type`` after ``attempt`` attempts gets another."""
        if non_retryable or error_type in self.non_retryable_error_types:
            return False
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, stored with each scheduled activity."""
        return {
            "initial_interval": self.initial_interval.total_seconds(),
            "backoff_coefficient": self.backoff_coefficient,
            "maximum_interval": (
                self.maximum_interval.total_seconds() if self.maximum_interval else None
            ),
            "maximum_attempts": self.maximum_attempts,
            "non_retryable_error_types": list(self.non_retryable_error_types),
            "jitter": self.jitter,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        """Rebuild a policy from :meth:`to_dict` output."""
        maximum = data.get("maximum_interval")
        return cls(
            initial_interval=timedelta(seconds=float(data["initial_interval"])),
            backoff_coefficient=float(data["backoff_coefficient"]),
            maximum_interval=timedelta(seconds=float(maximum)) if maximum is not None else None,
            maximum_attempts=int(data["maximum_attempts"]),
            non_retryable_error_types=tuple(data.get("non_retryable_error_types", ())),
            jitter=float(data.get("jitter", 0.2)),
        )
