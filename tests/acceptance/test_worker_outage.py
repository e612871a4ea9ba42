"""`mainspring worker` asked to stop while its PostgreSQL has gone silent: it exits
within its promised bounds instead of waiting out connect timeouts and watchdogs."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from mainspring import Client
from tests import _pg
from tests.acceptance.cli_agent import TASK_QUEUE, Greeter
from tests.integration.test_live_wakeups import SilentLink

AGENT = Path(__file__).with_name("cli_agent.py")

pytestmark = pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())


async def test_sigterm_while_the_database_is_silent_exits_promptly() -> None:
    with _pg.fresh_database() as url:
        link = SilentLink()
        parts = urlsplit(url)
        port = await link.start(parts.hostname or "127.0.0.1", parts.port or 5432)
        via = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mainspring",
            "worker",
            str(AGENT),
            "--db",
            via,
            "--graceful-shutdown-timeout",
            "1",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        log: list[str] = []
        try:
            while line := (await proc.stderr.readline()).decode():
                log.append(line)
                if "serving task queue" in line:
                    break
            else:
                raise AssertionError("worker exited before serving:\n" + "".join(log))
            drain = asyncio.ensure_future(_collect(proc.stderr, log))
            # a run it decided and keeps in memory: sticky to it, so stopping hands it over
            async with await Client.connect(url) as client:
                h = await client.start_workflow(Greeter.run, "x", id="g", task_queue=TASK_QUEUE)
                assert await h.query(Greeter.status) == "waiting"
            link.silent = True
            proc.send_signal(signal.SIGTERM)
            # a guard: without the bound on the hand-off, 50 s and more (a connect
            # timeout, then the 30 s watchdog, then a second hand-off)
            assert await asyncio.wait_for(proc.wait(), 20) == 0, "".join(log)
            await drain
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await link.stop()
    text = "".join(log)
    assert "could not hand this worker's runs to other workers" in text, text
    assert "stopped" in text and "Traceback" not in text, text


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := (await stream.readline()).decode():
        into.append(line)
