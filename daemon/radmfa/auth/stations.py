"""What a Calling-Station-Id says about the user: an IP address, a MAC address, or only text.

A NAS fills it with whatever it knows: the client's public address (VPN gateways), PAM_RHOST
(pam_radius: an address, or a host name when sshd resolves names), the device's MAC address
(Wi-Fi, 802.1X). Address rules must never read more into it than it says, so the parse is
strict: a spelling that another parser reads differently (``203.0.113.010``, which inet_aton
reads as octal 8, ``0xCB.0.113.5``, ``3405803781``, a zone id) is no address at all.

Accepted IP spellings: dotted-quad IPv4 with decimal parts without leading zeros; IPv6 in any
RFC 4291 text form (hex digits in either case, ``::``, an embedded dotted quad), bare or in
brackets; either followed by a port (``203.0.113.5:1234``, ``[2001:db8::1]:1234``). They
all name one address, so none can be read as another.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

__all__ = ["IPAddress", "Station", "StationKind", "device_key", "parse_ip", "parse_station"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_PORT = r"(?::(?P<port>0|[1-9][0-9]{0,4}))?"
_IPV4_PORT = re.compile(r"(?P<host>[0-9.]+)" + _PORT)
_IPV6_BRACKETS = re.compile(r"\[(?P<host>[0-9A-Fa-f:.]+)\]" + _PORT)
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_MAX_PORT = 65535
#: MAC spellings NAS use: aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff (one separator throughout),
#: aabb.ccdd.eeff (Cisco), aabbccddeeff.
_MAC = re.compile(
    r"(?P<a>[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\2[0-9a-f]{2}){4})"
    r"|(?P<b>[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})"
    r"|(?P<c>[0-9a-f]{12})",
    re.IGNORECASE,
)
_MAX_DEVICE_LENGTH = 128


class StationKind(enum.Enum):
    """What a Calling-Station-Id is."""

    #: No Calling-Station-Id (or only blanks).
    ABSENT = "absent"
    IP = "ip"
    MAC = "mac"
    #: Anything else: a host name, or a spelling that is not read as an address.
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Station:
    kind: StationKind
    #: The address (IP), the MAC as ``aa:bb:cc:dd:ee:ff`` (MAC), the trimmed text (OTHER).
    address: IPAddress | None = None
    text: str | None = None


def _port_ok(port: str | None) -> bool:
    return port is None or int(port) <= _MAX_PORT


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    if not _IPV4.fullmatch(text):
        return None
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:  # a part above 255
        return None


def _ipv6(text: str) -> IPAddress | None:
    if not _IPV6.fullmatch(text):  # no zone id (%eth0), nothing but hex, colons and dots
        return None
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    return mapped if mapped is not None else address


def parse_ip(text: str | None) -> IPAddress | None:
    """The IP address ``text`` names in one of the accepted spellings (module docstring),
    else None. An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is the IPv4 address."""
    if not text:
        return None
    text = text.strip()
    bracketed = _IPV6_BRACKETS.fullmatch(text)
    if bracketed:
        return _ipv6(bracketed["host"]) if _port_ok(bracketed["port"]) else None
    v4 = _IPV4_PORT.fullmatch(text)
    if v4:
        return _ipv4(v4["host"]) if _port_ok(v4["port"]) else None
    return _ipv6(text)


def _mac(text: str) -> str | None:
    found = _MAC.fullmatch(text)
    if found is None:
        return None
    bare = re.sub(r"[:.-]", "", text).lower()
    return ":".join(bare[i : i + 2] for i in range(0, 12, 2))


def parse_station(station: str | None) -> Station:
    """What a Calling-Station-Id is (see :class:`StationKind`)."""
    text = station.strip() if station is not None else ""
    if not text:
        return Station(StationKind.ABSENT)
    address = parse_ip(text)
    if address is not None:
        return Station(StationKind.IP, address=address)
    mac = _mac(text)
    if mac is not None:
        return Station(StationKind.MAC, text=mac)
    return Station(StationKind.OTHER, text=text)


def device_key(station: str | None) -> str | None:
    """The Calling-Station-Id as the key of a device (trusted devices, source throttles), or
    None when there is none: an IP address in canonical form (without a port), a MAC address
    as ``aa:bb:cc:dd:ee:ff``, anything else trimmed and case-folded."""
    parsed = parse_station(station)
    if parsed.kind is StationKind.ABSENT:
        return None
    if parsed.address is not None:
        return str(parsed.address)
    assert parsed.text is not None
    if parsed.kind is StationKind.MAC:
        return parsed.text
    return parsed.text.casefold()[:_MAX_DEVICE_LENGTH]
