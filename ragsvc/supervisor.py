"""Runs the embedded ingestion worker as a child process and restarts it if it dies.

A separate process, not a thread: a parser crash or a SIGKILL takes down only the worker, and
embedding does not compete with the API's event loop for the GIL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

from ragsvc.settings import Settings

log = logging.getLogger(__name__)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that rebuilds exactly these settings in a child process."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"RAGSVC_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class WorkerSupervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    def _spawn(self) -> None:
        env = settings_env(self.settings)
        env["RAGSVC_AUTO_MIGRATE"] = "false"  # the parent already migrated
        self.proc = subprocess.Popen([sys.executable, "-m", "ragsvc", "worker"], env=env,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        log.info("started ingestion worker pid %s", self.proc.pid)

    def start(self) -> None:
        self._spawn()
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        delay = 1.0
        while not self._stopping:
            await asyncio.sleep(1.0)
            if self.proc and self.proc.poll() is not None and not self._stopping:
                log.error("ingestion worker exited with %s; restarting in %.0f s", self.proc.returncode, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                if not self._stopping:
                    self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _die_with_parent() -> None:
    """Runs in the child before exec: if the API process dies (even by SIGKILL), the kernel sends the
    embedded worker SIGTERM, so it finishes its job and exits instead of living on as an orphan."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
