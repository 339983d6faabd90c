"""The ``otp`` section: how the code is asked for (append, challenge, auto), TOTP, and the
prompts; the other factors' subsections are parsed by :mod:`radmfa.config.factors`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

from radmfa.config import factors as fc
from radmfa.config.factors import (
    BackupCodesConfig,
    EmailConfig,
    EmergencyConfig,
    HotpConfig,
    SmsConfig,
)
from radmfa.config.load import Section

__all__ = ["OTP_KEYS", "TOTP_KEYS", "OtpConfig", "TotpConfig", "parse_otp"]

OtpMode = Literal["append", "challenge", "auto"]
Algorithm = Literal["SHA1", "SHA256", "SHA512"]


@dataclass(frozen=True)
class TotpConfig:
    digits: int = 6
    period: int = 30
    algorithm: Algorithm = "SHA1"
    skew: int = 1
    issuer: str = "radmfa"


@dataclass(frozen=True)
class OtpConfig:
    mode: OtpMode = "auto"
    totp: TotpConfig = field(default_factory=TotpConfig)
    challenge_timeout: float = 120.0
    #: Open challenge States per user; a new one beyond it drops that user's oldest.
    max_open_challenges: int = 5
    challenge_prompt: str = "Enter your verification code: "
    #: Users without a token pass on their password alone (logged as password_only).
    allow_password_only: bool = False
    #: The prompt when the user can also ask for a code; {choices}: "email (a***@x.org)".
    choice_prompt: str = "Enter your verification code, or type {choices} to get one: "
    #: "password,email": the text after the last separator may be a keyword (append/auto).
    keyword_separator: str = ","
    hotp: HotpConfig = field(default_factory=HotpConfig)
    backup_codes: BackupCodesConfig = field(default_factory=BackupCodesConfig)
    emergency: EmergencyConfig = field(default_factory=EmergencyConfig)
    email: EmailConfig | None = None
    sms: SmsConfig | None = None
    #: Settings of third-party factors, by factor type (plain data, see docs/factors.md).
    plugins: dict[str, Any] = field(default_factory=dict)


OTP_KEYS = (
    "mode",
    "totp",
    "challenge_timeout",
    "max_open_challenges",
    "challenge_prompt",
    "allow_password_only",
    "choice_prompt",
    "keyword_separator",
    "hotp",
    "backup_codes",
    "emergency",
    "email",
    "sms",
    "plugins",
)
TOTP_KEYS = ("digits", "period", "algorithm", "skew", "issuer")
#: RFC 2865 attributes carry at most 253 bytes; the prompt travels as one Reply-Message.
_MAX_REPLY_MESSAGE = 253


def parse_otp(s: Section) -> OtpConfig:
    d = OtpConfig()
    prompt = s.get_str("challenge_prompt", d.challenge_prompt)
    if len(prompt.encode()) > _MAX_REPLY_MESSAGE:
        s.error(
            "challenge_prompt",
            f"is {len(prompt.encode())} bytes; a RADIUS Reply-Message holds at most 253",
        )
    mode = s.get_choice("mode", d.mode, ("append", "challenge", "auto"), fold=str.lower)
    return OtpConfig(
        mode=cast(OtpMode, mode),
        totp=_totp(s.section("totp", TOTP_KEYS)),
        challenge_timeout=s.get_duration("challenge_timeout", d.challenge_timeout, 10, 600),
        max_open_challenges=s.get_int("max_open_challenges", d.max_open_challenges, 1, 100),
        challenge_prompt=prompt,
        allow_password_only=s.get_bool("allow_password_only", d.allow_password_only),
        **_factor_settings(s, d),
    )


def _factor_settings(s: Section, d: OtpConfig) -> dict[str, Any]:
    """The second factors beyond TOTP (radmfa.config.factors parses them)."""
    separator = s.get_str("keyword_separator", d.keyword_separator)
    if len(separator) != 1 or separator.isalnum() or separator.isspace():
        s.error("keyword_separator", f"must be one punctuation character, not {separator!r}")
        separator = d.keyword_separator
    choice = s.get_str("choice_prompt", d.choice_prompt)
    if "{choices}" not in choice or len(choice.encode()) > _MAX_REPLY_MESSAGE - 80:
        s.error("choice_prompt", "must contain {choices} and stay under 173 bytes")
        choice = d.choice_prompt
    email = s.section("email", fc.EMAIL_KEYS) if "email" in s else None
    sms = s.section("sms", fc.SMS_KEYS) if "sms" in s else None
    return {
        "choice_prompt": choice,
        "keyword_separator": separator,
        "hotp": fc.parse_hotp(s.section("hotp", fc.HOTP_KEYS)),
        "backup_codes": fc.parse_backup_codes(s.section("backup_codes", fc.BACKUP_KEYS)),
        "emergency": fc.parse_emergency(s.section("emergency", fc.EMERGENCY_KEYS)),
        "email": fc.parse_email(email) if email is not None else None,
        "sms": fc.parse_sms(sms) if sms is not None else None,
        "plugins": fc.parse_plugins(s.get("plugins")),
    }


def _totp(s: Section) -> TotpConfig:
    d = TotpConfig()
    digits = s.get_int("digits", d.digits, 6, 10)
    if digits not in (6, 8):
        s.warn("digits", f"most authenticator apps only show 6 or 8 digits, not {digits}")
    algorithm = s.get_choice("algorithm", d.algorithm, ("SHA1", "SHA256", "SHA512"), fold=str.upper)
    return TotpConfig(
        digits=digits,
        period=s.get_int("period", d.period, 1, 120),
        algorithm=cast(Algorithm, algorithm),
        skew=s.get_int("skew", d.skew, 0, 10),
        issuer=s.get_str("issuer", d.issuer),
    )
