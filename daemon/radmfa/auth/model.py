"""Protocol-neutral request and decision objects.

The RADIUS layer turns bytes into an :class:`AccessRequest` and a :class:`Decision` back into
bytes; everything in between (policy, directory, factors) sees only these plain values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AuthMethod(enum.Enum):
    """How the client presented the credential; only PAP carries a password we can check."""

    PAP = "pap"
    CHAP = "chap"
    MSCHAP = "mschap"
    EAP = "eap"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One Access-Request after wire decoding and client authentication.

    ``user_name`` and ``password`` stay raw bytes: the pipeline, not the codec, decides what a
    valid name or password is (strict UTF-8, no control characters) so that no library can
    silently repair them.
    """

    user_name: bytes | None
    password: bytes | None = field(repr=False)
    method: AuthMethod
    state: bytes | None
    client_name: str
    client_address: str
    nas_identifier: str | None = None
    nas_ip_address: str | None = None
    calling_station_id: str | None = None
    packet_id: int = 0
    #: The Request Authenticator: with the client, address and Identifier it tells a
    #: retransmission from a new request across processes (empty: unknown).
    authenticator: bytes = field(default=b"", repr=False)


class Outcome(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    CHALLENGE = "challenge"
    #: No reply at all, so the client fails over (e.g. overload).
    DROP = "drop"


class Reason(enum.Enum):
    """Internal reason codes: logged and counted, never shown to the user."""

    OK = "ok"
    BAD_USER_NAME = "bad_user_name"
    #: A User-Name with a character no key can safely stand for (radmfa.auth.identity).
    UNSAFE_USER_NAME = "unsafe_user_name"
    BAD_PASSWORD_ENCODING = "bad_password_encoding"
    EMPTY_PASSWORD = "empty_password"
    UNSUPPORTED_METHOD = "unsupported_method"
    BAD_PASSWORD = "bad_password"
    NO_SUCH_USER = "no_such_user"
    AMBIGUOUS_USER = "ambiguous_user"
    BAD_OTP = "bad_otp"
    OTP_REPLAY = "otp_replay"
    NO_TOKEN = "no_token"
    LOCKED = "locked"
    BAD_STATE = "bad_state"
    DIRECTORY_UNAVAILABLE = "directory_unavailable"
    STORE_UNAVAILABLE = "store_unavailable"
    CHALLENGE_ISSUED = "challenge_issued"
    #: An out-of-band code was generated and handed to the courier; a challenge asks for it.
    CODE_SENT = "code_sent"
    #: A code was asked for too soon or too often; the challenge says when to retry.
    SEND_LIMITED = "send_limited"
    #: A changed email address or phone number was asked for: a trusted factor must vouch for
    #: it before it gets the code that confirms it.
    ADDRESS_PENDING = "address_pending"
    PASSWORD_ONLY = "password_only"
    #: Accepted on the password alone: the policy exempts the user ...
    EXEMPT = "exempt"
    #: ... an admin suspended the user's second factor (radmfa user suspend) ...
    MFA_SUSPENDED = "mfa_suspended"
    #: ... the device (Calling-Station-Id) is remembered after a login with a second factor ...
    TRUSTED_DEVICE = "trusted_device"
    #: ... or the user has no factor yet and is inside the enrolment grace period.
    GRACE_PERIOD = "grace_period"
    #: ... or (the portal) it has an enrolment link of its own (``radmfa enroll-link``).
    ENROLL_LINK = "enroll_link"
    #: No factor and the grace period is over.
    GRACE_EXPIRED = "grace_expired"
    #: radmfa user disable: refused before any directory traffic.
    USER_DISABLED = "user_disabled"
    #: A policy rule with deny: true.
    POLICY_DENY = "policy_deny"
    #: The user's address is in the rule's deny_from, or not in its allow_from.
    IP_DENIED = "ip_denied"
    IP_NOT_ALLOWED = "ip_not_allowed"
    #: Too many recent failures of this user (rate_limits.user) or from this station/source
    #: (rate_limits.source): refused without a directory bind, not counted.
    THROTTLED = "throttled"
    SOURCE_THROTTLED = "source_throttled"
    #: The directory refuses the account whatever the password (AD data codes,
    #: userAccountControl, accountExpires, ppolicy); never counted as a guess.
    ACCOUNT_DISABLED = "account_disabled"
    ACCOUNT_LOCKED = "account_locked"
    ACCOUNT_EXPIRED = "account_expired"
    PASSWORD_EXPIRED = "password_expired"
    PASSWORD_MUST_CHANGE = "password_must_change"
    ACCOUNT_RESTRICTED = "account_restricted"
    OVERLOADED = "overloaded"
    #: A retransmission of a request another worker or daemon is deciding (dropped) or
    #: refused lately (refused again, without a bind and without counting it twice).
    DUPLICATE = "duplicate"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the pipeline decided; the RADIUS layer encodes it."""

    outcome: Outcome
    reason: Reason
    user: str | None = None
    reply_message: str | None = None
    state: bytes | None = None
    #: How the second factor was presented: "append", "challenge", or None.
    method: str | None = None
    #: Which factor proved possession ("totp", ...), for the audit line.
    factor: str | None = None
    #: The policy rule that decided ("default" when none matched), for logs and audit.
    rule: str | None = None
    #: Accepted without a second factor because the device is remembered.
    trusted_device: bool = False
    #: Reply attributes of the deciding rule (wire bytes), sent with an Access-Accept only.
    attributes: tuple[bytes, ...] = ()


GENERIC_REJECT_MESSAGE = "Authentication failed."
