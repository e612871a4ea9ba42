"""How a process adopts readings of the database server's clock (no I/O: the readings
are given, and the machine's clocks are stand-ins)."""

from __future__ import annotations

import logging

import pytest

from mainspring.store import _pg_clock
from mainspring.store._pg_clock import FAIR_READING, UNREAD_WARNING, ServerClock


class Machine:
    """A machine's two clocks: ``steady`` (never set) and ``wall`` (what it says)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steady, self.wall = 500.0, 1000.0
        monkeypatch.setattr(_pg_clock, "_steady", lambda: self.steady)
        monkeypatch.setattr(_pg_clock, "_wall", lambda: self.wall)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    return Machine(monkeypatch)


def test_before_any_reading_it_reads_the_machines_clock(machine: Machine) -> None:
    c = ServerClock("db")
    assert c.now() == 1000.0
    machine.steady += 5
    assert c.now() == 1005.0


def test_a_reading_sets_the_time_to_the_servers_at_its_midpoint(machine: Machine) -> None:
    c = ServerClock("db")
    assert c.adopt(server=2000.0, before=500.0, after=500.02, wall=1000.01)
    assert c.uncertainty == pytest.approx(0.01)
    machine.steady = 510.01
    assert c.now() == pytest.approx(2010.0)


def test_setting_the_machines_clock_does_not_move_the_time(
    machine: Machine, caplog: pytest.LogCaptureFixture
) -> None:
    c = ServerClock("db")
    c.adopt(server=1000.0, before=500.0, after=500.0, wall=1000.0)
    machine.wall -= 3600  # someone sets the machine's clock an hour back
    machine.steady += 10
    assert c.now() == 1010.0
    with caplog.at_level(logging.WARNING, "mainspring.store"):
        assert c.adopt(server=1010.0, before=510.0, after=510.0, wall=machine.wall + 10)
    assert c.now() == 1010.0
    assert caplog.messages == [
        "this machine's clock was set 3600.0 s back; Mainspring keeps time by the clock "
        "of PostgreSQL at db, so its leases, timers and deadlines are unaffected"
    ]


def test_a_slow_reading_or_a_clock_going_back_is_not_used(machine: Machine) -> None:
    c = ServerClock("db")
    assert not c.adopt(server=9000.0, before=500.0, after=500.0 + FAIR_READING + 0.1, wall=0)
    assert not c.adopt(server=9000.0, before=500.0, after=499.0, wall=0)
    assert c.uncertainty is None and c.now() == 1000.0 and c.unread == 2


def test_noise_within_the_readings_uncertainty_leaves_the_offset_alone(machine: Machine) -> None:
    c = ServerClock("db")
    c.adopt(server=1000.0, before=499.99, after=500.01, wall=1000.0)  # offset 500 ± 0.01
    assert c.adopt(server=2000.005, before=1499.99, after=1500.01, wall=2000.0)
    assert c.offset == 500.0


def test_a_more_precise_reading_replaces_a_rougher_one(machine: Machine) -> None:
    c = ServerClock("db")
    c.adopt(server=1000.0, before=499.5, after=500.5, wall=1000.0)  # 500 ± 0.5
    c.adopt(server=2000.3, before=1500.0, after=1500.002, wall=2000.0)  # 500.299 ± 0.001
    assert c.offset == pytest.approx(500.299)
    assert c.uncertainty == pytest.approx(0.001)


def test_a_drift_beyond_both_uncertainties_is_followed_quietly(
    machine: Machine, caplog: pytest.LogCaptureFixture
) -> None:
    c = ServerClock("db")
    c.adopt(server=1000.0, before=499.999, after=500.001, wall=1000.0)
    with caplog.at_level(logging.WARNING, "mainspring.store"):
        c.adopt(server=2000.05, before=1499.999, after=1500.001, wall=2000.0)  # 50 ms
    assert c.offset == pytest.approx(500.05)
    assert caplog.text == ""


def test_a_machine_clock_off_is_reported_once_and_the_servers_moving_again(
    machine: Machine, caplog: pytest.LogCaptureFixture
) -> None:
    c = ServerClock("db.example:5432/app")
    with caplog.at_level(logging.WARNING, "mainspring.store"):
        c.adopt(server=1000.0, before=500.0, after=500.0, wall=1100.0)  # 100 s ahead
        c.adopt(server=2000.0, before=1500.0, after=1500.0, wall=2100.0)
        c.adopt(server=2930.0, before=2500.0, after=2500.0, wall=3100.0)  # a failover
    assert c.now() == pytest.approx(machine.steady + 430.0)
    assert caplog.messages == [
        "this machine's clock is 100.0 s ahead of that of PostgreSQL at db.example:5432/app; "
        "Mainspring keeps its leases, timers and deadlines by the server's clock, so it "
        "works on, but fix this machine's clock (NTP) for everything else",
        "the clock of PostgreSQL at db.example:5432/app moved 70.0 s back (a failover to a "
        "server whose clock differs?); Mainspring follows it",
    ]


def test_a_steady_clock_that_missed_a_sleep_is_put_right_without_blaming_the_server(
    machine: Machine, caplog: pytest.LogCaptureFixture
) -> None:
    c = ServerClock("db")
    c.adopt(server=1000.0, before=500.0, after=500.0, wall=1000.0)
    machine.steady += 10  # then the machine sleeps 600 s, which the steady clock misses
    machine.wall += 610
    assert c.now() == 1010.0  # 600 s behind, until the next reading
    with caplog.at_level(logging.INFO, "mainspring.store"):
        c.adopt(server=1610.0, before=510.0, after=510.0, wall=1610.0)
    assert c.now() == 1610.0
    assert caplog.messages == [
        "this machine's steady clock parted from the clock of PostgreSQL at db by 600.0 s "
        "(did the machine sleep?); put right"
    ]


def test_readings_that_keep_failing_are_reported_once_and_the_recovery(
    machine: Machine, caplog: pytest.LogCaptureFixture
) -> None:
    c = ServerClock("db")
    with caplog.at_level(logging.INFO, "mainspring.store"):
        for _ in range(UNREAD_WARNING + 3):
            c.missed("cannot reach PostgreSQL")
        assert c.adopt(server=1000.0, before=500.0, after=500.0, wall=1000.0)
    assert caplog.messages == [
        f"could not read the clock of PostgreSQL at db {UNREAD_WARNING} times in a row "
        "(cannot reach PostgreSQL); keeping time by this machine's clock as it stood when "
        "the store opened until a reading succeeds",
        "read the clock of PostgreSQL at db again",
    ]
