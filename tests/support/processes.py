"""Stopping the servers tests and the benchmark start: politely first, then for sure."""

from __future__ import annotations

import signal
import subprocess


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM and wait up to ``timeout`` seconds; SIGKILL if it is still running."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(proc)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL (as a crash would) and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)
