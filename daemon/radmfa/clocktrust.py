"""Whether the server's clock can be trusted with TOTP: a code is only as good as the clock.

Two signs, never a correction (radmfa never moves the clock; an NTP client does):

- :func:`kernel_clock_synchronised`: what the kernel says (``adjtimex`` with no change asked:
  ``TIME_ERROR`` means no time source has disciplined the clock). Checked at start-up, by
  ``check-config`` and as a metric.
- :class:`DriftWatch`: the step offset of each accepted TOTP code (the step it matched minus
  the step of the server's clock). One user's offset says their phone drifts; most users'
  offsets leaning the same way say the server does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections import OrderedDict

from twisted.logger import Logger

__all__ = [
    "CLOCK_UNSYNCHRONISED",
    "DriftWatch",
    "kernel_clock_synchronised",
]

log = Logger(namespace="radmfa.clock")

#: adjtimex's answer when the clock is not synchronised (linux/timex.h).
TIME_ERROR = 5
#: ``struct timex`` is 208 bytes on 64-bit Linux; the call only reads ``modes`` (0: no change).
_TIMEX_SIZE = 512

CLOCK_UNSYNCHRONISED = (
    "the kernel says the system clock is not synchronised (adjtimex: TIME_ERROR); TOTP codes "
    "are checked against it: run an NTP client (systemd-timesyncd, chrony, ntpd)"
)


def kernel_clock_synchronised() -> bool | None:
    """True or False as the kernel says; None where it cannot be asked (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        timex = ctypes.create_string_buffer(_TIMEX_SIZE)  # zeroed: modes = 0, read only
        state = int(libc.adjtimex(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


class DriftWatch:
    """The latest TOTP offset of each of the last ``window`` users who logged in with one.

    :meth:`record` costs a dictionary update and three counters (it runs on accepted codes,
    on the reactor). The server is judged to drift when at least ``min_users`` users are
    known and ``share`` of them matched a step on the same side of the server's own.
    """

    def __init__(self, *, window: int = 200, min_users: int = 20, share: float = 0.75) -> None:
        self.window = window
        self.min_users = min_users
        self.share = share
        self._offsets: OrderedDict[str, int] = OrderedDict()
        self._sides = {-1: 0, 0: 0, 1: 0}
        self._total = 0
        #: -1 or 1 while most users' codes are a step behind or ahead; 0 otherwise.
        self.leaning = 0

    @property
    def users(self) -> int:
        return len(self._offsets)

    @property
    def mean_offset(self) -> float:
        """The mean step offset of the users watched (0.0 with none)."""
        return self._total / len(self._offsets) if self._offsets else 0.0

    def record(self, user: str, offset: int) -> None:
        """An accepted code of ``user`` that matched ``offset`` steps from the server's."""
        old = self._offsets.pop(user, None)
        if old is not None:
            self._forget(old)
        elif len(self._offsets) >= self.window:
            _, oldest = self._offsets.popitem(last=False)
            self._forget(oldest)
        self._offsets[user] = offset
        self._sides[_side(offset)] += 1
        self._total += offset
        self._judge()

    def _forget(self, offset: int) -> None:
        self._sides[_side(offset)] -= 1
        self._total -= offset

    def _judge(self) -> None:
        users = len(self._offsets)
        leaning = 0
        if users >= self.min_users:
            for side in (-1, 1):
                if self._sides[side] >= self.share * users:
                    leaning = side
        if leaning == self.leaning:
            return
        self.leaning = leaning
        if leaning:
            log.warn(
                "the codes of {n} of the last {users} users who logged in with an authenticator "
                "app matched a step {where} the server's clock: the server's clock is likely "
                "{off} by about 30 s (check its time source)",
                n=self._sides[leaning],
                users=users,
                where="after" if leaning > 0 else "before",
                off="slow" if leaning > 0 else "fast",
            )
        else:
            log.info("accepted authenticator codes no longer lean to one side of the clock")


def _side(offset: int) -> int:
    return (offset > 0) - (offset < 0)
