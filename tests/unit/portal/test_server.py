"""The portal through the whole twisted.web stack: headers on every response, cookie flags,
forwarded headers only from trusted proxies, bounded bodies."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlencode

import pytest

from radmfa.portal.web import MAX_FORM_BYTES, client_origin
from tests.unit.portal.world import World, headers_of, http

TRUSTED = [ipaddress.ip_network("10.0.0.1/32")]


def get(path: str, *, cookie: str = "", extra: str = "") -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: mfa.example.org\r\n"
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    return (head + extra + "\r\n").encode()


def post(path: str, fields: dict[str, str], *, cookie: str = "", extra: str = "") -> bytes:
    body = urlencode(fields).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: mfa.example.org\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    return (head + extra + "\r\n").encode() + body


def csrf_of(body: bytes) -> str:
    found = re.search(rb'name="csrf" value="([^"]*)"', body)
    assert found
    return found.group(1).decode()


def cookies_of(headers: dict[str, list[str]]) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in headers.get("set-cookie", [])}


def signed_in(world: World, *, peer: str = "203.0.113.7", extra: str = "") -> tuple[str, str]:
    """(the session cookie header, a page's form token) of bob signed in during grace."""
    site = world.site()
    status, headers, body = headers_of(http(site, get("/signin", extra=extra), peer=peer))
    pre = cookies_of(headers)
    (name,) = pre
    value = pre[name].split(";")[0]
    fields = {"csrf": csrf_of(body), "username": "bob", "password": "bob-pw"}
    status, headers, _ = headers_of(
        http(site, post("/signin", fields, cookie=value, extra=extra), peer=peer)
    )
    assert status == 303
    session = next(c for n, c in cookies_of(headers).items() if "session" in n)
    cookie = session.split(";")[0]
    _s, _h, home = headers_of(http(site, get("/", cookie=cookie, extra=extra), peer=peer))
    return cookie, csrf_of(home)


EXPECTED = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


def test_every_response_carries_the_security_headers():
    world = World()
    site = world.site()
    cookie, token = signed_in(world)
    exchanges = [
        get("/signin"),
        get("/"),
        get("/nope"),
        post("/signin", {"username": "x"}),  # no token: 400
        get("/", cookie=cookie),
        get("/enroll/app", cookie=cookie),
        post("/enroll/app", {"csrf": token, "code": "000000"}, cookie=cookie),
        get("/static/portal.css"),
        b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    statuses = []
    for raw in exchanges:
        status, headers, _body = headers_of(http(site, raw))
        statuses.append(status)
        for name, value in EXPECTED.items():
            assert headers.get(name) == [value], (raw, name)
        assert "script-src" not in headers["content-security-policy"][0]
    assert statuses == [200, 303, 404, 400, 200, 200, 200, 200, 405]


def test_pages_are_never_cached_and_the_enrolment_page_above_all():
    world = World()
    site = world.site()
    cookie, _token = signed_in(world)
    for path in ("/signin", "/", "/enroll/app"):
        _s, headers, _b = headers_of(http(site, get(path, cookie=cookie)))
        assert headers["cache-control"] == ["no-store"], path


def test_cookies_are_httponly_strict_and_not_secure_over_plain_http():
    world = World()
    _s, headers, _b = headers_of(http(world.site(), get("/signin")))
    (cookie,) = headers["set-cookie"]
    assert cookie.startswith("radmfa-pre=")
    parts = {p.strip().lower() for p in cookie.split(";")}
    assert "httponly" in parts and "samesite=strict" in parts and "path=/" in parts
    assert "secure" not in parts


def test_cookies_are_secure_with_a_host_prefix_behind_a_trusted_tls_proxy():
    world = World()
    extra = "X-Forwarded-Proto: https\r\nX-Forwarded-For: 198.51.100.20\r\n"
    _s, headers, _b = headers_of(http(world.site(), get("/signin", extra=extra), peer="10.0.0.1"))
    (cookie,) = headers["set-cookie"]
    parts = {p.strip().lower() for p in cookie.split(";")}
    assert cookie.startswith("__Host-radmfa-pre=")
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= parts
    assert headers["strict-transport-security"] == ["max-age=31536000"]
    session, _token = signed_in(world, peer="10.0.0.1", extra=extra)
    assert session.startswith("__Host-radmfa-session=")


def test_forwarded_headers_from_an_untrusted_peer_are_ignored():
    world = World()
    extra = "X-Forwarded-Proto: https\r\nX-Forwarded-For: 10.0.0.1, 198.51.100.20\r\n"
    _s, headers, _b = headers_of(http(world.site(), get("/signin", extra=extra)))
    (cookie,) = headers["set-cookie"]
    assert cookie.startswith("radmfa-pre=") and "secure" not in cookie.lower()
    # the sign-in is logged and counted under the peer, not the address it claims
    site = world.site()
    _s, headers, body = headers_of(http(site, get("/signin")))
    pre = headers["set-cookie"][0].split(";")[0]
    fields = {"csrf": csrf_of(body), "username": "alice", "password": "wrong"}
    http(site, post("/signin", fields, cookie=pre, extra=extra))
    rows = [r for r in world.audit(user="alice") if r.client == "portal"]
    assert [r.src for r in rows] == ["203.0.113.7"]
    assert world.store.failure_window("source:198.51.100.20", 0).count == 0


def test_a_trusted_proxy_names_the_browser():
    world = World()
    site = world.site()
    extra = "X-Forwarded-For: 198.51.100.20\r\n"
    _s, headers, body = headers_of(http(site, get("/signin"), peer="10.0.0.1"))
    pre = headers["set-cookie"][0].split(";")[0]
    fields = {"csrf": csrf_of(body), "username": "alice", "password": "wrong"}
    http(site, post("/signin", fields, cookie=pre, extra=extra), peer="10.0.0.1")
    rows = [r for r in world.audit(user="alice") if r.client == "portal"]
    assert [r.src for r in rows] == ["198.51.100.20"]


@pytest.mark.parametrize(
    ("peer", "forwarded", "proto", "expected"),
    [
        ("203.0.113.7", "198.51.100.1", "https", ("203.0.113.7", False)),
        ("10.0.0.1", None, None, ("10.0.0.1", False)),
        ("10.0.0.1", "198.51.100.1", "https", ("198.51.100.1", True)),
        ("10.0.0.1", "6.6.6.6, 198.51.100.1", "http", ("198.51.100.1", False)),
        ("10.0.0.1", "198.51.100.1, 10.0.0.1", None, ("198.51.100.1", False)),
        ("10.0.0.1", "not-an-ip", None, ("10.0.0.1", False)),
        ("10.0.0.1", "198.51.100.1, garbage", None, ("10.0.0.1", False)),
        ("::ffff:10.0.0.1", "198.51.100.1", None, ("198.51.100.1", False)),
    ],
)
def test_client_origin(peer, forwarded, proto, expected):
    headers = {}
    if forwarded is not None:
        headers["x-forwarded-for"] = forwarded
    if proto is not None:
        headers["x-forwarded-proto"] = proto
    assert client_origin(peer, headers, TRUSTED, False) == expected


def test_a_body_over_the_limit_is_a_400_and_is_not_kept():
    world = World()
    site = world.site()
    _s, headers, body = headers_of(http(site, get("/signin")))
    pre = headers["set-cookie"][0].split(";")[0]
    fields = {"csrf": csrf_of(body), "username": "bob", "password": "x" * (MAX_FORM_BYTES + 1)}
    status, _h, page = headers_of(http(site, post("/signin", fields, cookie=pre)))
    assert status == 400 and b"larger than any form" in page
    assert world.directory.binds == []
    # chunked, without a length: cut off as it arrives
    chunk = b"a" * 4096
    raw = (
        b"POST /signin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        + b"".join(b"1000\r\n" + chunk + b"\r\n" for _ in range(4))
        + b"0\r\n\r\n"
    )
    status, _h, _p = headers_of(http(site, raw))
    assert status == 400


@pytest.mark.logs_errors
def test_a_crashing_page_is_a_plain_500_without_details():
    world = World()

    async def broken(request, session):
        raise RuntimeError("secret internals")

    world.app.routes[("GET", "/signin")] = broken
    status, headers, body = headers_of(http(world.site(), get("/signin")))
    assert status == 500 and b"secret internals" not in body
    assert headers["content-security-policy"] == [EXPECTED["content-security-policy"]]


def test_tls_options_load_the_certificate_its_chain_and_key(tmp_path):
    from radmfa.portal.server import tls_options
    from tests.support.certs import make_ca, make_server_cert

    ca = make_ca(tmp_path / "ca")
    server = make_server_cert(tmp_path / "srv", ca)
    chained = tmp_path / "chain.pem"
    chained.write_bytes(server.cert_path.read_bytes() + ca.cert_path.read_bytes())
    options = tls_options(str(chained), str(server.key_path))
    assert len(options.extraCertChain) == 1
    assert options.getContext() is not None
