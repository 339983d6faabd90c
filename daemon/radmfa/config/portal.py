"""The ``portal`` section: the self-service web portal, off unless the section is present.

A portal page takes directory passwords, so it must never be reachable over plain HTTP from
the network: a non-loopback ``listen`` needs ``tls`` or ``trusted_proxies`` (a TLS reverse
proxy in front). Certificate and key are read here, so a file that cannot be used is a
``FILE:LINE`` problem at ``check-config`` time, not a failed start.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from radmfa.config.load import Section, Value, required
from radmfa.config.radius import ListenAddress, parse_listen_address

__all__ = [
    "PORTAL_KEYS",
    "PORTAL_TLS_KEYS",
    "PortalConfig",
    "PortalTls",
    "parse_portal",
]

PORTAL_KEYS = (
    "listen",
    "public_url",
    "tls",
    "trusted_proxies",
    "session_idle",
    "session_max",
    "helpdesk_groups",
    "reauth_after",
)
PORTAL_TLS_KEYS = ("cert_file", "key_file")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Bounds of the session timeouts: shorter than a minute cannot finish an enrolment, longer
#: than a day keeps an unattended browser signed in.
_MIN_SESSION = 60.0
_MAX_IDLE = 86400.0
_MAX_SESSION = 86400.0
#: Bounds of ``reauth_after``: a second is useful only to tests; a day is longer than any
#: session lives.
_MIN_REAUTH = 1.0
_MAX_REAUTH = 86400.0
#: Larger PEM files are not certificates or keys (and are not read into memory).
_MAX_PEM_BYTES = 1 << 20


@dataclass(frozen=True)
class PortalTls:
    """The portal's own HTTPS: a PEM certificate (chain) and its unencrypted PEM key."""

    cert_file: str
    key_file: str


@dataclass(frozen=True)
class PortalConfig:
    """The self-service portal (``portal`` section); None in :class:`Config` when absent."""

    listen: ListenAddress = ListenAddress("127.0.0.1", 9443)  # noqa: RUF009 (frozen)
    #: The address users reach the portal at (links, the grace message); None: not given.
    public_url: str | None = None
    tls: PortalTls | None = None
    #: Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (reverse proxies).
    trusted_proxies: tuple[Network, ...] = ()
    #: A session ends after this long without a request ...
    session_idle: float = 600.0
    #: ... and this long after sign-in, whatever happens.
    session_max: float = 3600.0
    #: Directory groups whose members may use the help-desk pages.
    helpdesk_groups: tuple[str, ...] = ()
    #: A security change (a factor added, replaced or removed, backup codes, an address, a
    #: help-desk action) needs a second factor proven this recently, else a code first.
    reauth_after: float = 300.0


def parse_portal(root: Section) -> PortalConfig | None:
    """Absent: no portal. ``portal: {}`` serves on the loopback default."""
    if "portal" not in root:
        return None
    s = root.section("portal", PORTAL_KEYS)
    d = PortalConfig()
    listen_value = s.get("listen")
    listen = _listen(listen_value) if listen_value is not None else d.listen
    tls = _tls(s.section("tls", PORTAL_TLS_KEYS)) if "tls" in s else None
    proxies = _networks(s.get("trusted_proxies"))
    if not ipaddress.ip_address(listen.host).is_loopback and tls is None and not proxies:
        s.error(
            "listen",
            f"{listen.host} is reachable from the network, and the portal takes directory "
            "passwords: give tls (cert_file, key_file), or trusted_proxies naming the TLS "
            "reverse proxy in front of it (or listen on 127.0.0.1)",
        )
    idle = s.get_duration("session_idle", d.session_idle, _MIN_SESSION, _MAX_IDLE)
    longest = s.get_duration("session_max", d.session_max, _MIN_SESSION, _MAX_SESSION)
    if idle > longest:
        s.error("session_idle", "must not be longer than session_max")
        idle = longest
    return PortalConfig(
        listen=listen,
        public_url=_public_url(s.get("public_url")),
        tls=tls,
        trusted_proxies=proxies,
        session_idle=idle,
        session_max=longest,
        helpdesk_groups=_names(s.get("helpdesk_groups")),
        reauth_after=s.get_duration("reauth_after", d.reauth_after, _MIN_REAUTH, _MAX_REAUTH),
    )


def _listen(value: Value) -> ListenAddress:
    text = value.text()
    if text is None:
        return PortalConfig.listen
    try:
        return parse_listen_address(text)
    except ValueError as exc:
        value.error(str(exc).replace("1812", "9443"))
        return PortalConfig.listen


def _public_url(value: Value | None) -> str | None:
    """An absolute http(s) URL without credentials, query or fragment; ends with ``/``.
    Plain http only for a loopback host: users would type their password into it."""
    if value is None:
        return None
    text = value.as_str()
    if text is None:
        return None
    example = 'e.g. "https://mfa.example.org/"'
    try:
        parts = urlsplit(text.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        value.error(f"{text!r} is not a URL; {example}")
        return None
    if parts.scheme not in ("https", "http") or not host:
        value.error(f"{text!r} must be an absolute https:// URL; {example}")
        return None
    if parts.username is not None or parts.password is not None:
        value.error("must not contain a user name or password")
        return None
    if parts.query or parts.fragment:
        value.error(f"must not have a query or fragment; {example}")
        return None
    if parts.scheme == "http" and not _loopback_host(host):
        value.error(
            "must be https:// (users type their password into the portal); plain http is "
            "only for a loopback address"
        )
        return None
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


def _loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls(s: Section) -> PortalTls | None:
    """Both files, readable, a certificate and the private key that belongs to it."""
    cert_value = required(s, "cert_file", "the portal's certificate (PEM, chain after it)")
    key_value = required(s, "key_file", "the certificate's private key (PEM, unencrypted)")
    cert_path = cert_value.as_path() if cert_value is not None else None
    key_path = key_value.as_path() if key_value is not None else None
    if cert_value is None or key_value is None or cert_path is None or key_path is None:
        return None
    cert_pem = _read_pem(cert_value, cert_path)
    key_pem = _read_pem(key_value, key_path)
    if cert_pem is None or key_pem is None:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        cert_value.error(f"{cert_path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        return None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        key_value.error(f"{key_path} is encrypted; the daemon needs the key without a passphrase")
        return None
    except (ValueError, UnsupportedAlgorithm):
        key_value.error(f"{key_path} holds no PEM private key")
        return None
    key_value.warn_if_others_can_read(key_path)
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        key_value.error(f"{key_path} is not the private key of the certificate in {cert_path}")
        return None
    return PortalTls(cert_file=cert_path, key_file=key_path)


def _read_pem(value: Value, path: str) -> bytes | None:
    try:
        with Path(path).open("rb") as f:
            data = f.read(_MAX_PEM_BYTES + 1)
    except OSError as exc:
        value.error(f"cannot read {path}: {exc.strerror or exc}")
        return None
    if len(data) > _MAX_PEM_BYTES:
        value.error(f"{path} is larger than a certificate or key can be")
        return None
    return data


def _items(value: Value | None) -> list[tuple[str, Value]]:
    """The strings of a list (a single string reads as a list of one)."""
    if value is None:
        return []
    items = value.as_list() if not _is_scalar(value) else [value]
    found = []
    for item in items or []:
        text = item.as_str()
        if text is not None:
            found.append((text.strip(), item))
    return found


def _is_scalar(value: Value) -> bool:
    return isinstance(value.node, yaml.ScalarNode) and not value.is_null


def _networks(value: Value | None) -> tuple[Network, ...]:
    found: list[Network] = []
    for text, item in _items(value):
        try:
            found.append(ipaddress.ip_network(text))
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                item.error(
                    f"{text!r} is not an IP address or CIDR network (e.g. 127.0.0.1/32); "
                    "proxies are matched by the connection's address, host names are not "
                    "looked up"
                )
                continue
            item.error(f"{text} has host bits set; write the network {loose}")
    return tuple(found)


def _names(value: Value | None) -> tuple[str, ...]:
    return tuple(text for text, _item in _items(value))
