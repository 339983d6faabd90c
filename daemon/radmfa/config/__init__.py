"""YAML -> frozen, typed settings, one module per section of the file.

:mod:`~radmfa.config.load` reads YAML with line numbers (``FILE:LINE: key.path: message``
problems, typed accessors, limits); each section module owns its dataclasses, its key list
and its parser; :mod:`~radmfa.config.root` assembles :class:`Config` from them and holds the
checks between sections. Everything other modules need is importable from here.
"""

from radmfa.config.attempts import (
    LockoutConfig,
    RateLimitsConfig,
    SourceLimitConfig,
    UserLimitConfig,
)
from radmfa.config.audit import AuditConfig
from radmfa.config.clients import RADSEC_SECRET, CertificateMatch, ClientConfig
from radmfa.config.factors import (
    DEFAULT_SENDS_PER_HOUR_TOTAL,
    MAX_REPLY_MESSAGE,
    BackupCodesConfig,
    CodeDelivery,
    CommandConfig,
    EmailConfig,
    EmergencyConfig,
    HotpConfig,
    SmsConfig,
    SmtpConfig,
    WebhookConfig,
)
from radmfa.config.ldap import AD_GROUP_FILTER, DEFAULT_GROUP_FILTER, LdapConfig, LdapGroupsConfig
from radmfa.config.load import parse_duration
from radmfa.config.local_users import LocalUsersConfig
from radmfa.config.monitoring import LoggingConfig, MetricsConfig
from radmfa.config.otp import OtpConfig, TotpConfig
from radmfa.config.policy import (
    MAC_STATION_NAS,
    MAC_STATION_UNKNOWN,
    GraceConfig,
    Mfa,
    PolicyConfig,
    PolicyRule,
    RuleOutcome,
    TrustedDevicesConfig,
    fold_name,
)
from radmfa.config.portal import PortalConfig, PortalTls
from radmfa.config.radius import (
    ListenAddress,
    RadiusConfig,
    TlsListener,
    check_tls_files,
    parse_listen_address,
)
from radmfa.config.root import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    format_problems,
    load_config,
    parse_config,
)
from radmfa.config.store import StoreConfig
from radmfa.config.usernames import UsernamesConfig

__all__ = [
    "AD_GROUP_FILTER",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_GROUP_FILTER",
    "DEFAULT_SENDS_PER_HOUR_TOTAL",
    "MAC_STATION_NAS",
    "MAC_STATION_UNKNOWN",
    "MAX_REPLY_MESSAGE",
    "RADSEC_SECRET",
    "AuditConfig",
    "BackupCodesConfig",
    "CertificateMatch",
    "ClientConfig",
    "CodeDelivery",
    "CommandConfig",
    "Config",
    "ConfigError",
    "EmailConfig",
    "EmergencyConfig",
    "GraceConfig",
    "HotpConfig",
    "LdapConfig",
    "LdapGroupsConfig",
    "ListenAddress",
    "LocalUsersConfig",
    "LockoutConfig",
    "LoggingConfig",
    "MetricsConfig",
    "Mfa",
    "OtpConfig",
    "PolicyConfig",
    "PolicyRule",
    "PortalConfig",
    "PortalTls",
    "RadiusConfig",
    "RateLimitsConfig",
    "RuleOutcome",
    "SmsConfig",
    "SmtpConfig",
    "SourceLimitConfig",
    "StoreConfig",
    "TlsListener",
    "TotpConfig",
    "TrustedDevicesConfig",
    "UserLimitConfig",
    "UsernamesConfig",
    "WebhookConfig",
    "check_tls_files",
    "fold_name",
    "format_problems",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_listen_address",
]
