"""The ``clients`` section: the RADIUS clients (NAS) by source address, with their secrets."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from radmfa.config.credentials import read_credential, read_secret_file
from radmfa.config.load import Section, required

__all__ = ["CLIENT_KEYS", "MIN_SECRET_LENGTH", "ClientConfig", "parse_clients"]


@dataclass(frozen=True)
class ClientConfig:
    name: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    secret: bytes
    require_message_authenticator: bool = True
    #: With require_message_authenticator off: drop requests carrying Proxy-State but no
    #: Message-Authenticator (BlastRADIUS, FreeRADIUS's limit_proxy_state).
    limit_proxy_state: bool = True


CLIENT_KEYS = (
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


def parse_clients(root: Section) -> tuple[ClientConfig, ...]:
    value = required(root, "clients", "list the RADIUS clients (name, address, secret)")
    items = value.as_list() if value is not None else None
    if items is None:
        return ()
    if value is not None and not items:
        value.error("list at least one RADIUS client (name, address, secret)")
    clients = []
    names: dict[str, str] = {}
    networks: dict[Network, str] = {}
    for item in items:
        section = item.as_section(CLIENT_KEYS)
        if section is not None:
            client = _client(section, names, networks)
            if client is not None:
                clients.append(client)
    return tuple(clients)


def _client(s: Section, names: dict[str, str], networks: dict[Network, str]) -> ClientConfig | None:
    """One client; ``names`` and ``networks`` hold the earlier ones, to refuse repeats."""
    name_value = required(s, "name", "give the client a name (it is used in logs)")
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
        secret, where = read_secret_file(from_file), from_file
    elif credential is not None:
        secret, where = read_credential(credential), credential
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
