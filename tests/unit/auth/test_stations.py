"""Reading a Calling-Station-Id strictly: a spelling another parser would read as a different
address (octal, hex, a short form) is no address, so no address rule can be misled by it."""

from __future__ import annotations

import ipaddress

import pytest

from radmfa.auth.stations import StationKind, device_key, parse_ip, parse_station


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5 ", "203.0.113.5"),
        ("0.0.0.0", "0.0.0.0"),
        ("203.0.113.5:1234", "203.0.113.5"),
        ("203.0.113.5:65535", "203.0.113.5"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:1234", "2001:db8::1"),
        ("::ffff:203.0.113.5", "203.0.113.5"),  # a dual-stack socket's IPv4 client
        ("[::ffff:203.0.113.5]:80", "203.0.113.5"),
    ],
)
def test_accepted_spellings_name_one_address(text: str, address: str) -> None:
    assert parse_ip(text) == ipaddress.ip_address(address)
    assert parse_station(text).kind is StationKind.IP


@pytest.mark.parametrize(
    "text",
    [
        "203.0.113.005",  # leading zeros: octal to inet_aton (005 is 5, but 010 is 8)
        "203.0.113.010",
        "0xCB.0.113.5",  # hex
        "0313.0.113.5",  # octal
        "3405803781",  # one 32-bit number
        "203.0.113",  # a short form (203.0.0.113 to inet_aton)
        "203.0.113.5.",
        "203.0.113.256",
        "203.0.113.5:",
        "203.0.113.5:65536",
        "203.0.113.5:01234",
        "203.0.113.5:1234:5",
        "203.0.113.5/24",
        "[203.0.113.5]",
        "[2001:db8::1",
        "2001:db8::1]",
        "[2001:db8::1]:",
        "[2001:db8::1]:99999",
        "fe80::1%eth0",  # a zone id
        "[fe80::1%25eth0]",
        "::ffff:203.0.113.005",
        "1:2:3:4:5:6:7:8:9",
        "\uff12\uff10\uff13.0.113.5",  # full-width digits
        "vpn.example.org",
        "aa:bb:cc:dd:ee:ff",
        "",
        "   ",
    ],
)
def test_other_spellings_are_no_address(text: str) -> None:
    assert parse_ip(text) is None


@pytest.mark.parametrize(
    ("station", "kind", "text"),
    [
        (None, StationKind.ABSENT, None),
        ("  ", StationKind.ABSENT, None),
        ("AA-BB-CC-DD-EE-FF", StationKind.MAC, "aa:bb:cc:dd:ee:ff"),
        ("aa:bb:cc:dd:ee:ff", StationKind.MAC, "aa:bb:cc:dd:ee:ff"),
        ("aabb.ccdd.eeff", StationKind.MAC, "aa:bb:cc:dd:ee:ff"),
        ("aabbccddeeff", StationKind.MAC, "aa:bb:cc:dd:ee:ff"),
        ("aa:bb-cc:dd-ee:ff", StationKind.OTHER, "aa:bb-cc:dd-ee:ff"),  # mixed separators
        ("aa:bb:cc:dd:ee:ff:00", StationKind.OTHER, "aa:bb:cc:dd:ee:ff:00"),
        ("host.example.org", StationKind.OTHER, "host.example.org"),
        ("203.0.113.005", StationKind.OTHER, "203.0.113.005"),
    ],
)
def test_station_kinds(station: str | None, kind: StationKind, text: str | None) -> None:
    parsed = parse_station(station)
    assert (parsed.kind, parsed.text) == (kind, text)


@pytest.mark.parametrize(
    ("station", "key"),
    [
        (None, None),
        ("  ", None),
        ("10.0.0.1", "10.0.0.1"),
        ("10.0.0.1:4500", "10.0.0.1"),  # the port is not part of the device
        (" 2001:DB8::1 ", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff"),
        ("aabb.ccdd.eeff", "aa:bb:cc:dd:ee:ff"),
        ("aabbccddeeff", "aa:bb:cc:dd:ee:ff"),
        ("Kiosk-7", "kiosk-7"),
        ("10.0.0.01", "10.0.0.01"),  # not an address: its own key, never 10.0.0.1's
    ],
)
def test_device_keys(station: str | None, key: str | None) -> None:
    assert device_key(station) == key
