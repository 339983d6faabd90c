"""What the portal gives away around its pages: secrets in log lines when a page fails, a
crash page for a store outage, plain HTTP to browsers that reach the port around the TLS
proxy. Each test fails on a portal without the rule it names."""

from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from radmfa.admin.actor import cli_actor
from radmfa.admin.links import create_enrol_link, link_url
from radmfa.config import ListenAddress
from radmfa.portal.server import PortalResource, PortalSite
from radmfa.store.base import StoreError
from tests.unit.portal.test_selfservice import signed_in
from tests.unit.portal.test_server import csrf_of, get, post
from tests.unit.portal.world import T0, World, headers_of, http

# -- secrets stay out of the logs ------------------------------------------------------------


@pytest.fixture
def log_lines():
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event) + repr(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_an_enrolment_link_is_never_in_a_log_line_when_its_page_fails(log_lines):
    world = World()
    made = create_enrol_link(world.store, cli_actor(), "bob", now=T0)
    url = link_url("https://mfa.example.org/", made.secret)

    def broken(link: bytes) -> None:
        raise StoreError("the database went away")

    world.store.enrol_link = broken  # type: ignore[method-assign]
    status, _headers, body = headers_of(http(world.site(), get(url.split(".org", 1)[1])))
    assert status == 503 and b"Try again" in body
    assert log_lines
    assert not [line for line in log_lines if made.secret in line]


@pytest.mark.logs_errors
def test_an_enrolment_link_is_never_in_the_log_line_of_a_crash(log_lines):
    world = World()
    made = create_enrol_link(world.store, cli_actor(), "bob", now=T0)

    async def broken(request, text):
        raise RuntimeError("a bug")

    world.app.open_link = broken  # type: ignore[method-assign]
    status, _headers, body = headers_of(http(world.site(), get(f"/link/{made.secret}")))
    assert status == 500 and b"a bug" not in body
    assert [line for line in log_lines if "/link/" in line]
    assert not [line for line in log_lines if made.secret in line]


def test_a_store_outage_on_any_page_is_a_503_not_a_crash():
    world = World()
    alice = signed_in(world)
    world.store.close()
    assert alice.get("/").status == 503


# -- plain HTTP only for the proxy ------------------------------------------------------------


def _public_site(world: World) -> PortalSite:
    """The portal on a public address, plain HTTP behind the TLS proxy 10.0.0.1."""
    assert world.config.portal is not None
    settings = replace(world.config.portal, listen=ListenAddress("0.0.0.0", 9443))
    return PortalSite(PortalResource(world.app, settings, tls=False), world.clock)


def test_a_public_plain_http_portal_serves_the_proxy_and_no_one_else():
    """The proxy is there for TLS; a browser that reaches the port around it would send the
    password in clear (and the session cookie without Secure)."""
    world = World()
    site = _public_site(world)
    status, headers, body = headers_of(http(site, get("/signin"), peer="203.0.113.7"))
    assert status == 403
    assert b"password" not in body.lower() and "set-cookie" not in headers
    assert b"https://mfa.example.org/" in body
    status, _h, body = headers_of(
        http(
            site,
            post("/signin", {"csrf": "x", "username": "alice", "password": "alice-pw"}),
            peer="203.0.113.7",
        )
    )
    assert status == 403 and world.directory.binds == []
    via_proxy = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
    status, _h, body = headers_of(http(site, get("/signin", extra=via_proxy), peer="10.0.0.1"))
    assert status == 200 and csrf_of(body)


def test_a_loopback_or_tls_portal_serves_any_peer():
    world = World()
    status, _h, _b = headers_of(http(world.site(), get("/signin"), peer="203.0.113.7"))
    assert status == 200


# -- slow and many connections ---------------------------------------------------------------


def _connect(site: PortalSite, peer: str = "203.0.113.7", port: int = 40000):
    """A new connection; (its protocol, its transport, whether it was kept open)."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    address = IPv4Address("TCP", peer, port)
    protocol = site.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport, not transport.disconnecting


def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_deadline():
    """Slowloris: a byte every 20 s keeps resetting the idle timeout; the whole request must
    still arrive within REQUEST_DEADLINE of the connection (or of the last answer)."""
    from radmfa.portal.server import REQUEST_DEADLINE

    world = World()
    site = world.site()
    protocol, transport, _open = _connect(site)
    raw = get("/signin")
    for i in range(20):
        if transport.disconnecting:
            break
        protocol.dataReceived(raw[i : i + 1])
        world.clock.advance(REQUEST_DEADLINE / 3 + 1)
    assert transport.disconnecting
    assert world.clock.seconds() - T0 <= REQUEST_DEADLINE + REQUEST_DEADLINE / 3 + 1


def test_a_request_in_time_is_answered_and_the_next_one_gets_its_own_deadline():
    from radmfa.portal.server import REQUEST_DEADLINE

    world = World()
    site = world.site()
    protocol, transport, _open = _connect(site)
    world.clock.advance(REQUEST_DEADLINE - 1)
    protocol.dataReceived(get("/signin"))
    assert transport.value().startswith(b"HTTP/1.1 200")
    world.clock.advance(REQUEST_DEADLINE - 1)
    assert not transport.disconnecting
    transport.clear()
    protocol.dataReceived(get("/static/portal.css"))
    assert transport.value().startswith(b"HTTP/1.1 200")
    protocol.connectionLost(None)
    world.clock.advance(3 * REQUEST_DEADLINE)  # no timer left behind


def test_one_address_cannot_hold_every_connection_but_the_proxy_can_hold_many():
    from radmfa.portal.server import MAX_CONNECTIONS_PER_PEER

    world = World()
    site = _proxied_site(world)
    held = [_connect(site, port=40000 + i) for i in range(MAX_CONNECTIONS_PER_PEER)]
    assert all(kept for _p, _t, kept in held)
    assert not _connect(site, port=50000)[2]
    assert _connect(site, peer="198.51.100.9")[2]
    proxy = [
        _connect(site, peer="10.0.0.1", port=40000 + i) for i in range(3 * MAX_CONNECTIONS_PER_PEER)
    ]
    assert all(kept for _p, _t, kept in proxy)
    held[0][0].connectionLost(None)
    assert _connect(site, port=50001)[2]


def _proxied_site(world: World) -> PortalSite:
    assert world.config.portal is not None
    resource = PortalResource(world.app, world.config.portal, tls=False)
    return PortalSite(resource, world.clock, trusted=world.config.portal.trusted_proxies)
