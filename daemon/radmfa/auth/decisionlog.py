"""One structured line per decision: who, from where, what was decided, why, how long it took.

Never a password, code or secret. Values are escaped so a User-Name with CR/LF cannot forge
log lines.
"""

from __future__ import annotations

from typing import Protocol

from twisted.logger import Logger

from radmfa.auth.model import AccessRequest, Decision
from radmfa.textescape import escape_unprintable


def sanitize(value: str | bytes | None, limit: int = 128) -> str:
    """Printable, single-line, bounded rendering of untrusted text for logs."""
    if value is None:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    text = value[:limit]
    # Nearly every value needs no escaping: checking that in C is much cheaper than the loop.
    if not text.isprintable() or '"' in text or "\\" in text:
        text = escape_unprintable(text, '"\\')  # the line quotes values: escape quotes too
    if len(value) > limit:
        text += "..."
    return text


_log = Logger(namespace="radmfa.decision")


class DecisionObserver(Protocol):
    """Anything that wants to know every decision (log line, metrics, audit trail)."""

    def record(self, request: AccessRequest, decision: Decision, elapsed: float) -> None: ...


class DecisionLog:
    """Writes the decision line. It is rendered here with plain string formatting (one per
    request, on the hot path); the fields also travel in the event for structured output."""

    def record(self, request: AccessRequest, decision: Decision, elapsed: float) -> None:
        user = decision.user if decision.user is not None else request.user_name
        fields = {
            "decision": decision.outcome.value,
            "reason": decision.reason.value,
            "user": sanitize(user),
            "client": sanitize(request.client_name),
            "src": request.client_address,
            "nas_id": sanitize(request.nas_identifier),
            "station": sanitize(request.calling_station_id),
            "method": decision.method or "-",
            "factor": decision.factor or "-",
            "ms": round(elapsed * 1000.0, 1),
            "rule": decision.rule or "-",  # a name from the config, not from the wire
            "trusted_device": decision.trusted_device,
        }
        line = (
            f'decision={fields["decision"]} reason={fields["reason"]} user="{fields["user"]}" '
            f'client={fields["client"]} src={fields["src"]} nas_id="{fields["nas_id"]}" '
            f'station="{fields["station"]}" method={fields["method"]} '
            f"factor={fields['factor']} ms={fields['ms']:.1f} rule={fields['rule']}"
            + (" trusted_device=yes" if decision.trusted_device else "")
        )
        _log.info("{decision_line}", decision_line=line, decision_fields=fields)
