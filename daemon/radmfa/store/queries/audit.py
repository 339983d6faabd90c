"""The audit trail: appended in batches, queried with every filter in one statement, pruned
oldest first in small batches."""

from __future__ import annotations

from collections.abc import Sequence

from radmfa.store.engines.base import Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import AuditEvent, AuditQuery
from radmfa.store.queries.base import Queries

__all__ = ["AuditQueries"]

#: The fields of an AuditEvent, in the order of the columns below.
_FIELDS = (
    "at", "kind", "user", "reason", "outcome", "client", "src", "nas_id", "station", "method",
    "factor", "trusted_device", "rule", "latency_ms", "actor", "action", "before", "after",
)  # fmt: skip
# Statements spelled out in full (no string building), so every query is a reviewable literal.
INSERT_AUDIT = Statement(
    "INSERT INTO audit (at, kind, username, reason, outcome, client, src, nas_id, station, "
    "method, factor, trusted_device, rule, latency_ms, actor, action, before, after) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Every filter is in the statement; a NULL parameter switches its condition off (typed, so
#: PostgreSQL knows what NULL it is).
QUERY_AUDIT = Statement(
    "SELECT id, at, kind, username, reason, outcome, client, src, nas_id, station, method, "
    "factor, trusted_device, rule, latency_ms, actor, action, before, after FROM audit "
    "WHERE (CAST(:user AS TEXT) IS NULL OR username = :user) "
    "AND (CAST(:since AS DOUBLE PRECISION) IS NULL OR at >= :since) "
    "AND (CAST(:until AS DOUBLE PRECISION) IS NULL OR at < :until) "
    "AND (CAST(:kind AS TEXT) IS NULL OR kind = :kind) "
    "AND (CAST(:outcome AS TEXT) IS NULL OR (kind = 'auth' AND outcome = :outcome)) "
    "AND (CAST(:reason AS TEXT) IS NULL OR (kind = 'auth' AND reason = :reason) "
    "     OR (kind <> 'auth' "
    "         AND {find}(lower(coalesce(reason, '')), lower(CAST(:reason AS TEXT))) > 0)) "
    "ORDER BY at DESC, id DESC LIMIT :limit"
)
#: ``LIMIT`` without a limit, in a spelling both databases read: the largest 64-bit integer.
_NO_LIMIT = 2**63 - 1
PRUNE_AUDIT = Statement(
    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ? ORDER BY at, id LIMIT ?)"
)


class AuditQueries(Queries):
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        rows = [
            (
                e.at, e.kind, e.user, e.reason, e.outcome, e.client, e.src, e.nas_id, e.station,
                e.method, e.factor, bool(e.trusted_device), e.rule, e.latency_ms, e.actor,
                e.action, e.before, e.after,
            )
            for e in events
        ]  # fmt: skip
        if rows:

            def work(tx: Transaction) -> None:
                tx.many(INSERT_AUDIT, rows)

            self._engine.transaction(f"appending {len(rows)} audit row(s)", work)

    def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        params = {
            "user": query.user,
            "since": query.since,
            "until": query.until,
            "kind": query.kind,
            "outcome": query.outcome,
            "reason": query.reason,
            "limit": _NO_LIMIT if query.limit is None else max(0, query.limit),
        }
        rows = self._engine.read("reading the audit trail", QUERY_AUDIT, params)
        events = []
        for row in reversed(rows):
            event_id, *values = row
            fields = dict(zip(_FIELDS, values, strict=True))
            fields["trusted_device"] = bool(fields["trusted_device"])
            events.append(AuditEvent(**fields, event_id=int(event_id)))
        return events

    def prune_audit(self, before: float, limit: int) -> int:
        return self._engine.write("pruning the audit trail", PRUNE_AUDIT, (before, max(0, limit)))
