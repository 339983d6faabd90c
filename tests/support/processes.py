"""Stopping the servers tests and the benchmark start: politely first, then for sure; and
freezing one for a while (SIGSTOP), every thread of it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def frozen(pid: int, timeout: float = 10.0) -> Iterator[None]:
    """Process ``pid`` stopped for the block: on entry every thread of it has stopped; SIGCONT
    on exit.

    ``kill(SIGSTOP)`` returns before a multithreaded process has stopped: the kernel wakes one
    of its threads to take the signal, and only once that thread gets a CPU does it stop the
    others. On a loaded machine the rest go on serving meanwhile (slapd answered a search and
    two binds sent after ``kill`` had returned, its own log showing them), so a "frozen
    server" test would see answers by chance.
    """
    os.kill(pid, signal.SIGSTOP)
    try:
        _wait_until_stopped(pid, timeout)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _wait_until_stopped(pid: int, timeout: float) -> None:
    """Poll ``/proc`` until no thread of ``pid`` can run (each stopped, or exiting)."""
    tasks = Path(f"/proc/{pid}/task")
    deadline = time.monotonic() + timeout
    while True:
        states = [_state(stat) for stat in tasks.glob("*/stat")]
        if states and all(state in "tTZX" for state in states):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"process {pid} not stopped after {timeout}s (threads {states})")
        time.sleep(0.001)


def _state(stat: Path) -> str:
    """A thread's state letter (``R``, ``S``, ``T``...); ``X`` for one that is gone."""
    try:
        text = stat.read_text()
    except OSError:
        return "X"
    return text.rpartition(")")[2].split()[0]
