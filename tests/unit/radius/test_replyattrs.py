"""Reply attributes of policy rules: names and values against the dictionary, byte for byte
on the wire (RFC 2865 §5, RFC 2868 §3 tags, §5.26 Vendor-Specific), cross-checked with pyrad's
own encoder where it has one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from radmfa.radius.replyattrs import load_reply_dictionary

NAMES = load_reply_dictionary()


def wire(name: str, value: object) -> bytes:
    return NAMES.encode(name, value).wire


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("Filter-Id", "staff", b"\x0b\x07staff"),
        ("Class", "staff", b"\x19\x07staff"),
        ("Class", "0xdeadBEEF", b"\x19\x06\xde\xad\xbe\xef"),
        ("Session-Timeout", "3600", b"\x1b\x06\x00\x00\x0e\x10"),
        ("Service-Type", "Framed-User", b"\x06\x06\x00\x00\x00\x02"),
        ("Framed-IP-Address", "192.0.2.7", b"\x08\x06\xc0\x00\x02\x07"),
        # Tagged integers: the tag replaces the value's first byte (RFC 2868 §3.1).
        ("Tunnel-Type", "VLAN", b"\x40\x06\x00\x00\x00\x0d"),
        ("Tunnel-Type:1", "vlan", b"\x40\x06\x01\x00\x00\x0d"),
        ("Tunnel-Medium-Type", "IEEE-802", b"\x41\x06\x00\x00\x00\x06"),
        # Tagged strings: a tag byte only with a tag, or when the text would read as one.
        ("Tunnel-Private-Group-Id", "120", b"\x51\x05120"),
        ("Tunnel-Private-Group-Id", "0120", b"\x51\x060120"),
        ("Tunnel-Private-Group-Id:2", "120", b"\x51\x06\x02120"),
        ("Tunnel-Private-Group-Id", "\x05x", b"\x51\x05\x00\x05x"),
        # Vendor-Specific: vendor id, then one vendor attribute (type, length, value).
        ("Cisco-AVPair", "shell:priv-lvl=15", b"\x1a\x19\x00\x00\x00\x09\x01\x13shell:priv-lvl=15"),
        ("Aruba-User-Role", "staff", b"\x1a\x0d\x00\x00\x39\xe7\x01\x07staff"),
        ("Aruba-User-Vlan", "120", b"\x1a\x0c\x00\x00\x39\xe7\x02\x06\x00\x00\x00\x78"),
        ("fortinet-group-name", "vpn", b"\x1a\x0b\x00\x00\x30\x44\x01\x05vpn"),
    ],
)
def test_values_are_encoded_as_the_rfcs_say(name: str, value: str, expected: bytes) -> None:
    assert wire(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Filter-Id", "staff"),
        ("Session-Timeout", "3600"),
        ("Framed-IP-Address", "192.0.2.7"),
        ("Cisco-AVPair", "ip:inacl#1=permit ip any any"),
        ("Tunnel-Type", "VLAN"),
    ],
)
def test_the_bytes_are_what_pyrad_encodes(name: str, value: str) -> None:
    from pyrad.packet import Packet

    from radmfa.radius import codec

    packet = Packet(dict=codec.load_dictionary(), secret=b"s")
    packet.dict = NAMES._dictionary  # the same definitions
    packet.AddAttribute(name, int(value) if value.isdigit() else value)
    assert packet._PktEncodeAttributes() == wire(name, value)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("Bogus-Attribute", "x", "unknown attribute 'Bogus-Attribute'"),
        ("State", "x", "State cannot be set by a rule"),
        ("Message-Authenticator", "x", "cannot be set by a rule"),
        ("Proxy-State", "x", "cannot be set by a rule"),
        ("User-Password", "x", "cannot be set by a rule"),
        ("EAP-Message", "x", "cannot be set by a rule"),
        ("Vendor-Specific", "x", "cannot be set by a rule"),
        ("Tunnel-Password", "x", "encrypted with the shared secret"),
        ("Session-Timeout", "an hour", "'an hour' is not a number"),
        ("Session-Timeout", "-1", "-1 is out of range"),
        ("Session-Timeout", str(2**32), "(integer: 0 to 4294967295)"),
        ("Tunnel-Type", "BOGUS", "one of"),
        ("Tunnel-Type", str(2**24), "24 bits"),
        ("Tunnel-Type:0", "VLAN", "a tag is a number from 1 to 31"),
        ("Tunnel-Type:32", "VLAN", "a tag is a number from 1 to 31"),
        ("Filter-Id:1", "x", "Filter-Id has no tag"),
        ("Framed-IP-Address", "2001:db8::1", "is not an IPv4 address"),
        ("Class", "0xabc", "pairs of hex digits"),
        ("Filter-Id", "", "an empty value is not sent"),
        ("Filter-Id", "x" * 254, "254 bytes; an attribute holds 253"),
        ("Cisco-AVPair", "x" * 248, "248 bytes; a vendor attribute holds 247"),
        ("Tunnel-Private-Group-Id:1", "x" * 253, "254 bytes"),  # the tag byte counts
    ],
)
def test_what_the_dictionary_does_not_allow_is_refused(name: str, value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        NAMES.encode(name, value)


def test_the_longest_values_fit() -> None:
    assert len(wire("Filter-Id", "x" * 253)) == 255
    assert len(wire("Cisco-AVPair", "x" * 247)) == 255


def test_non_ascii_text_counts_in_bytes() -> None:
    assert wire("Filter-Id", "é") == b"\x0b\x04\xc3\xa9"
    with pytest.raises(ValueError, match="254 bytes"):
        NAMES.encode("Filter-Id", "é" * 127)


def test_an_admin_dictionary_adds_a_vendor(tmp_path: Path) -> None:
    extra = tmp_path / "dictionary.acme"
    extra.write_text(
        "VENDOR Acme 32473\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Role 7 string\n"
        "ATTRIBUTE Acme-Level 8 integer\nVALUE Acme-Level High 3\nEND-VENDOR Acme\n"
        "VENDOR Odd 4242 format=2,1\nBEGIN-VENDOR Odd\nATTRIBUTE Odd-Thing 1 string\n"
        "END-VENDOR Odd\n"
    )
    names = load_reply_dictionary([str(extra)])
    assert names.encode("Acme-Role", "ops").wire == b"\x1a\x0b\x00\x00\x7e\xd9\x07\x05ops"
    assert names.encode("Acme-Level", "high").wire[-4:] == b"\x00\x00\x00\x03"
    with pytest.raises(ValueError, match="unknown attribute 'Odd-Thing'"):
        names.encode("Odd-Thing", "x")  # a vendor format pyrad skips reads as unknown
    with pytest.raises(ValueError, match="unknown attribute"):
        NAMES.encode("Acme-Role", "ops")  # radmfa's own dictionary is not changed


def test_a_broken_admin_dictionary_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "dictionary.bad"
    bad.write_text("ATTRIBUTE Broken\n")
    with pytest.raises(ValueError, match=r"dictionary\.bad"):
        load_reply_dictionary([str(bad)])
    with pytest.raises(OSError):
        load_reply_dictionary([str(tmp_path / "missing")])
