"""The ``clients`` section: the RADIUS clients (NAS) by source address, with their secrets, and
RadSec clients by certificate."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import yaml

from radmfa.config.credentials import read_credential, read_secret_file
from radmfa.config.load import Section, Value, required

__all__ = [
    "CERTIFICATE_KEYS",
    "CLIENT_KEYS",
    "MIN_SECRET_LENGTH",
    "RADSEC_SECRET",
    "CertificateMatch",
    "ClientConfig",
    "parse_clients",
]


@dataclass(frozen=True)
class CertificateMatch:
    """How a RadSec client's certificate is recognised, once its chain verified against the
    listener's ``ca_file``. Every criterion given must hold; none given (``any: true``) means
    every certificate that CA signed."""

    #: SHA-256 digests of the DER certificate (two during a renewal).
    fingerprints: tuple[bytes, ...] = ()
    #: DNS subjectAltNames (or the subject CN when the certificate has no DNS name), lower case.
    names: tuple[str, ...] = ()

    @property
    def catch_all(self) -> bool:
        return not self.fingerprints and not self.names


@dataclass(frozen=True)
class ClientConfig:
    name: str
    #: Source network. For a RadSec client optional: the connection must also come from there.
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    secret: bytes
    require_message_authenticator: bool = True
    #: With require_message_authenticator off: drop requests carrying Proxy-State but no
    #: Message-Authenticator (BlastRADIUS, FreeRADIUS's limit_proxy_state).
    limit_proxy_state: bool = True
    #: Set for a RadSec client (RFC 6614): known by its certificate on a ``listen_tls`` port,
    #: never by its address over UDP.
    certificate: CertificateMatch | None = None
    #: How this client's users give the second factor (``otp.mode``'s choices); None: as
    #: ``otp.mode`` says. A Wi-Fi front (FreeRADIUS ending EAP-TTLS) needs append: a
    #: supplicant cannot answer a challenge inside the tunnel.
    mode: str | None = None


CLIENT_KEYS = (
    "name",
    "address",
    "secret",
    "secret_file",
    "secret_credential",
    "require_message_authenticator",
    "limit_proxy_state",
    "certificate",
    "mode",
)
CERTIFICATE_KEYS = ("name", "fingerprint", "any")
#: RFC 6614 section 2.3: the shared secret of RADIUS over TLS (TLS protects the packets).
RADSEC_SECRET = b"radsec"
#: RFC 2865 section 3: the secret should be at least 16 octets.
MIN_SECRET_LENGTH = 16

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class _Seen:
    """What earlier entries took, to refuse repeats (each value: the entry that took it)."""

    names: dict[str, str] = field(default_factory=dict)
    networks: dict[Network, str] = field(default_factory=dict)
    fingerprints: dict[bytes, str] = field(default_factory=dict)
    certificate_names: dict[str, str] = field(default_factory=dict)
    catch_all: str | None = None


def parse_clients(root: Section) -> tuple[ClientConfig, ...]:
    value = required(root, "clients", "list the RADIUS clients (name, address, secret)")
    items = value.as_list() if value is not None else None
    if items is None:
        return ()
    if value is not None and not items:
        value.error("list at least one RADIUS client (name, address, secret)")
    clients = []
    seen = _Seen()
    for item in items:
        section = item.as_section(CLIENT_KEYS)
        if section is not None:
            client = _client(section, seen)
            if client is not None:
                clients.append(client)
    return tuple(clients)


def _client(s: Section, seen: _Seen) -> ClientConfig | None:
    """One client; ``seen`` holds what the earlier ones took, to refuse repeats."""
    name_value = required(s, "name", "give the client a name (it is used in logs)")
    name = name_value.as_str() if name_value is not None else None
    if name is not None:
        if name in seen.names:
            s.error("name", f"{name!r} is already the name of {seen.names[name]}")
        seen.names.setdefault(name, s.path)
    where = s.path + (f" ({name})" if name else "")
    radsec = "certificate" in s
    certificate = _certificate(s, seen, where) if radsec else None
    network = _client_network(s, optional=radsec)
    if network is not None and not radsec:
        if network in seen.networks:
            s.error("address", f"{network} is already the address of {seen.networks[network]}")
        seen.networks.setdefault(network, where)
    secret = _client_secret(s, optional=radsec)
    if radsec and secret is None:
        secret = RADSEC_SECRET
    require_ma = s.get_bool("require_message_authenticator", True)
    limit_proxy_state = s.get_bool("limit_proxy_state", True)
    if not require_ma and not limit_proxy_state and not radsec:
        s.warn(
            "limit_proxy_state",
            "with require_message_authenticator and limit_proxy_state both false this client "
            "is exposed to BlastRADIUS (CVE-2024-3596) forged replies; "
            "keep limit_proxy_state: true",
        )
    mode = (
        s.get_choice("mode", "", ("append", "challenge", "auto"), fold=str.lower)
        if "mode" in s
        else None
    )
    if name is None or secret is None or (certificate is None and (radsec or network is None)):
        return None
    return ClientConfig(
        name=name,
        network=network,
        secret=secret,
        require_message_authenticator=require_ma,
        limit_proxy_state=limit_proxy_state,
        certificate=certificate,
        mode=mode or None,
    )


_FINGERPRINT_EXAMPLE = (
    "the SHA-256 fingerprint as 64 hex digits, colons allowed "
    "(openssl x509 -noout -fingerprint -sha256 -in client.pem)"
)


def _certificate(s: Section, seen: _Seen, where: str) -> CertificateMatch | None:
    """``certificate:`` of a RadSec client: ``name`` and/or ``fingerprint`` (each a string or
    a list), or ``any: true``; repeats across entries are refused, so a certificate never
    matches two entries at the same level."""
    value = s.get("certificate")
    section = value.as_section(CERTIFICATE_KEYS) if value is not None else None
    if section is None:
        return None
    ok = True
    fingerprints: list[bytes] = []
    for item in _strings(section, "fingerprint"):
        text = item.as_str()
        if text is None:
            ok = False
            continue
        digest = _fingerprint(text)
        if digest is None:
            item.error(f"{text!r} is not {_FINGERPRINT_EXAMPLE}")
            ok = False
        elif digest in seen.fingerprints:
            item.error(
                f"this fingerprint is already the certificate of {seen.fingerprints[digest]}"
            )
            ok = False
        else:
            seen.fingerprints[digest] = where
            fingerprints.append(digest)
    names: list[str] = []
    for item in _strings(section, "name"):
        text = item.as_str()
        if text is None:
            ok = False
            continue
        folded = text.strip().lower()
        if not folded or any(c.isspace() or not c.isprintable() for c in folded):
            item.error(f"{text!r} is not a certificate name (a DNS name, e.g. nas1.example.org)")
            ok = False
        elif not text.strip().isascii():
            item.error(
                f"{text!r} is not plain ASCII: write an internationalised name in its A-label "
                "form (xn--...), as certificates carry it"
            )
            ok = False
        elif folded in seen.certificate_names:
            item.error(
                f"{text!r} is already the certificate name of {seen.certificate_names[folded]}"
            )
            ok = False
        else:
            seen.certificate_names[folded] = where
            names.append(folded)
    any_cert = section.get_bool("any", False)
    if any_cert and (fingerprints or names or "name" in section or "fingerprint" in section):
        section.error("any", "give name / fingerprint, or any: true, not both")
        return None
    if not ok:
        return None
    if not any_cert and not fingerprints and not names:
        s.error(
            "certificate",
            "say how this RadSec client's certificate is recognised: name (its DNS "
            "subjectAltName, or CN), fingerprint (SHA-256), or any: true for every "
            "certificate the listen_tls ca_file signed",
        )
        return None
    if any_cert:
        if seen.catch_all is not None:
            section.error("any", f"{seen.catch_all} already takes any certificate")
            return None
        seen.catch_all = where
    return CertificateMatch(tuple(fingerprints), tuple(names))


def _strings(s: Section, key: str) -> list[Value]:
    """A key that takes one string or a list of them."""
    value = s.get(key)
    if value is None:
        return []
    if isinstance(value.node, yaml.SequenceNode):
        items = value.as_list() or []
        if not items:
            value.error("list at least one value, or remove the key")
        return items
    return [value]


def _fingerprint(text: str) -> bytes | None:
    digits = text.strip().lower()
    for prefix in ("sha256:", "sha-256:", "sha256 fingerprint="):
        if digits.startswith(prefix):
            digits = digits[len(prefix) :]
    digits = digits.replace(":", "").replace(" ", "")
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return bytes.fromhex(digits)


def _client_network(s: Section, *, optional: bool = False) -> Network | None:
    if optional and "address" not in s:
        return None
    value = required(s, "address", "give the client's IP address or CIDR network")
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


def _client_secret(s: Section, *, optional: bool = False) -> bytes | None:
    """Exactly one of ``secret`` / ``secret_file`` / ``secret_credential``; a short secret is a
    warning. ``optional`` (RadSec): none given is None, no error."""
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
        secret, where = read_secret_file(from_file), from_file
    elif credential is not None:
        secret, where = read_credential(credential), credential
    elif optional:
        return None
    else:
        s.error(
            "secret",
            "missing: give the shared secret as secret, or secret_file: PATH, or "
            "secret_credential: NAME (a systemd credential)",
        )
        return None
    if secret is not None and len(secret) < MIN_SECRET_LENGTH and not optional:
        where.warn(
            f"the shared secret is shorter than {MIN_SECRET_LENGTH} characters (RFC 2865 asks for "
            "at least 16) and can be guessed offline from one captured packet; use a long random "
            "one, e.g. from `openssl rand -base64 24`"
        )
    return secret
