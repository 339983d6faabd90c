"""YAML -> frozen, typed settings.

Every problem is reported as ``FILE:LINE: key.path: what is wrong`` so an admin can jump to it.
Unknown keys are errors (with a did-you-mean), durations accept ``90``, ``"90s"``, ``"15m"``,
``"12h"``, ``"30d"``, and YAML 1.1 surprises (``no`` -> False, ``0644`` -> 420, duplicate keys)
are caught instead of silently changing a value.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from radmfa import policyconfig as pc
from radmfa.configload import (
    Document,
    Section,
    Value,
    format_duration,
    parse_duration,
    placeholders,
    readable_by_others,
)
from radmfa.factorconfig import (
    BackupCodesConfig,
    EmailConfig,
    EmergencyConfig,
    HotpConfig,
    SmsConfig,
)
from radmfa.policyconfig import (
    AuditConfig,
    LdapGroupsConfig,
    PolicyConfig,
    RateLimitsConfig,
    TrustedDevicesConfig,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ClientConfig",
    "Config",
    "ConfigError",
    "LdapConfig",
    "ListenAddress",
    "LocalUsersConfig",
    "LockoutConfig",
    "LoggingConfig",
    "MetricsConfig",
    "OtpConfig",
    "RadiusConfig",
    "StoreConfig",
    "TotpConfig",
    "format_problems",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_listen_address",
]

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
    #: "native": asynchronous client on the reactor, persistent pipelined connections (fast).
    #: "ldap3": ldap3 in a thread pool, a fresh connection per user bind (the reference).
    #: "libldap": OpenLDAP's libldap (python-ldap) on the reactor, the native engine's pools.
    engine: Literal["native", "ldap3", "libldap"] = "native"
    #: Read AD / ppolicy account-state attributes with the user search (search-then-bind) and
    #: refuse disabled, locked and expired accounts without a bind.
    account_state: bool = True
    #: Seconds a user entry found by search-then-bind is reused instead of searching again
    #: (0: off). The user bind still happens every time; see directory/entrycache.py.
    user_cache: float = 0.0
    #: How group membership is read for policy rules (search-then-bind only).
    groups: LdapGroupsConfig = field(default_factory=LdapGroupsConfig)


@dataclass(frozen=True)
class LocalUsersConfig:
    """A users file (``name:scrypt-hash[:group,...]`` lines) for demos and labs without a
    directory; groups may also come from a side file (``group: member member @group``)."""

    path: str
    groups_file: str | None = None


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


@dataclass(frozen=True)
class UsernamesConfig:
    """How a User-Name becomes the one identity behind lockout, tokens and replay state."""

    #: ``CORP\alice`` and ``alice@corp.example`` become ``alice`` (Active Directory accepts
    #: all three for one account, so all three must share one failure counter).
    strip_realm: bool = False


@dataclass(frozen=True)
class LockoutConfig:
    max_failures: int = 5
    duration: float = 300.0
    #: Consecutive failures across lock expiries (until a success or an admin unlock) after
    #: which the account stays locked until ``radmfa user unlock``: NIST SP 800-63B 5.2.2.
    max_total_failures: int = 100


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
    #: Processes sharing the listen sockets (SO_REUSEPORT); the kernel keeps each client
    #: source port on one worker, so retransmissions meet their duplicate cache.
    workers: int = 1


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: "text": one readable line per event; "json": one JSON object per line, for collectors.
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics over HTTP; off unless the ``metrics`` section is given."""

    listen: ListenAddress = ListenAddress("127.0.0.1", 9812)


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


class ConfigError(Exception):
    """One or more problems; ``problems`` holds the ``FILE:LINE: key.path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    root = doc.root(_TOP_KEYS) if not doc.report.errors else None
    if root is None:  # a syntax error, or not a mapping: nothing more to say
        raise ConfigError(doc.report.errors)
    listen = _listen(root)
    clients = _clients(root)
    ldap, local_users = _directory(root)
    otp_section = root.section("otp", _OTP_KEYS)
    otp = _otp(otp_section)
    password_only = otp_section.get("allow_password_only") if otp.allow_password_only else None
    if readable_by_others is not None and doc.inline_secrets:
        _warn_inline_secrets(doc.inline_secrets, source, readable_by_others)
    config = Config(
        source=source,
        listen=listen,
        clients=clients,
        ldap=ldap,
        local_users=local_users,
        store=_store(root.section("store", ("path", "key_file"))),
        otp=otp,
        lockout=_lockout(
            root.section("lockout", ("max_failures", "duration", "max_total_failures"))
        ),
        radius=_radius(root.section("radius", _RADIUS_KEYS)),
        logging=_logging(root.section("logging", ("level", "format"))),
        metrics=_metrics(root),  # before warnings: it may add one
        policy=_policy(root, clients, ldap, password_only),  # before warnings: it may warn
        trusted_devices=pc.parse_trusted_devices(
            root.section("trusted_devices", pc.TRUSTED_DEVICES_KEYS)
        ),
        rate_limits=pc.parse_rate_limits(root.section("rate_limits", pc.RATE_LIMITS_KEYS)),
        audit=pc.parse_audit(root.section("audit", pc.AUDIT_KEYS)),
        usernames=_usernames(root.section("usernames", ("strip_realm",))),
        warnings=tuple(doc.report.warnings),
    )
    if doc.report.errors:
        raise ConfigError(doc.report.errors)
    return config


def _warn_inline_secrets(secrets: list[Value], source: str, mode: int) -> None:
    """Secrets written in a file every user can read: one warning, at the first of them."""
    count = f"{len(secrets)} secrets" if len(secrets) > 1 else "a secret"
    secrets[0].warn(
        f"this file holds {count} and every user of this host can read it (mode {mode:04o}); "
        f"chmod o-r {source} (e.g. root:radmfa 0640), or move the secrets to *_file or "
        "*_credential keys"
    )


def format_problems(err: ConfigError) -> str:
    """A count, then one ``FILE:LINE: key.path: message`` per line (so editors can jump)."""
    count = len(err.problems)
    noun = "problem" if count == 1 else "problems"
    return "\n".join([f"the configuration has {count} {noun}:", *err.problems])


_TOP_KEYS = (
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
)


def _required(section: Section, key: str, message: str) -> Value | None:
    """The value of ``key``, or None after reporting ``missing: message``."""
    value = section.get(key)
    if value is None:
        section.error(key, f"missing: {message}")
    return value


# -- listen ----------------------------------------------------------------------------------

_DEFAULT_LISTEN = (ListenAddress("127.0.0.1", 1812),)
_LISTEN_EXAMPLE = 'write host:port with an IP address, e.g. "127.0.0.1:1812" or "[::1]:1812"'


def parse_listen_address(text: str) -> ListenAddress:
    """``"127.0.0.1:1812"`` or ``"[::1]:1812"`` -> ListenAddress; ValueError says what is wrong."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not host:port; {_LISTEN_EXAMPLE}")
        port, version = rest[1:], 6
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            raise ValueError(f"{text!r} is not host:port; {_LISTEN_EXAMPLE}")
        if ":" in host:
            raise ValueError(f'put an IPv6 address in brackets: "[{host}]:{port}"')
        version = 4
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IP address (host names are not looked up); {_LISTEN_EXAMPLE}"
        ) from None
    if ip.version != version:
        raise ValueError(f"only IPv6 addresses go in brackets; {_LISTEN_EXAMPLE}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} must be a number from 1 to 65535")
    return ListenAddress(str(ip), int(port))


def _listen(root: Section) -> tuple[ListenAddress, ...]:
    value = root.get("listen")
    if value is None:
        return _DEFAULT_LISTEN
    items = value.as_list()
    if items is None:
        return _DEFAULT_LISTEN
    if not items:
        value.error(f"list at least one address to listen on; {_LISTEN_EXAMPLE}")
    taken: dict[ListenAddress, str] = {}
    for item in items:
        text = item.text()
        if text is None:
            continue
        try:
            address = parse_listen_address(text)
        except ValueError as exc:
            item.error(str(exc))
            continue
        clash = _listen_clash(address, taken)
        if clash is not None:
            item.error(clash)
            continue
        taken[address] = item.path
    return tuple(taken)


def _listen_clash(address: ListenAddress, taken: dict[ListenAddress, str]) -> str | None:
    """Why binding ``address`` after ``taken`` would fail, if it would."""
    if address in taken:
        return f"listed twice (also {taken[address]})"
    ip = ipaddress.ip_address(address.host)
    for other, path in taken.items():
        other_ip = ipaddress.ip_address(other.host)
        if other.port != address.port or other_ip.version != ip.version:
            continue
        if ip.is_unspecified or other_ip.is_unspecified:
            wildcard = address.host if ip.is_unspecified else other.host
            return (
                f"overlaps {path}: {wildcard} already means every address, "
                "so the second bind would fail; keep one of them"
            )
    return None


# -- clients ---------------------------------------------------------------------------------

_CLIENT_KEYS = (
    "name",
    "address",
    "secret",
    "secret_file",
    "secret_credential",
    "require_message_authenticator",
    "limit_proxy_state",
)
#: RFC 2865 section 3: the secret should be at least 16 octets.
MIN_SECRET_LENGTH = 16

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _clients(root: Section) -> tuple[ClientConfig, ...]:
    value = _required(root, "clients", "list the RADIUS clients (name, address, secret)")
    items = value.as_list() if value is not None else None
    if items is None:
        return ()
    if value is not None and not items:
        value.error("list at least one RADIUS client (name, address, secret)")
    clients = []
    names: dict[str, str] = {}
    networks: dict[Network, str] = {}
    for item in items:
        section = item.as_section(_CLIENT_KEYS)
        if section is not None:
            client = _client(section, names, networks)
            if client is not None:
                clients.append(client)
    return tuple(clients)


def _client(s: Section, names: dict[str, str], networks: dict[Network, str]) -> ClientConfig | None:
    """One client; ``names`` and ``networks`` hold the earlier ones, to refuse repeats."""
    name_value = _required(s, "name", "give the client a name (it is used in logs)")
    name = name_value.as_str() if name_value is not None else None
    if name is not None:
        if name in names:
            s.error("name", f"{name!r} is already the name of {names[name]}")
        names.setdefault(name, s.path)
    network = _client_network(s)
    if network is not None:
        if network in networks:
            s.error("address", f"{network} is already the address of {networks[network]}")
        networks.setdefault(network, s.path + (f" ({name})" if name else ""))
    secret = _client_secret(s)
    require_ma = s.get_bool("require_message_authenticator", True)
    limit_proxy_state = s.get_bool("limit_proxy_state", True)
    if not require_ma and not limit_proxy_state:
        s.warn(
            "limit_proxy_state",
            "with require_message_authenticator and limit_proxy_state both false this client "
            "is exposed to BlastRADIUS (CVE-2024-3596) forged replies; "
            "keep limit_proxy_state: true",
        )
    if name is None or network is None or secret is None:
        return None
    return ClientConfig(
        name=name,
        network=network,
        secret=secret,
        require_message_authenticator=require_ma,
        limit_proxy_state=limit_proxy_state,
    )


def _client_network(s: Section) -> Network | None:
    value = _required(s, "address", "give the client's IP address or CIDR network")
    text = value.as_str() if value is not None else None
    if value is None or text is None:
        return None
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        value.error(
            f"{text!r} is not an IP address or CIDR network (e.g. 192.0.2.10 or 192.0.2.0/24); "
            "clients are matched by the packet's source address, so host names cannot be used"
        )
        return None
    value.error(f"{text} has host bits set; write the network {loose} (or one address, no prefix)")
    return None


def _client_secret(s: Section) -> bytes | None:
    """Exactly one of ``secret`` / ``secret_file`` / ``secret_credential``; a short secret is a
    warning."""
    given = [key for key in ("secret", "secret_file", "secret_credential") if key in s]
    if len(given) > 1:
        s.error(given[1], f"give {given[0]} or {given[1]}, not both")
        return None
    inline, from_file, credential = (
        s.get("secret"),
        s.get("secret_file"),
        s.get("secret_credential"),
    )
    if inline is not None:
        text = inline.as_str(secret=True)
        secret, where = (text.encode(), inline) if text is not None else (None, inline)
    elif from_file is not None:
        secret, where = _read_secret_file(from_file), from_file
    elif credential is not None:
        secret, where = _read_credential(credential), credential
    else:
        s.error(
            "secret",
            "missing: give the shared secret as secret, or secret_file: PATH, or "
            "secret_credential: NAME (a systemd credential)",
        )
        return None
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        where.warn(
            f"the shared secret is shorter than {MIN_SECRET_LENGTH} characters (RFC 2865 asks for "
            "at least 16) and can be guessed offline from one captured packet; use a long random "
            "one, e.g. from `openssl rand -base64 24`"
        )
    return secret


def _read_secret_file(value: Value) -> bytes | None:
    """The file's contents without the trailing newline; problems are reported on ``value``."""
    path = value.as_path()
    if path is None:
        return None
    try:
        data = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        value.error(f"cannot read {path}: {exc.strerror or exc}")
        return None
    if not data:
        value.error(f"{path} is empty")
        return None
    value.warn_if_others_can_read(path)
    return data


def credentials_directory() -> str | None:
    """``$CREDENTIALS_DIRECTORY``: where systemd puts ``LoadCredential=`` secrets for us."""
    return os.environ.get("CREDENTIALS_DIRECTORY") or None


def _read_credential(value: Value) -> bytes | None:
    """A systemd credential by name: ``$CREDENTIALS_DIRECTORY/NAME``, trailing newline dropped."""
    name = value.as_str()
    if name is None:
        return None
    if "/" in name or name in (".", ".."):
        value.error(f"{name!r} is not a credential name (no '/'); it is the ID in LoadCredential=")
        return None
    hint = f"LoadCredential={name}:/etc/credstore/radmfa-{name}"
    directory = credentials_directory()
    if directory is None:
        value.error(
            f"credential {name!r}: $CREDENTIALS_DIRECTORY is not set, so this only works under "
            f"systemd with {hint} in the unit (outside systemd use a *_file key instead)"
        )
        return None
    path = os.path.join(directory, name)
    try:
        data = Path(path).read_bytes().rstrip(b"\r\n")
    except FileNotFoundError:
        value.error(
            f"credential {name!r} is not in $CREDENTIALS_DIRECTORY ({directory}); "
            f"add {hint} to the unit (systemctl edit radmfa)"
        )
        return None
    except OSError as exc:
        value.error(f"cannot read credential {name!r} ({path}): {exc.strerror or exc}")
        return None
    if not data:
        value.error(f"credential {name!r} ({path}) is empty")
        return None
    return data


# -- password directory: ldap or local_users -------------------------------------------------

_LDAP_KEYS = (
    "servers",
    "user_dn",
    "base_dn",
    "user_filter",
    "bind_dn",
    "bind_password",
    "bind_password_file",
    "bind_password_credential",
    "start_tls",
    "ca_file",
    "timeout",
    "pool_size",
    "retry_after",
    "engine",
    "account_state",
    "user_cache",
    "groups",
)
#: ``ldap.user_cache`` at most: longer would hide directory changes (a disabled account, a
#: group membership removed) for too long.
MAX_USER_CACHE = 3600.0
_LDAP_DEFAULTS = LdapConfig(servers=())
_FILTER_EXAMPLE = '"(uid={username})" or "(&(objectClass=person)(uid={username}))"'


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
    ldap_section = ldap_value.as_section(_LDAP_KEYS) if ldap_value is not None else None
    local_section = (
        local_value.as_section(("path", "groups_file")) if local_value is not None else None
    )
    ldap = _ldap(ldap_section) if ldap_section is not None else None
    local_users = _local_users(local_section) if local_section is not None else None
    return ldap, local_users


def _ldap(s: Section) -> LdapConfig:
    d = _LDAP_DEFAULTS
    servers = _ldap_servers(s)
    user_dn, base_dn, user_filter = _ldap_lookup(s)
    bind_dn, bind_password = _ldap_bind(s, direct_bind="user_dn" in s)
    start_tls = s.get_bool("start_tls", d.start_tls)
    if start_tls and any(url.lower().startswith("ldaps:") for url, _value in servers):
        s.error(
            "start_tls",
            "cannot be used with ldaps:// servers (ldaps:// is TLS from the first byte); "
            "use ldap:// with start_tls: true, or ldaps:// without it",
        )
    if not start_tls:
        for url, value in servers:
            parts = urlsplit(url)
            if parts.scheme.lower() == "ldap" and not _is_loopback(parts.hostname or ""):
                value.warn(
                    "passwords would cross the network unencrypted; use ldaps:// or start_tls: true"
                )
    ca_file = s.get_path("ca_file", None)
    if ca_file is not None and not Path(ca_file).is_file():
        s.error("ca_file", f"{ca_file} does not exist or is not a file")
    return LdapConfig(
        servers=tuple(url for url, _value in servers),
        user_dn=user_dn,
        base_dn=base_dn,
        user_filter=user_filter,
        bind_dn=bind_dn,
        bind_password=bind_password,
        start_tls=start_tls,
        ca_file=ca_file,
        timeout=s.get_duration("timeout", d.timeout, 0, 60, low_exclusive=True),
        pool_size=s.get_int("pool_size", d.pool_size, 1, 256),
        retry_after=s.get_duration("retry_after", d.retry_after, 0, 3600),
        engine=cast(
            Literal["native", "ldap3", "libldap"],
            s.get_choice("engine", d.engine, ("native", "ldap3", "libldap"), fold=str.lower),
        ),
        account_state=s.get_bool("account_state", d.account_state),
        user_cache=_ldap_user_cache(s),
        groups=pc.parse_ldap_groups(s.section("groups", pc.LDAP_GROUPS_KEYS)),
    )


def _ldap_user_cache(s: Section) -> float:
    """``user_cache``: a duration, 0 (off, the default) up to :data:`MAX_USER_CACHE`."""
    seconds = s.get_duration("user_cache", _LDAP_DEFAULTS.user_cache, 0)
    if seconds > MAX_USER_CACHE:
        s.error(
            "user_cache",
            f"must be at most {format_duration(MAX_USER_CACHE)} "
            f"(got {format_duration(seconds)}): a cached entry hides directory changes "
            "(group membership, account state, renames) for that long",
        )
        return _LDAP_DEFAULTS.user_cache
    return seconds


def _ldap_servers(s: Section) -> list[tuple[str, Value]]:
    value = _required(s, "servers", "list the directory servers, e.g. [ldaps://ldap.example.org]")
    items = value.as_list() if value is not None else None
    if value is None or items is None:
        return []
    if not items:
        value.error("list at least one server: ldap://host[:port] or ldaps://host[:port]")
    servers = []
    for item in items:
        url = item.as_str()
        problem = _ldap_url_problem(url) if url is not None else None
        if problem is not None:
            item.error(problem)
        elif url is not None:
            servers.append((url, item))
    return servers


def _ldap_url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("ldap", "ldaps") or not parts.netloc:
        return f"{url!r} must look like ldap://host[:port] or ldaps://host[:port]"
    if not parts.hostname:
        return f"{url!r} has no host name"
    if port == 0:
        return f"{url!r}: the port must be from 1 to 65535"
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return (
            f"{url!r}: give only scheme, host and port (ldap://host[:port]); "
            "the DN belongs in user_dn or base_dn"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ldap_lookup(s: Section) -> tuple[str | None, str | None, str]:
    """How a login name becomes a DN: ``user_dn`` (direct bind) or ``base_dn`` + filter."""
    if "user_dn" in s and "base_dn" in s:
        s.error(
            "base_dn",
            "give user_dn (bind directly as the user) or base_dn (search for the user, then "
            "bind), not both",
        )
    elif "user_dn" not in s and "base_dn" not in s:
        s.error(
            "user_dn",
            'missing: give user_dn (e.g. "uid={username},ou=people,dc=example,dc=org") '
            "or base_dn to search for users",
        )
    user_dn = s.get_str("user_dn", None)
    if user_dn is not None:
        _check_template(s, "user_dn", user_dn)
    base_dn = s.get_str("base_dn", None)
    user_filter = s.get_str("user_filter", _LDAP_DEFAULTS.user_filter)
    if "user_filter" in s:
        if "user_dn" in s:
            s.error("user_filter", "is only used with base_dn (search then bind); remove it")
        elif _check_template(s, "user_filter", user_filter) and not _is_parenthesised(user_filter):
            s.error("user_filter", f"must be one parenthesised LDAP filter, e.g. {_FILTER_EXAMPLE}")
    return user_dn, base_dn, user_filter


def _check_template(s: Section, key: str, template: str) -> bool:
    """True if ``template`` has ``{username}`` and no other placeholder; else reports why."""
    try:
        fields = placeholders(template)
    except ValueError:
        s.error(key, "has an unmatched { or }; write a literal brace as {{ or }}")
        return False
    unknown = sorted(fields - {"username"})
    if unknown:
        s.error(key, f"unknown placeholder {{{unknown[0]}}}; only {{username}} is filled in")
        return False
    if "username" not in fields:
        s.error(key, "must contain {username}, where the login name goes")
        return False
    return True


def _is_parenthesised(text: str) -> bool:
    """One ``( ... )`` group spanning the whole text (LDAP escapes literal parens as \\28)."""
    depth = 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0 or (depth == 0 and index != len(text) - 1):
                return False
    return depth == 0 and text.startswith("(")


def _ldap_bind(s: Section, *, direct_bind: bool) -> tuple[str | None, str | None]:
    """The service account used to search: both DN and password, or neither."""
    keys = ("bind_password", "bind_password_file", "bind_password_credential")
    sources = [key for key in keys if key in s]
    has_password, has_file = "bind_password" in s, bool(sources) and "bind_password" not in s
    password = None
    if len(sources) > 1:
        s.error(sources[1], f"give {sources[0]} or {sources[1]}, not both")
    elif has_password:
        password = s.get_str("bind_password", None, secret=True)
    elif has_file:
        password = _read_text_secret(s, sources[0])
    bind_dn = s.get_str("bind_dn", None)
    if "bind_dn" in s:
        if direct_bind:
            s.error(
                "bind_dn",
                "is only used with base_dn (search then bind); with user_dn radmfa binds as "
                "the user, so remove bind_dn and its password",
            )
        elif not (has_password or has_file):
            s.error(
                "bind_dn",
                "needs bind_password or bind_password_file: a bind with a DN and no password "
                "is an unauthenticated bind, which radmfa refuses",
            )
    elif sources:
        s.error(sources[0], "is set but bind_dn is not; add the DN to bind as, or remove it")
    return bind_dn, password


def _read_text_secret(s: Section, key: str) -> str | None:
    value = s.get(key)
    reader = _read_credential if key.endswith("_credential") else _read_secret_file
    data = reader(value) if value is not None else None
    if value is None or data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        value.error("the file is not UTF-8 text")
        return None


def _local_users(s: Section) -> LocalUsersConfig:
    value = _required(s, "path", "give the users file, e.g. /etc/radmfa/users")
    path = value.as_path() if value is not None else None
    groups_file = s.get_path("groups_file", None)
    if groups_file is not None and not Path(groups_file).is_file():
        s.error("groups_file", f"{groups_file} does not exist or is not a file")
    return LocalUsersConfig(path=path or "", groups_file=groups_file)


# -- policy ----------------------------------------------------------------------------------


def _policy(
    root: Section,
    clients: tuple[ClientConfig, ...],
    ldap: LdapConfig | None,
    password_only: Value | None,
) -> PolicyConfig:
    """``policy``; ``password_only`` is ``otp.allow_password_only`` when it is set true."""
    groups_problem = None
    if ldap is not None and ldap.user_dn:
        groups_problem = (
            "group rules need search-then-bind (ldap.base_dn with bind_dn): group searches "
            "run on the service account's connection, and a direct bind (ldap.user_dn) has none"
        )
    return pc.parse_policy(
        root,
        client_names={client.name for client in clients},
        groups_problem=groups_problem,
        password_only=password_only,
    )


# -- the other sections ----------------------------------------------------------------------


def _store(s: Section) -> StoreConfig:
    d = StoreConfig()
    store = StoreConfig(
        path=s.get_path("path", d.path), key_file=s.get_path("key_file", d.key_file)
    )
    if store.path == store.key_file:
        s.error("key_file", "must be a separate file from the database (store.path)")
    return store


_OTP_KEYS = (
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
_TOTP_KEYS = ("digits", "period", "algorithm", "skew", "issuer")
#: RFC 2865 attributes carry at most 253 bytes; the prompt travels as one Reply-Message.
_MAX_REPLY_MESSAGE = 253


def _otp(s: Section) -> OtpConfig:
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
        totp=_totp(s.section("totp", _TOTP_KEYS)),
        challenge_timeout=s.get_duration("challenge_timeout", d.challenge_timeout, 10, 600),
        max_open_challenges=s.get_int("max_open_challenges", d.max_open_challenges, 1, 100),
        challenge_prompt=prompt,
        allow_password_only=s.get_bool("allow_password_only", d.allow_password_only),
        **_factor_settings(s, d),
    )


def _factor_settings(s: Section, d: OtpConfig) -> dict[str, Any]:
    """The second factors beyond TOTP (radmfa.factorconfig parses them)."""
    from radmfa import factorconfig as fc

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


def _usernames(s: Section) -> UsernamesConfig:
    return UsernamesConfig(
        strip_realm=s.get_bool("strip_realm", UsernamesConfig.strip_realm),
    )


def _lockout(s: Section) -> LockoutConfig:
    d = LockoutConfig()
    # NIST SP 800-63B 5.2.2: no more than 100 consecutive failed attempts.
    max_failures = s.get_int("max_failures", d.max_failures, 1, 100)
    max_total = s.get_int("max_total_failures", d.max_total_failures, 1, 100)
    if max_total < max_failures:
        s.error("max_total_failures", f"must be at least max_failures ({max_failures})")
    return LockoutConfig(
        max_failures=max_failures,
        duration=s.get_duration("duration", d.duration, 1),
        max_total_failures=max_total,
    )


_RADIUS_KEYS = ("reject_delay", "duplicate_window", "max_in_flight", "request_timeout", "workers")


def _radius(s: Section) -> RadiusConfig:
    d = RadiusConfig()
    radius = RadiusConfig(
        # pam_radius waits 3 s per try by default: an Access-Reject must leave before that.
        reject_delay=s.get_duration("reject_delay", d.reject_delay, 0, 2.5),
        # RFC 5080 section 2.2.2: keep answered requests 5 to 30 seconds.
        duplicate_window=s.get_duration("duplicate_window", d.duplicate_window, 5, 30),
        max_in_flight=s.get_int("max_in_flight", d.max_in_flight, 1, 1_000_000),
        request_timeout=s.get_duration("request_timeout", d.request_timeout, 1, 60),
        workers=s.get_int("workers", d.workers, 1, 64),
    )
    if radius.request_timeout <= radius.reject_delay:
        s.error("request_timeout", "must be longer than reject_delay")
    return radius


def _logging(s: Section) -> LoggingConfig:
    level = s.get_choice(
        "level", LoggingConfig.level, ("debug", "info", "warning", "error"), fold=str.lower
    )
    log_format = s.get_choice("format", LoggingConfig.format, ("text", "json"), fold=str.lower)
    return LoggingConfig(
        level=cast(Literal["debug", "info", "warning", "error"], level),
        format=cast(Literal["text", "json"], log_format),
    )


def _metrics(root: Section) -> MetricsConfig | None:
    """Absent: no metrics endpoint. ``metrics: {}`` serves on the loopback default."""
    if "metrics" not in root:
        return None
    s = root.section("metrics", ("listen",))
    value = s.get("listen")
    text = value.text() if value is not None else None
    if value is None or text is None:
        return MetricsConfig()
    try:
        listen = parse_listen_address(text)
    except ValueError as exc:
        value.error(str(exc).replace("1812", "9812"))
        return MetricsConfig()
    if not ipaddress.ip_address(listen.host).is_loopback:
        value.warn(
            "the metrics endpoint has no authentication and shows client names and traffic; "
            "keep it on loopback or firewall it to the Prometheus server"
        )
    return MetricsConfig(listen=listen)
