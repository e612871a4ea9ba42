"""How a process adopts readings of the database server's clock (no I/O: the readings
are given)."""

from __future__ import annotations

import logging
import time

import pytest

from mainspring.store._pg_clock import FAIR_READING, ServerClock


def test_the_first_reading_sets_the_offset_to_the_midpoint() -> None:
    c = ServerClock("db")
    assert c.adopt(server=1000.0, before=900.0, after=900.02)
    assert c.offset == pytest.approx(99.99)
    assert c.uncertainty == pytest.approx(0.01)
    assert abs(c.now() - (time.time() + 99.99)) < 0.5


def test_a_slow_reading_or_a_clock_going_back_is_not_used() -> None:
    c = ServerClock("db")
    assert not c.adopt(server=1000.0, before=900.0, after=900.0 + FAIR_READING + 0.1)
    assert not c.adopt(server=1000.0, before=900.0, after=899.0)
    assert c.offset == 0.0 and c.uncertainty is None


def test_noise_within_the_readings_uncertainty_leaves_the_offset_alone() -> None:
    c = ServerClock("db")
    c.adopt(server=1000.0, before=999.99, after=1000.01)  # offset 0 ± 0.01
    assert c.adopt(server=2000.005, before=1999.99, after=2000.01)  # 0.005 ± 0.01
    assert c.offset == 0.0


def test_a_more_precise_reading_replaces_a_rougher_one() -> None:
    c = ServerClock("db")
    c.adopt(server=1000.0, before=999.5, after=1000.5)  # 0 ± 0.5
    c.adopt(server=2000.3, before=2000.0, after=2000.002)  # 0.299 ± 0.001
    assert c.offset == pytest.approx(0.299)
    assert c.uncertainty == pytest.approx(0.001)


def test_a_drift_beyond_both_uncertainties_is_followed(caplog: pytest.LogCaptureFixture) -> None:
    c = ServerClock("db")
    c.adopt(server=1000.0, before=999.999, after=1000.001)
    with caplog.at_level(logging.WARNING, "mainspring.store"):
        c.adopt(server=2000.05, before=1999.999, after=2000.001)  # drifted 50 ms
    assert c.offset == pytest.approx(0.05)
    assert caplog.text == ""  # a drift is no news; a jump of over a second is


def test_an_offset_over_a_second_is_reported_once_and_a_later_jump_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = ServerClock("db.example:5432/app")
    with caplog.at_level(logging.WARNING, "mainspring.store"):
        c.adopt(server=1000.0, before=1100.0, after=1100.0)  # this clock: 100 s ahead
        c.adopt(server=2000.0, before=2100.0, after=2100.0)
        c.adopt(server=3000.0, before=3000.0, after=3000.0)  # set right
    assert caplog.messages == [
        "this machine's clock is 100.0 s ahead of that of PostgreSQL at db.example:5432/app; "
        "Mainspring keeps its leases, timers and deadlines by the server's clock, so it "
        "works on, but fix this machine's clock (NTP) for everything else",
        "this machine's clock jumped 100.0 s back against that of PostgreSQL at "
        "db.example:5432/app; Mainspring follows the server's clock",
    ]
