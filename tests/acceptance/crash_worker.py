"""A worker process of the crash test: ``python crash_worker.py DB_URL LEDGER_DIR``.

Serves :mod:`crash_agent` on its task queue until SIGTERM (graceful) or SIGKILL (the
point of the test). Once polling, it creates ``LEDGER_DIR/ready-<pid>`` so the test
knows it is up. If the test process dies without stopping it, it stops itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import crash_agent  # this script's folder is on sys.path when run as a script

from mainspring import Client, Worker


async def stop_when_orphaned(parent: int) -> None:
    """SIGTERM ourselves when the process that started us is gone."""
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


async def main(db_url: str, ledger_dir: str) -> None:
    os.environ[crash_agent.LEDGER_ENV] = ledger_dir
    watchdog = asyncio.create_task(stop_when_orphaned(os.getppid()))
    client = await Client.connect(db_url)
    try:
        worker = Worker(
            client,
            task_queue=crash_agent.TASK_QUEUE,
            workflows=[crash_agent.CrashAgent],
            activities=[crash_agent.step],
            workflow_task_timeout=timedelta(seconds=3),
        )
        await worker.start()
        Path(ledger_dir, f"ready-{os.getpid()}").touch()
        await worker.run()
    finally:
        watchdog.cancel()
        await client.close()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s pid={os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(main(sys.argv[1], sys.argv[2]))
