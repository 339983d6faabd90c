"""YAML -> frozen, typed settings.

Every problem is reported as ``FILE:LINE: key.path: what is wrong`` so an admin can jump to it.
Unknown keys are errors (with a did-you-mean), durations accept ``90``, ``"90s"``, ``"15m"``,
``"12h"``, ``"30d"``, and YAML 1.1 surprises (``no`` -> False, ``0644`` -> 420, duplicate keys)
are caught instead of silently changing a value.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_CONFIG_PATH = "/etc/radmfa/radmfa.yaml"

OtpMode = Literal["append", "challenge", "auto"]
Algorithm = Literal["SHA1", "SHA256", "SHA512"]


@dataclass(frozen=True)
class ListenAddress:
    host: str  # "127.0.0.1", "::1", "0.0.0.0", "::"
    port: int


@dataclass(frozen=True)
class ClientConfig:
    name: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    secret: bytes
    require_message_authenticator: bool = True
    #: With require_message_authenticator off: drop requests carrying Proxy-State but no
    #: Message-Authenticator (BlastRADIUS, FreeRADIUS's limit_proxy_state).
    limit_proxy_state: bool = True


@dataclass(frozen=True)
class LdapConfig:
    servers: tuple[str, ...]
    user_dn: str | None = None  # direct bind template with {username}
    base_dn: str | None = None  # search-then-bind
    user_filter: str = "(uid={username})"
    bind_dn: str | None = None
    bind_password: str | None = None  # from bind_password or bind_password_file
    start_tls: bool = False
    ca_file: str | None = None
    timeout: float = 3.0
    #: Threads (and so concurrent LDAP operations) per daemon process.
    pool_size: int = 16
    #: After a connection failure, skip that server for this long while others answer.
    retry_after: float = 10.0


@dataclass(frozen=True)
class LocalUsersConfig:
    """A users file (``name:scrypt-hash`` lines) for demos and labs without a directory."""

    path: str


@dataclass(frozen=True)
class StoreConfig:
    path: str = "/var/lib/radmfa/radmfa.sqlite3"
    key_file: str = "/var/lib/radmfa/secret.key"


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
    challenge_prompt: str = "Enter your verification code: "
    #: Users without a token pass on their password alone (logged as password_only).
    allow_password_only: bool = False


@dataclass(frozen=True)
class LockoutConfig:
    max_failures: int = 5
    duration: float = 300.0


@dataclass(frozen=True)
class RadiusConfig:
    #: Floor on how soon an Access-Reject leaves (FreeRADIUS reject_delay); hides which check
    #: failed and slows guessing. 0 disables.
    reject_delay: float = 1.0
    #: How long answered requests stay in the duplicate cache (RFC 5080: 5-30 s).
    duplicate_window: float = 30.0
    #: Requests being processed at once; beyond this new requests are dropped so clients retry.
    max_in_flight: int = 2048
    #: Deadline for one request; past it the request is rejected (kept under client timers).
    request_timeout: float = 10.0


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Config:
    source: str  # the file it came from, for messages
    listen: tuple[ListenAddress, ...]
    clients: tuple[ClientConfig, ...]
    ldap: LdapConfig | None
    local_users: LocalUsersConfig | None
    store: StoreConfig
    otp: OtpConfig
    lockout: LockoutConfig
    radius: RadiusConfig
    logging: LoggingConfig


class ConfigError(Exception):
    """One or more problems; ``problems`` holds the ``FILE:LINE: key.path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: str | Path) -> Config:
    """Parse and validate ``path``; raise :class:`ConfigError` listing every problem."""
    raise NotImplementedError  # implemented below by the config loader


def parse_duration(value: object) -> float:
    """``30`` / ``"30s"`` / ``"15m"`` / ``"12h"`` / ``"30d"`` -> seconds; ValueError otherwise."""
    raise NotImplementedError
