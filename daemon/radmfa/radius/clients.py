"""Which configured client (and so which shared secret) a datagram came from.

RADIUS identifies a client only by the UDP source address (RFC 2865 section 3, R-01), never by
NAS-IP-Address or NAS-Identifier. A dual-stack listener sees IPv4 clients as ``::ffff:a.b.c.d``,
so addresses are normalised to IPv4 first, and the most specific network wins.

A RadSec client (RFC 6614) is known by its certificate instead, after the TLS handshake
verified its chain: never by its address, and never over UDP (its secret is the public
"radsec").
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Iterator

from cryptography import x509
from cryptography.x509.oid import NameOID

from radmfa.config import ClientConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Entries per address memo. A NAS sends thousands of requests from one address, so a memo
#: saves parsing it each time; a flood of spoofed sources only makes it start over.
_MEMO_LIMIT = 4096
#: Host string as received -> :func:`source_address` text. Pure, so shared by every table.
_sources: dict[str, str] = {}


def normalise_address(address: str) -> IPAddress | None:
    """Parse a source address, mapping ``::ffff:a.b.c.d`` to ``a.b.c.d``; None if unparsable."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def source_address(host: str) -> str:
    """The text a datagram's source is known by (client lookup, duplicate key, logs).

    :func:`normalise_address` shown as text, or ``host`` itself if unparsable. Memoised per
    host string: ``ipaddress`` parsing and formatting showed in per-request profiles.
    """
    try:
        return _sources[host]
    except KeyError:
        pass
    ip = normalise_address(host)
    text = str(ip) if ip is not None else host
    if len(_sources) >= _MEMO_LIMIT:
        _sources.clear()
    _sources[host] = text
    return text


def _normalise_network(network: IPNetwork) -> IPNetwork:
    """A client written as ``::ffff:10.0.0.0/104`` means the IPv4 network ``10.0.0.0/8``."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class ClientTable:
    """Longest-prefix match from source address to :class:`ClientConfig`.

    Immutable once built; a config reload builds a new table and swaps it. Lookups cost one
    dict probe per distinct prefix length, not one per client. If two clients name the same
    network, the first one wins (the config loader should refuse that anyway).
    """

    def __init__(self, clients: Iterable[ClientConfig]) -> None:
        self._clients = tuple(clients)
        by_version: dict[int, dict[int, dict[int, ClientConfig]]] = {4: {}, 6: {}}
        #: RadSec entries: by fingerprint, by certificate name, the one for any certificate.
        self._by_fingerprint: dict[bytes, ClientConfig] = {}
        self._by_name: dict[str, ClientConfig] = {}
        self._catch_all: ClientConfig | None = None
        for client in self._clients:
            if client.certificate is not None:
                self._add_radsec(client)
                continue
            assert client.network is not None  # the config requires it without certificate
            network = _normalise_network(client.network)
            exact = by_version[network.version].setdefault(network.prefixlen, {})
            exact.setdefault(int(network.network_address), client)
        #: version -> [(prefix length, {network as int: client})], longest prefix first.
        self._prefixes = {
            version: sorted(table.items(), reverse=True) for version, table in by_version.items()
        }
        #: Source address -> answer. A NAS sends thousands of requests from one address, and
        #: parsing it each time showed in profiles. Bounded: cleared when it grows too big.
        self._memo: dict[str, ClientConfig | None] = {}

    def lookup(self, address: str) -> ClientConfig | None:
        """The client owning ``address`` (IPv4, IPv6 or IPv4-mapped IPv6), or None."""
        try:
            return self._memo[address]
        except KeyError:
            pass
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        found = self._memo[address] = self._match(address)
        return found

    def _match(self, address: str) -> ClientConfig | None:
        ip = normalise_address(address)
        if ip is None:
            return None
        value = int(ip)
        bits = ip.max_prefixlen
        for prefixlen, networks in self._prefixes[ip.version]:
            shift = bits - prefixlen
            client = networks.get((value >> shift) << shift)
            if client is not None:
                return client
        return None

    def _add_radsec(self, client: ClientConfig) -> None:
        """Index a RadSec entry under each fingerprint and name it gives, so that any entry
        pointing at a certificate claims it (the config refuses repeats; if some slipped
        through, the first entry keeps the slot)."""
        match = client.certificate
        assert match is not None
        for digest in match.fingerprints:
            self._by_fingerprint.setdefault(digest, client)
        for name in match.names:
            self._by_name.setdefault(name, client)
        if match.catch_all and self._catch_all is None:
            self._catch_all = client

    def lookup_certificate(self, der: bytes, address: str) -> ClientConfig | None:
        """The RadSec client a verified peer certificate (DER) from ``address`` belongs to.

        The most specific kind of entry that claims the certificate decides: one listing its
        fingerprint, else one naming it, else the entry taking any certificate. That entry
        matches only if every criterion it gives holds, its ``address`` included; when one
        fails the answer is None, never a looser entry (a named certificate used from outside
        its address must not come in as ``any``). A certificate whose names point at two
        entries is ambiguous and refused. Call it only after the TLS handshake verified the
        chain.
        """
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        digest = hashlib.sha256(der).digest()
        names = certificate_names(certificate)
        claimant = self._by_fingerprint.get(digest)
        if claimant is None:
            named = {id(c): c for c in (self._by_name.get(name) for name in names) if c}
            if len(named) > 1:
                return None
            claimant = next(iter(named.values()), None) or self._catch_all
        if claimant is not None and _certificate_matches(claimant, digest, names, address):
            return claimant
        return None

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[ClientConfig]:
        return iter(self._clients)


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The names a client certificate claims, lower case: its DNS subjectAltNames, or the
    subject CNs when it has no subjectAltName extension at all (RFC 6614 section 2.3; a CN
    never counts beside a subjectAltName, RFC 6125 section 6.4.4, as in
    :mod:`radmfa.directory.tlsnames`).

    Fails closed: unreadable extensions give no names rather than the CN, and a name that is
    not plain ASCII (an A-label is) is left out, since ``str.lower`` folds lookalikes such
    as the Kelvin sign into ASCII letters.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        extension = None
    except ValueError:
        return []
    if extension is not None:
        claimed: list[object] = list(extension.value.get_values_for_type(x509.DNSName))
    else:
        try:
            attributes = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        except ValueError:
            return []
        claimed = [a.value for a in attributes]
    return [name.lower() for name in claimed if isinstance(name, str) and _plain(name)]


def _plain(name: str) -> bool:
    """Printable ASCII without blanks: what a DNS name (or its A-label form) is made of."""
    return bool(name) and name.isascii() and name.isprintable() and " " not in name


def _certificate_matches(
    client: ClientConfig, digest: bytes, names: list[str], address: str
) -> bool:
    match = client.certificate
    if match is None:
        return False
    if match.fingerprints and digest not in match.fingerprints:
        return False
    if match.names and not any(name in match.names for name in names):
        return False
    if client.network is not None:
        ip = normalise_address(address)
        network = _normalise_network(client.network)
        if ip is None or ip.version != network.version or ip not in network:
            return False
    return True
