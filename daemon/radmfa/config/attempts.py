"""The ``lockout`` and ``rate_limits`` sections: how many failed attempts a user, a station or
a source gets, and what happens after them."""

from __future__ import annotations

from dataclasses import dataclass, field

from radmfa.config.load import DAY, Section

__all__ = [
    "LOCKOUT_KEYS",
    "RATE_LIMITS_KEYS",
    "SOURCE_LIMIT_KEYS",
    "USER_LIMIT_KEYS",
    "LockoutConfig",
    "RateLimitsConfig",
    "SourceLimitConfig",
    "UserLimitConfig",
    "parse_lockout",
    "parse_rate_limits",
]


@dataclass(frozen=True)
class LockoutConfig:
    max_failures: int = 5
    duration: float = 300.0
    #: Consecutive failures across lock expiries (until a success or an admin unlock) after
    #: which the account stays locked until ``radmfa user unlock``: NIST SP 800-63B 5.2.2.
    max_total_failures: int = 100


@dataclass(frozen=True)
class UserLimitConfig:
    """Per-user sliding window: after ``free_failures`` failures within ``window``, each
    further attempt waits ``delay`` doubled per failure beyond them, at most ``max_delay``,
    after the last failure. Attempts inside the wait are refused without a directory bind and
    do not count."""

    window: float = 900.0
    free_failures: int = 3
    delay: float = 1.0
    max_delay: float = 60.0

    def wait(self, failures: int) -> float:
        """Seconds to wait after the last of ``failures`` failures in the window."""
        if failures < self.free_failures or self.delay <= 0:
            return 0.0
        exponent = min(failures - self.free_failures, 30)
        return min(self.delay * (2**exponent), self.max_delay)


@dataclass(frozen=True)
class SourceLimitConfig:
    """Failures from one station (Calling-Station-Id) or, without one, one packet source:
    beyond ``max_failures`` within ``window`` its requests are refused (password spraying)."""

    window: float = 300.0
    max_failures: int = 30


@dataclass(frozen=True)
class RateLimitsConfig:
    user: UserLimitConfig = field(default_factory=UserLimitConfig)
    source: SourceLimitConfig = field(default_factory=SourceLimitConfig)

    @property
    def longest_window(self) -> float:
        return max(self.user.window, self.source.window)


LOCKOUT_KEYS = ("max_failures", "duration", "max_total_failures")
RATE_LIMITS_KEYS = ("user", "source")
USER_LIMIT_KEYS = ("window", "free_failures", "delay", "max_delay")
SOURCE_LIMIT_KEYS = ("window", "max_failures")


def parse_lockout(s: Section) -> LockoutConfig:
    d = LockoutConfig()
    # NIST SP 800-63B 5.2.2: no more than 100 consecutive failed attempts.
    max_failures = s.get_int("max_failures", d.max_failures, 1, 100)
    max_total = s.get_int("max_total_failures", d.max_total_failures, 1, 100)
    if max_total < max_failures:
        s.error("max_total_failures", f"must be at least max_failures ({max_failures})")
    return LockoutConfig(
        max_failures=max_failures,
        duration=s.get_duration("duration", d.duration, 1),
        max_total_failures=max_total,
    )


def parse_rate_limits(s: Section) -> RateLimitsConfig:
    u = s.section("user", USER_LIMIT_KEYS)
    du = UserLimitConfig()
    user = UserLimitConfig(
        window=u.get_duration("window", du.window, 1, 7 * DAY),
        # NIST SP 800-63B 5.2.2: at most 100 consecutive failed attempts on one account.
        free_failures=u.get_int("free_failures", du.free_failures, 0, 100),
        delay=u.get_duration("delay", du.delay, 0, 3600),
        max_delay=u.get_duration("max_delay", du.max_delay, 0, DAY),
    )
    if user.max_delay < user.delay:
        u.error("max_delay", "must be at least delay")
    src = s.section("source", SOURCE_LIMIT_KEYS)
    ds = SourceLimitConfig()
    source = SourceLimitConfig(
        window=src.get_duration("window", ds.window, 1, DAY),
        max_failures=src.get_int("max_failures", ds.max_failures, 0, 1_000_000),
    )
    return RateLimitsConfig(user=user, source=source)
