"""One structured line per decision: who, from where, what was decided, why, how long it took.

Never a password, code or secret. Values are escaped so a User-Name with CR/LF cannot forge
log lines.
"""

from __future__ import annotations

from twisted.logger import Logger

from radmfa.auth.model import AccessRequest, Decision


def sanitize(value: str | bytes | None, limit: int = 128) -> str:
    """Printable, single-line, bounded rendering of untrusted text for logs."""
    if value is None:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    out = []
    for ch in value[:limit]:
        if ch.isprintable() and ch not in '"\\':
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii") if ch != '"' else '\\"')
    text = "".join(out)
    if len(value) > limit:
        text += "..."
    return text


_log = Logger(namespace="radmfa.decision")


class DecisionLog:
    def record(self, request: AccessRequest, decision: Decision, elapsed: float) -> None:
        user = decision.user if decision.user is not None else request.user_name
        _log.info(
            'decision={outcome} reason={reason} user="{user}" client={client} src={src} '
            'nas_id="{nas_id}" station="{station}" method={method} factor={factor} '
            "ms={ms:.1f}",
            outcome=decision.outcome.value,
            reason=decision.reason.value,
            user=sanitize(user),
            client=sanitize(request.client_name),
            src=request.client_address,
            nas_id=sanitize(request.nas_identifier),
            station=sanitize(request.calling_station_id),
            method=decision.method or "-",
            factor=decision.factor or "-",
            ms=elapsed * 1000.0,
        )
