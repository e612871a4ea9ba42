"""A worker process killed with SIGKILL never says it stopped: once it has not said it
is alive for a while, it is listed as lost, and the one that replaces it as serving."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mainspring import Client, WorkerState
from mainspring.store import _worker_ops
from tests.acceptance.test_cli import AGENT


def _serving_worker(db: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "worker", str(AGENT), "--db", db],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # logged once it has registered and polls
        if "serving task queue" in line:
            return proc
    raise AssertionError("the worker exited before serving")


async def test_a_killed_worker_is_listed_as_lost(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_worker_ops, "WORKER_LOST", 1.0)  # as this reader judges it
    first = _serving_worker(db_url)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = _serving_worker(db_url)
    try:
        async with await Client.connect(db_url) as client:
            deadline = time.monotonic() + 30
            while True:
                found = {w.identity.split(":")[1]: w.state for w in await client.list_workers()}
                if found.get(str(first.pid)) is WorkerState.LOST:
                    break
                assert time.monotonic() < deadline, found
                time.sleep(0.05)  # the lost worker's silence is what is awaited
            assert found[str(second.pid)] is not WorkerState.STOPPED  # it serves on
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
        if second.stderr is not None:
            second.stderr.close()
        if first.stderr is not None:
            first.stderr.close()
