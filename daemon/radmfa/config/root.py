"""The whole file: :class:`Config` assembled from one module per section, and the checks that
span sections.

Every problem is reported as ``FILE:LINE: key.path: what is wrong`` so an admin can jump to it.
Unknown keys are errors (with a did-you-mean), durations accept ``90``, ``"90s"``, ``"15m"``,
``"12h"``, ``"30d"``, and YAML 1.1 surprises (``no`` -> False, ``0644`` -> 420, duplicate keys)
are caught instead of silently changing a value. Problems are listed by line; those on one line
in the order the sections are read below, so that order is part of the behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from radmfa.config.attempts import (
    LOCKOUT_KEYS,
    RATE_LIMITS_KEYS,
    LockoutConfig,
    RateLimitsConfig,
    parse_lockout,
    parse_rate_limits,
)
from radmfa.config.audit import AUDIT_KEYS, AuditConfig, parse_audit
from radmfa.config.clients import ClientConfig, parse_clients
from radmfa.config.ldap import LDAP_KEYS, LdapConfig, parse_ldap
from radmfa.config.load import Document, Section, Value, readable_by_others
from radmfa.config.local_users import LOCAL_USERS_KEYS, LocalUsersConfig, parse_local_users
from radmfa.config.monitoring import (
    LOGGING_KEYS,
    LoggingConfig,
    MetricsConfig,
    parse_logging,
    parse_metrics,
)
from radmfa.config.otp import OTP_KEYS, OtpConfig, parse_otp
from radmfa.config.policy import (
    TRUSTED_DEVICES_KEYS,
    PolicyConfig,
    TrustedDevicesConfig,
    parse_policy,
    parse_trusted_devices,
)
from radmfa.config.portal import PortalConfig, parse_portal
from radmfa.config.radius import (
    RADIUS_KEYS,
    ListenAddress,
    RadiusConfig,
    TlsListener,
    parse_listen,
    parse_listen_tls,
    parse_radius,
)
from radmfa.config.store import STORE_KEYS, StoreConfig, parse_store
from radmfa.config.usernames import USERNAMES_KEYS, UsernamesConfig, parse_usernames
from radmfa.radius.replyattrs import ReplyDictionary, load_reply_dictionary

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "TOP_KEYS",
    "Config",
    "ConfigError",
    "format_problems",
    "load_config",
    "parse_config",
]


DEFAULT_CONFIG_PATH = "/etc/radmfa/radmfa.yaml"


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
    #: Things that work but deserve a look (short secrets, cleartext LDAP), each as
    #: ``FILE:LINE: key.path: message``; the daemon logs them at startup.
    warnings: tuple[str, ...] = ()
    metrics: MetricsConfig | None = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    trusted_devices: TrustedDevicesConfig = field(default_factory=TrustedDevicesConfig)
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    usernames: UsernamesConfig = field(default_factory=UsernamesConfig)
    #: FreeRADIUS-format dictionary files read after radmfa's own (policy ``reply`` names).
    dictionary: tuple[str, ...] = ()
    #: The self-service portal; None: off.
    portal: PortalConfig | None = None
    #: RadSec listeners (RFC 6614); their clients are the entries with ``certificate``.
    listen_tls: tuple[TlsListener, ...] = ()


class ConfigError(Exception):
    """One or more problems; ``problems`` holds the ``FILE:LINE: key.path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


TOP_KEYS = (
    "listen",
    "clients",
    "ldap",
    "local_users",
    "store",
    "otp",
    "lockout",
    "radius",
    "logging",
    "metrics",
    "policy",
    "trusted_devices",
    "rate_limits",
    "audit",
    "usernames",
    "dictionary",
    "portal",
    "listen_tls",
)


# -- loading ---------------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Parse and validate ``path``; raise :class:`ConfigError` listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: cannot read: not UTF-8 text (byte {exc.start})"]) from exc
    mode = readable_by_others(source)
    base_dir = Path(path).absolute().parent
    return parse_config(text, source=source, base_dir=base_dir, readable_by_others=mode)


def parse_config(
    text: str,
    source: str = "<string>",
    base_dir: str | Path = ".",
    *,
    readable_by_others: int | None = None,
) -> Config:
    """:func:`load_config` for YAML already in memory; relative paths start at ``base_dir``.
    ``readable_by_others``: the file's mode when every user can read it (secrets in it are
    then worth a warning)."""
    doc = Document(text, source, str(Path(base_dir).absolute()))
    root = doc.root(TOP_KEYS) if not doc.report.errors else None
    if root is None:  # a syntax error, or not a mapping: nothing more to say
        raise ConfigError(doc.report.errors)
    listen = parse_listen(root)
    listen_tls = parse_listen_tls(root)
    clients = parse_clients(root)
    _radsec(root, listen_tls, clients)
    ldap, local_users = _directory(root)
    otp_section = root.section("otp", OTP_KEYS)
    otp = parse_otp(otp_section)
    password_only = otp_section.get("allow_password_only") if otp.allow_password_only else None
    if readable_by_others is not None and doc.inline_secrets:
        _warn_inline_secrets(doc.inline_secrets, source, readable_by_others)
    dictionaries = _Dictionaries(root)
    portal = parse_portal(root)
    config = Config(
        source=source,
        listen=listen,
        clients=clients,
        ldap=ldap,
        local_users=local_users,
        store=parse_store(root.section("store", STORE_KEYS)),
        otp=otp,
        lockout=parse_lockout(root.section("lockout", LOCKOUT_KEYS)),
        radius=parse_radius(root.section("radius", RADIUS_KEYS)),
        logging=parse_logging(root.section("logging", LOGGING_KEYS)),
        metrics=parse_metrics(root),  # before warnings: it may add one
        policy=_policy(root, clients, ldap, password_only, dictionaries, portal),  # may warn
        trusted_devices=parse_trusted_devices(
            root.section("trusted_devices", TRUSTED_DEVICES_KEYS)
        ),
        rate_limits=parse_rate_limits(root.section("rate_limits", RATE_LIMITS_KEYS)),
        audit=parse_audit(root.section("audit", AUDIT_KEYS)),
        usernames=parse_usernames(root.section("usernames", USERNAMES_KEYS)),
        dictionary=dictionaries.paths,
        portal=portal,
        warnings=tuple(doc.report.warnings),
        listen_tls=listen_tls,
    )
    if doc.report.errors:
        raise ConfigError(doc.report.errors)
    return config


def format_problems(err: ConfigError) -> str:
    """A count, then one ``FILE:LINE: key.path: message`` per line (so editors can jump)."""
    count = len(err.problems)
    noun = "problem" if count == 1 else "problems"
    return "\n".join([f"the configuration has {count} {noun}:", *err.problems])


# -- checks between sections ------------------------------------------------------------------


def _directory(root: Section) -> tuple[LdapConfig | None, LocalUsersConfig | None]:
    """Exactly one of ``ldap`` and ``local_users`` checks passwords."""
    ldap_value, local_value = root.get("ldap"), root.get("local_users")
    if ldap_value is None and local_value is None:
        root.error(
            "ldap",
            "missing: configure ldap to check passwords against your directory "
            "(or local_users for a demo or lab)",
        )
    elif ldap_value is not None and local_value is not None:
        root.error("local_users", "give either ldap or local_users, not both")
    ldap_section = ldap_value.as_section(LDAP_KEYS) if ldap_value is not None else None
    local_section = local_value.as_section(LOCAL_USERS_KEYS) if local_value is not None else None
    ldap = parse_ldap(ldap_section) if ldap_section is not None else None
    local_users = parse_local_users(local_section) if local_section is not None else None
    return ldap, local_users


class _Dictionaries:
    """The ``dictionary`` option: FreeRADIUS-format files, read with radmfa's own (which
    alone are read only when a rule has reply attributes to check against them)."""

    def __init__(self, root: Section) -> None:
        value = root.get("dictionary")
        items: list[Value] | None = None
        if value is not None:  # a path or a list of paths
            items = value.as_list() if isinstance(value.node, yaml.SequenceNode) else [value]
        self.items = [(path, item) for item in items or () if (path := item.as_path())]
        self.paths = tuple(path for path, _item in self.items)
        self._loaded: ReplyDictionary | None = None
        self._tried = False
        if self.items:  # named files are checked whether or not a rule needs them
            self()

    def __call__(self) -> ReplyDictionary | None:
        if not self._tried:
            self._tried = True
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> ReplyDictionary | None:
        for path, item in self.items:
            try:
                load_reply_dictionary([path])  # one at a time: blame the right line
            except OSError as e:
                item.error(f"cannot read {path}: {e.strerror or e}")
                return None
            except ValueError as e:
                item.error(f"not a dictionary radmfa can read: {e}")
                return None
        return load_reply_dictionary(self.paths)


def _radsec(
    root: Section, listeners: tuple[TlsListener, ...], clients: tuple[ClientConfig, ...]
) -> None:
    """A RadSec listener needs a client entry with ``certificate`` to answer anyone, and such an
    entry is unused without a listener."""
    radsec = [client for client in clients if client.certificate is not None]
    if listeners and not radsec and not _declares_certificate(root.get("clients")):
        root.error(
            "listen_tls",
            "no client has a certificate: section, so every RadSec connection would be "
            "refused; add a client entry with certificate: {name: ...} (see radmfa.yaml)",
        )
    if radsec and not listeners and "listen_tls" not in root:
        root.warn(
            "clients",
            f"{radsec[0].name} is a RadSec client (certificate:) but listen_tls is not set, "
            "so it cannot connect",
        )


def _declares_certificate(value: Value | None) -> bool:
    """Whether some ``clients`` entry has a ``certificate`` key, valid or not (an invalid one
    has its own problem; no second one about it)."""
    node = value.node if value is not None else None
    if not isinstance(node, yaml.SequenceNode):
        return value is None  # no clients at all: that problem is reported already
    return any(
        isinstance(item, yaml.MappingNode)
        and any(getattr(key, "value", None) == "certificate" for key, _ in item.value)
        for item in node.value
    )


def _policy(
    root: Section,
    clients: tuple[ClientConfig, ...],
    ldap: LdapConfig | None,
    password_only: Value | None,
    dictionaries: _Dictionaries,
    portal: PortalConfig | None,
) -> PolicyConfig:
    """``policy``; ``password_only`` is ``otp.allow_password_only`` when it is set true."""
    groups_problem = None
    if ldap is not None and ldap.user_dn:
        groups_problem = (
            "group rules need search-then-bind (ldap.base_dn with bind_dn): group searches "
            "run on the service account's connection, and a direct bind (ldap.user_dn) has none"
        )
    return parse_policy(
        root,
        client_names={client.name for client in clients},
        groups_problem=groups_problem,
        password_only=password_only,
        dictionary=dictionaries,
        public_url=portal.public_url if portal is not None else None,
    )


def _warn_inline_secrets(secrets: list[Value], source: str, mode: int) -> None:
    """Secrets written in a file every user can read: one warning, at the first of them."""
    count = f"{len(secrets)} secrets" if len(secrets) > 1 else "a secret"
    secrets[0].warn(
        f"this file holds {count} and every user of this host can read it (mode {mode:04o}); "
        f"chmod o-r {source} (e.g. root:radmfa 0640), or move the secrets to *_file or "
        "*_credential keys"
    )
