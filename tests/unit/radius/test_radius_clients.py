"""Client identification by source address only (R-01): longest prefix, IPv4-mapped IPv6."""

from __future__ import annotations

import ipaddress

import pytest

from radmfa.config import ClientConfig
from radmfa.radius import clients
from radmfa.radius.clients import ClientTable, normalise_address, source_address


def client(name: str, network: str) -> ClientConfig:
    return ClientConfig(
        name=name, network=ipaddress.ip_network(network), secret=b"s-" + name.encode()
    )


TABLE = ClientTable(
    [
        client("lan", "10.0.0.0/8"),
        client("vpn-subnet", "10.1.0.0/16"),
        client("vpn-host", "10.1.2.3/32"),
        client("v6-site", "2001:db8::/32"),
        client("v6-host", "2001:db8::5/128"),
        client("loopback", "127.0.0.1/32"),
    ]
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.9.9.9", "lan"),
        ("10.1.9.9", "vpn-subnet"),
        ("10.1.2.3", "vpn-host"),
        ("10.1.2.4", "vpn-subnet"),
        ("2001:db8::1", "v6-site"),
        ("2001:db8::5", "v6-host"),
        ("::ffff:10.1.2.3", "vpn-host"),
        ("::ffff:127.0.0.1", "loopback"),
        ("127.0.0.1", "loopback"),
    ],
)
def test_most_specific_network_wins(address: str, expected: str) -> None:
    found = TABLE.lookup(address)
    assert found is not None and found.name == expected


@pytest.mark.parametrize(
    "address", ["127.0.0.2", "11.0.0.1", "2001:db9::1", "::1", "not-an-ip", "", "::ffff:11.0.0.1"]
)
def test_unknown_or_unparsable_source_has_no_client(address: str) -> None:
    assert TABLE.lookup(address) is None


def test_catch_all_networks_match_only_their_family() -> None:
    table = ClientTable([client("any4", "0.0.0.0/0")])
    assert table.lookup("192.0.2.1") is not None
    assert table.lookup("::ffff:192.0.2.1") is not None
    assert table.lookup("2001:db8::1") is None


def test_client_written_as_ipv4_mapped_network_matches_ipv4_sources() -> None:
    table = ClientTable([client("mapped", "::ffff:192.0.2.0/120")])
    found = table.lookup("192.0.2.77")
    assert found is not None and found.name == "mapped"


def test_first_of_two_identical_networks_wins() -> None:
    table = ClientTable([client("first", "192.0.2.0/24"), client("second", "192.0.2.0/24")])
    assert [c.name for c in table] == ["first", "second"]
    found = table.lookup("192.0.2.1")
    assert found is not None and found.name == "first"
    assert len(table) == 2


def test_normalise_address_maps_ipv4_in_ipv6() -> None:
    assert str(normalise_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert str(normalise_address("2001:DB8::1")) == "2001:db8::1"
    assert normalise_address("300.1.1.1") is None


def test_source_address_is_the_normalised_text() -> None:
    assert source_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_address("2001:DB8::1") == "2001:db8::1"
    assert source_address("192.0.2.1") == "192.0.2.1"
    assert source_address("not-an-ip") == "not-an-ip"  # unparsable: kept as given


def test_source_address_memo_is_bounded_and_starts_over_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memo: dict[str, str] = {}
    monkeypatch.setattr(clients, "_sources", memo)
    source_address("::ffff:192.0.2.1")
    assert memo == {"::ffff:192.0.2.1": "192.0.2.1"}  # remembered for the next datagram
    for i in range(clients._MEMO_LIMIT + 10):  # a flood of spoofed sources
        host = f"::ffff:10.{i >> 8}.{i & 0xFF}.1"
        assert source_address(host) == f"10.{i >> 8}.{i & 0xFF}.1"
        assert len(memo) <= clients._MEMO_LIMIT
    assert source_address("::ffff:192.0.2.1") == "192.0.2.1"  # forgotten, so parsed again
