"""CPU time and peak memory of a server process and its children, from /proc."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(stat: str) -> list[str]:
    """The fields after ``(comm)`` (a command name may hold spaces and parentheses)."""
    return stat[stat.rindex(")") + 2 :].split()


def process_tree(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` and all its descendants (worker processes count towards the server)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(_stat_fields(stat)[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int, *, reaped: bool = False, proc: Path = PROC) -> float:
    """User + system CPU of the process tree so far.

    ``reaped``: also the CPU of descendants that have exited and been waited for (the
    kernel adds it to the parent's cutime/cstime), so a tree whose members come and go
    (PostgreSQL's autovacuum workers, a backend per short connection) never loses the CPU
    its departed members spent: every process is counted once, alive by itself, reaped in
    its parent's total.
    """
    last = 15 if reaped else 13  # utime, stime[, cutime, cstime]
    total = 0
    for member in process_tree(pid, proc):
        try:
            parts = _stat_fields((proc / str(member) / "stat").read_text())
        except OSError:
            continue
        total += sum(int(value) for value in parts[11:last])
    return total / _TICKS


def total_cpu_seconds(pids: Iterable[int], *, reaped: bool = False) -> float:
    """:func:`cpu_seconds` summed over several process trees (two nodes of one service)."""
    return sum(cpu_seconds(pid, reaped=reaped) for pid in pids)


def peak_rss_mb(pid: int, proc: Path = PROC) -> float:
    """Sum of VmHWM (peak resident set) over the process tree, in MB."""
    total_kb = 0
    for member in process_tree(pid, proc):
        try:
            status = (proc / str(member) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024
