"""How an LDAP answer is judged, the same for every engine: a bind's result becomes a
:class:`Verdict` (the credentials are right, wrong, or the server could not judge them), a
search's result whether it answered at all. Pure: no sockets, no engine.

The input is an ldap3 ``SAFE_SYNC`` ``(status, result, response, request)`` tuple: the ldap3
engine hands over what it got, the libldap engine builds one from libldap's answer
(:mod:`radmfa.directory.pooled`), so one rule judges both.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AD_DIAGNOSTICS",
    "INVALID_CREDENTIALS",
    "REJECTION_CODES",
    "SIZE_LIMIT_EXCEEDED",
    "SUCCESS",
    "TRANSIENT_CODES",
    "LdapAnswer",
    "SearchAnswer",
    "Verdict",
    "ad_diagnostic",
    "interpret_bind",
    "interpret_search",
]

# LDAP result codes (RFC 4511 appendix A) that are judged specially.
SUCCESS = 0
SIZE_LIMIT_EXCEEDED = 4
INVALID_CREDENTIALS = 49
#: busy, unavailable, other: the server did not judge the request; try the next one (L-07).
TRANSIENT_CODES = frozenset({51, 52, 80})
#: Bind answers that mean "these credentials do not get in": noSuchObject, invalidDNSyntax,
#: inappropriateAuthentication, invalidCredentials, insufficientAccessRights, unwillingToPerform.
REJECTION_CODES = frozenset({32, 34, 48, INVALID_CREDENTIALS, 50, 53})

#: Active Directory puts ``data <hex>`` in the diagnostic message of a failed bind (code 49).
#: 530..775 are only sent when the password was right; the outcome stays INVALID_CREDENTIALS
#: and the reason goes to ``detail`` for logs (account-state policy comes later, L-14).
AD_DIAGNOSTICS: Mapping[str, str] = {
    "525": "no_such_user",
    "52e": "bad_password",
    "530": "logon_hours_restricted",
    "531": "workstation_restricted",
    "532": "password_expired",
    "533": "account_disabled",
    "701": "account_expired",
    "773": "password_must_change",
    "775": "account_locked",
}
_AD_DATA = re.compile(r"\bdata ([0-9a-f]{3,8})\b", re.IGNORECASE)


def ad_diagnostic(message: str | None) -> str | None:
    """The reason behind an Active Directory bind failure (``... data 532, ...``), if any."""
    if not message:
        return None
    match = _AD_DATA.search(message)
    if match is None:
        return None
    code = match.group(1).lower()
    return AD_DIAGNOSTICS.get(code, f"ad_data_{code}")


class Verdict(enum.Enum):
    OK = "ok"
    #: The server judged the credentials and said no (final, never fail over).
    REJECTED = "rejected"
    #: No answer, or busy/unavailable/other: this server cannot help now, try the next.
    TRANSIENT = "transient"
    #: Any other answer: final, and not the user's fault (UNAVAILABLE).
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class LdapAnswer:
    verdict: Verdict
    code: int | None = None
    description: str = ""
    #: For REJECTED: ``bad_password`` or an Active Directory reason such as ``password_expired``.
    detail: str = ""


def _unpack(ret: object) -> tuple[object, dict[str, Any] | None, list[dict[str, Any]]]:
    """Split a SAFE_SYNC ``(status, result, response, request)`` tuple.

    Anything else (a bare bool from a non-thread-safe strategy) is a programming error: a
    bool cannot be trusted to mean success, so refuse it loudly.
    """
    if not isinstance(ret, tuple) or len(ret) != 4:
        raise TypeError(
            f"expected a SAFE_SYNC (status, result, response, request) tuple, got {ret!r}"
        )
    status, result, response, _request = ret
    if result is not None and not isinstance(result, dict):
        raise TypeError(f"unexpected LDAP result {result!r}")
    return status, result, list(response or ())


def interpret_bind(ret: object) -> LdapAnswer:
    """Judge a SAFE_SYNC ``bind()`` return value.

    Success needs ``status is True`` *and* result code 0, in a ``bindResponse``. The tuple
    itself is always truthy: ``if conn.bind():`` would accept every password (L-02). ldap3
    takes any result carrying the bind's message ID as its answer, a search's or an extended
    operation's too: such an answer is the server's error, never a success nor a wrong
    password.
    """
    status, result, _ = _unpack(ret)
    if result is None:
        return LdapAnswer(Verdict.TRANSIENT, description="no result")
    kind = result.get("type")
    if kind != "bindResponse":
        return LdapAnswer(Verdict.ERROR, None, f"a {kind or 'result'} in answer to a bind")
    code = result.get("result")
    description = str(result.get("description") or "")
    if status is True and code == SUCCESS:
        return LdapAnswer(Verdict.OK, code, description)
    if not isinstance(code, int):
        return LdapAnswer(Verdict.ERROR, None, f"malformed result {result!r}")
    if code in TRANSIENT_CODES:
        return LdapAnswer(Verdict.TRANSIENT, code, description)
    if code in REJECTION_CODES:
        if code == INVALID_CREDENTIALS:
            reason = ad_diagnostic(str(result.get("message") or "")) or "bad_password"
        else:
            reason = f"bind_refused_{description or code}"
        return LdapAnswer(Verdict.REJECTED, code, description, reason)
    if code == SUCCESS:  # status not True with result 0: inconsistent, refuse
        return LdapAnswer(Verdict.ERROR, code, "status is not True despite result 0")
    return LdapAnswer(Verdict.ERROR, code, description)


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    verdict: Verdict
    code: int | None = None
    description: str = ""
    #: ``searchResEntry`` results only (referrals and continuations dropped, L-09).
    entries: tuple[dict[str, Any], ...] = ()
    #: The server stopped at a size limit: more entries exist than were returned.
    truncated: bool = False


def interpret_search(ret: object) -> SearchAnswer:
    """Judge a SAFE_SYNC ``search()`` return value by its result code.

    sizeLimitExceeded counts as answered (and ``truncated``): more entries exist.
    """
    status, result, response = _unpack(ret)
    if result is None:
        return SearchAnswer(Verdict.TRANSIENT, description="no result")
    code = result.get("result")
    description = str(result.get("description") or "")
    entries = tuple(item for item in response if item.get("type") == "searchResEntry")
    # ldap3's search status is True only when entries came back, so it is not the success
    # flag here: result code 0 with status False is a successful search that found nobody.
    del status
    if code == SUCCESS:
        return SearchAnswer(Verdict.OK, code, description, entries)
    if code == SIZE_LIMIT_EXCEEDED:
        return SearchAnswer(Verdict.OK, code, description, entries, truncated=True)
    if code in TRANSIENT_CODES:
        return SearchAnswer(Verdict.TRANSIENT, code, description)
    return SearchAnswer(Verdict.ERROR, code if isinstance(code, int) else None, description)
