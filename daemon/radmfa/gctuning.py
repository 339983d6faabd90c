"""Garbage-collector settings for a long-running server process.

CPython's defaults suit short scripts: a young-generation pass every 700 net allocations, and
full passes over every tracked object. Measured in the daemon at 64 outstanding logins: a
young pass ran every two or three logins and walked the objects of every request in flight
(about 10% of the CPU of a login), and each full pass walked the ~80,000 objects of the loaded
program (modules, functions, classes, configuration) for 35-95 ms, which was the whole p99
latency tail. Reference counting frees almost everything a request makes; the collector is
only there for reference cycles, so it can run far less often.
"""

from __future__ import annotations

import gc

#: Net allocations between young passes (CPython: 700); the other two stay at their defaults.
YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Once the daemon has started: collect, then move everything that exists to the permanent
    generation (``gc.freeze``), so full passes only walk what requests create; and let the
    young generation grow before it is examined."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
