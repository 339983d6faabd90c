"""The ``audit`` section: whether decisions are recorded in the store, for how long, and how
they are batched."""

from __future__ import annotations

from dataclasses import dataclass

from radmfa.config.load import DAY, Section

__all__ = ["AUDIT_KEYS", "AuditConfig", "parse_audit"]


@dataclass(frozen=True)
class AuditConfig:
    enabled: bool = True
    #: Rows older than this are pruned (in small batches, off the event loop); 0: kept.
    retention: float = 365 * DAY
    #: Decisions are queued and written together at most this often ...
    flush_interval: float = 0.1
    #: ... or as soon as this many wait.
    batch_size: int = 250


AUDIT_KEYS = ("enabled", "retention_days", "flush_interval", "batch_size")


def parse_audit(s: Section) -> AuditConfig:
    d = AuditConfig()
    return AuditConfig(
        enabled=s.get_bool("enabled", d.enabled),
        retention=s.get_days("retention_days", d.retention, 100 * 365),
        flush_interval=s.get_duration("flush_interval", d.flush_interval, 0.05, 60),
        batch_size=s.get_int("batch_size", d.batch_size, 1, 100_000),
    )
