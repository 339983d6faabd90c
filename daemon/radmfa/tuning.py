"""Interpreter settings for a long-running server process: the garbage collector, and how
long a thread may hold the GIL while another waits.

Garbage collector. CPython's defaults suit short scripts: a young-generation pass every 700 net
allocations, and full passes over every tracked object. Measured in the daemon at 64 outstanding
logins: a young pass ran every two or three logins and walked the objects of every request in
flight (about 10% of the CPU of a login), and each full pass walked the ~80,000 objects of the
loaded program (modules, functions, classes, configuration) for 35-95 ms, which was the whole
p99 latency tail. Reference counting frees almost everything a request makes; the collector is
only there for reference cycles, so it can run far less often.

GIL switch interval. The store and audit threads hand results back and forth with the
reactor thread. A thread that wants the GIL while the reactor thread is busy in Python
waits until the reactor blocks in a system call or, at the latest, for the switch interval:
5 ms by default, longer than a whole login. At 0.5 ms, p99 at 1,500 logins/s (2 workers)
went from 4.7 to 3.2 ms and from 5.0 to 4.5 ms in two runs of alternating rounds; throughput
at 64 outstanding moved by less than the noise (-2.5%); 0.2 ms cost 8% of it.
"""

from __future__ import annotations

import gc
import sys

#: Net allocations between young passes (CPython: 700); the other two stay at their defaults.
YOUNG_THRESHOLD = 50_000
#: Seconds a thread may hold the GIL while another waits for it (CPython: 0.005).
SWITCH_INTERVAL = 0.0005


def settle_heap() -> None:
    """Once the daemon has started: collect, then move everything that exists to the permanent
    generation (``gc.freeze``), so full passes only walk what requests create; and let the
    young generation grow before it is examined."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def shorten_gil_switch() -> None:
    """Let a waiting thread (the store's, with a login's answer) have the GIL sooner."""
    sys.setswitchinterval(SWITCH_INTERVAL)
