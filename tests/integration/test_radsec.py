"""RadSec end to end: radclient (UDP) -> Debian's radsecproxy -> RADIUS/TLS -> radmfa, and raw
TLS peers for what radsecproxy would never do (another CA, a stalled handshake, too many
connections). Certificates are made here; everything listens on loopback only.
"""

from __future__ import annotations

import signal
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from radmfa.radius import codec
from radmfa.radius.codec import ACCESS_ACCEPT, STATUS_SERVER
from tests.integration.test_daemon import Enrolled, base_config, radclient
from tests.integration.test_pam_radius import pam_service, pamtester
from tests.support.certs import ServerCert, TestCA, make_ca, make_server_cert
from tests.support.daemon import RadmfaDaemon, deadline_poll
from tests.support.ports import free_port
from tests.support.radsecproxy import FRONT_SECRET, RadsecProxy
from tests.support.slapd import Slapd

pytestmark = pytest.mark.integration

PROXY_NAME = "radsecproxy.test"
#: A second radsecproxy, for hosts whose pam_radius (Debian 12's 2.0) signs nothing.
LEGACY_PROXY_NAME = "legacy-radsecproxy.test"


@dataclass(frozen=True)
class Pki:
    ca: TestCA
    server: ServerCert
    proxy: ServerCert  # the radsecproxy client certificate
    legacy_proxy: ServerCert  # the one carrying pam_radius 2.0 requests
    stranger: ServerCert  # right CA, no client entry names it
    capped: ServerCert  # a client of its own, for the connection cap
    foreign: ServerCert  # another CA altogether
    foreign_ca: TestCA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("radsec-pki")
    ca = make_ca(d, "radsec test CA")
    foreign_ca = make_ca(d, "some other CA")
    return Pki(
        ca=ca,
        server=make_server_cert(d, ca, ["127.0.0.1", "localhost"], stem="radmfa"),
        proxy=make_server_cert(d, ca, [PROXY_NAME], stem="proxy", client=True),
        legacy_proxy=make_server_cert(d, ca, [LEGACY_PROXY_NAME], stem="legacy", client=True),
        stranger=make_server_cert(d, ca, ["stranger.test"], stem="stranger", client=True),
        capped=make_server_cert(d, ca, ["capped.test"], stem="capped", client=True),
        foreign=make_server_cert(d, foreign_ca, [PROXY_NAME], stem="foreign", client=True),
        foreign_ca=foreign_ca,
    )


def radsec_config(slapd: Slapd, pki: Pki, tls_port: int, **listener: object) -> dict:
    config = base_config(slapd)
    config["listen_tls"] = [
        {
            "address": "127.0.0.1",
            "port": tls_port,
            "cert_file": str(pki.server.cert_path),
            "key_file": str(pki.server.key_path),
            "ca_file": str(pki.ca.cert_path),
            "handshake_timeout": 2,
            "max_connections_per_client": 3,
            **listener,
        }
    ]
    config["clients"].append({"name": "edge", "certificate": {"name": PROXY_NAME}})
    config["clients"].append({"name": "capped", "certificate": {"name": "capped.test"}})
    config["clients"].append(
        {
            "name": "legacy-edge",
            "certificate": {"name": LEGACY_PROXY_NAME},
            "require_message_authenticator": False,
        }
    )
    return config


@pytest.fixture(scope="module")
def daemon(
    slapd: Slapd, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RadmfaDaemon]:
    tls_port = free_port("tcp")
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-radsec"), radsec_config(slapd, pki, tls_port))
    d.tls_port = tls_port  # type: ignore[attr-defined]
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def proxy(
    daemon: RadmfaDaemon, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RadsecProxy]:
    p = RadsecProxy(
        tmp_path_factory.mktemp("radsecproxy"),
        server_port=daemon.tls_port,  # type: ignore[attr-defined]
        ca_file=pki.ca.cert_path,
        cert_file=pki.proxy.cert_path,
        key_file=pki.proxy.key_path,
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


def tls_client(daemon: RadmfaDaemon, pki: Pki, cert: ServerCert) -> ssl.SSLSocket:
    """A raw RadSec connection with ``cert`` as the client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca.cert_path))
    context.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    raw = socket.create_connection(("127.0.0.1", daemon.tls_port), timeout=5)  # type: ignore[attr-defined]
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_packet(sock: ssl.SSLSocket, timeout: float = 5.0) -> bytes | None:
    """One RADIUS packet off the stream; None when the server closed it (or refused us)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while len(data) < 4 or len(data) < int.from_bytes(data[2:4], "big"):
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return None
    return data


def status_server(identifier: int) -> bytes:
    return codec.encode_request(
        b"radsec", code=STATUS_SERVER, identifier=identifier, message_authenticator=True
    )


def front(proxy: RadsecProxy, user: str, password: str, **extra: str) -> tuple[str | None, str]:
    """radclient -> radsecproxy (UDP), which carries the request to radmfa over TLS."""
    attributes = {"User-Name": user, "User-Password": password, "Message-Authenticator": "0x00"}
    attributes.update(extra)
    return radclient(proxy.port, FRONT_SECRET, attributes)


# -- through radsecproxy --------------------------------------------------------------------


def test_accept_through_radsecproxy_is_decided_for_the_tls_client(daemon, slapd, proxy):
    user = Enrolled(daemon, slapd)
    reply, out = front(proxy, user.name, user.password + user.code())
    assert reply == "Access-Accept", out + proxy.log()
    daemon.wait_for_log(f'decision=accept reason=ok user="{user.name}" client=edge')


def test_reject_through_radsecproxy(daemon, slapd, proxy):
    user = Enrolled(daemon, slapd)
    reply, out = front(proxy, user.name, "wrong-password" + user.code())
    assert reply == "Access-Reject", out
    daemon.wait_for_log(f'decision=reject reason=bad_password user="{user.name}" client=edge')


def test_challenge_round_trip_through_radsecproxy(daemon, slapd, proxy):
    user = Enrolled(daemon, slapd)
    reply, out = front(proxy, user.name, user.password)
    assert reply == "Access-Challenge", out
    state = out.split("State = ")[1].split()[0]
    reply, out = front(proxy, user.name, user.code(), State=state)
    assert reply == "Access-Accept", out


def test_a_request_without_message_authenticator_is_dropped_alone(daemon, slapd, proxy):
    """radsecproxy 1.9 forwards a request without Message-Authenticator as it came (as from
    pam_radius 2.0): the entry requires one, so that request goes unanswered, and the
    proxy's connection, shared by every NAS behind it, stays open for the next one."""
    user = Enrolled(daemon, slapd)
    reply, _out = radclient(
        proxy.port,
        FRONT_SECRET,
        {"User-Name": user.name, "User-Password": user.password + user.code()},
    )
    assert reply is None
    daemon.wait_for_log("Dropped a packet from edge (127.0.0.1): no Message-Authenticator")
    opened = daemon.log().count("RadSec connection from edge (127.0.0.1) open")
    reply, out = front(proxy, user.name, user.password + user.code())  # the first never ran
    assert reply == "Access-Accept", out
    assert daemon.log().count("RadSec connection from edge (127.0.0.1) open") == opened


@pytest.fixture(scope="module")
def legacy_proxy(
    daemon: RadmfaDaemon, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RadsecProxy]:
    p = RadsecProxy(
        tmp_path_factory.mktemp("radsecproxy-legacy"),
        server_port=daemon.tls_port,  # type: ignore[attr-defined]
        ca_file=pki.ca.cert_path,
        cert_file=pki.legacy_proxy.cert_path,
        key_file=pki.legacy_proxy.key_path,
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


def test_pam_radius_challenge_round_trip_through_radsecproxy(daemon, slapd, legacy_proxy, tmp_path):
    """A Linux host's pam_radius_auth (UDP, no Message-Authenticator) -> radsecproxy -> TLS ->
    radmfa: the password, the Access-Challenge back through both, the code at the prompt."""
    user = Enrolled(daemon, slapd)
    for service in pam_service(tmp_path, legacy_proxy.port, FRONT_SECRET, "radsec"):
        done = pamtester(service, user.name, [user.password, user.code()])
        out = done.stdout + done.stderr
        assert done.returncode == 0, out + legacy_proxy.log()
        assert "Enter your verification code" in out and "successfully authenticated" in out
    daemon.wait_for_log(f'decision=accept reason=ok user="{user.name}" client=legacy-edge')


# -- raw TLS peers ----------------------------------------------------------------------------


def test_status_server_over_tls(daemon, pki):
    with tls_client(daemon, pki, pki.proxy) as sock:
        sock.sendall(status_server(41))
        reply = read_packet(sock)
    assert reply is not None and reply[0] == ACCESS_ACCEPT and reply[1] == 41


def test_a_certificate_from_another_ca_is_refused_in_the_handshake(daemon, pki):
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca.cert_path))
    context.load_cert_chain(str(pki.foreign.cert_path), str(pki.foreign.key_path))
    raw = socket.create_connection(("127.0.0.1", daemon.tls_port), timeout=5)
    try:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    except (ssl.SSLError, ConnectionResetError):
        pass  # TLS 1.2: refused within the handshake
    else:  # TLS 1.3: the client finishes first; the server's alert comes with the next read
        with sock:
            sock.sendall(status_server(1))
            assert read_packet(sock) is None
    daemon.wait_for_log("Refused a RadSec connection from 127.0.0.1: TLS handshake failed")


def test_a_certificate_no_client_entry_names_is_refused(daemon, pki):
    with tls_client(daemon, pki, pki.stranger) as sock:
        sock.sendall(status_server(2))
        assert read_packet(sock) is None
    daemon.wait_for_log("no client entry matches its certificate (names ['stranger.test'])")


def test_plaintext_radius_on_the_tls_port_is_refused(daemon):
    with socket.create_connection(("127.0.0.1", daemon.tls_port), timeout=5) as sock:
        sock.sendall(status_server(3))
        sock.settimeout(5)
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
    assert not data or data[0] != ACCESS_ACCEPT  # a TLS alert or nothing, never a RADIUS reply


def still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed ``sock`` (nothing to read, no EOF, no reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(100) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_stalled_peers_do_not_hold_up_other_clients_and_are_closed(daemon, pki):
    silent = socket.create_connection(("127.0.0.1", daemon.tls_port), timeout=5)
    half = socket.create_connection(("127.0.0.1", daemon.tls_port), timeout=5)
    half.sendall(bytes.fromhex("160301020001"))  # the start of a ClientHello, never the rest
    try:
        with tls_client(daemon, pki, pki.proxy) as sock:
            sock.sendall(status_server(4))
            assert read_packet(sock) is not None
        # Answered while both stalled peers were still waiting out their handshake timeout:
        # nobody queued behind them.
        assert still_open(silent) and still_open(half)
        assert closed_by_server(silent, 10) and closed_by_server(half, 10)
    finally:
        silent.close()
        half.close()


def test_connections_per_client_are_capped(daemon, pki):
    held = [tls_client(daemon, pki, pki.capped) for _ in range(3)]
    try:
        for i, sock in enumerate(held):  # each is open and answering
            sock.sendall(status_server(10 + i))
            assert read_packet(sock) is not None
        with tls_client(daemon, pki, pki.capped) as extra:
            extra.sendall(status_server(20))
            assert read_packet(extra) is None
        daemon.wait_for_log("client capped already holds 3 connections")
        with tls_client(daemon, pki, pki.proxy) as other:  # other clients are not held up
            other.sendall(status_server(21))
            assert read_packet(other) is not None
    finally:
        for sock in held:
            sock.close()


def test_a_renewed_certificate_is_served_after_reload(daemon, pki, tmp_path):
    """SIGHUP reads cert_file again: new connections see the new certificate."""
    renewed = make_server_cert(tmp_path, pki.ca, ["127.0.0.1"], stem="renewed")
    config = dict(daemon.config)
    config["listen_tls"] = [
        {
            **daemon.config["listen_tls"][0],
            "cert_file": str(renewed.cert_path),
            "key_file": str(renewed.key_path),
        }
    ]
    old = daemon.config
    daemon.write_config(config)
    try:
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("configuration reloaded", count=1)
        renewed_der = ssl.PEM_cert_to_DER_cert(renewed.cert_path.read_text())

        def serves_renewed() -> bool:
            with tls_client(daemon, pki, pki.proxy) as sock:
                return sock.getpeercert(binary_form=True) == renewed_der

        deadline_poll(serves_renewed, 10, what="the renewed certificate")
    finally:
        daemon.write_config(old)
        count = daemon.log().count("configuration reloaded")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("configuration reloaded", count=count + 1)


def test_radsec_entries_never_answer_over_udp(daemon):
    """The RadSec secret is public: a UDP packet signed with it from anywhere is dropped."""
    reply, _out = radclient(
        daemon.port,
        "radsec",
        {"User-Name": "alice", "User-Password": "x", "Message-Authenticator": "0x00"},
        retries=1,
    )
    assert reply is None


def reload_with(daemon: RadmfaDaemon, config: dict) -> None:
    count = daemon.log().count("configuration reloaded")
    daemon.write_config(config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("configuration reloaded", count=count + 1)


def test_a_client_entry_removed_by_reload_is_served_no_more_on_its_open_connection(daemon, pki):
    """Retiring a NAS (or a stolen key) in the config and reloading must not leave the
    connection it already holds answering."""
    old = daemon.config
    config = dict(old)
    config["clients"] = [c for c in old["clients"] if c["name"] != "capped"]
    with tls_client(daemon, pki, pki.capped) as sock:
        sock.sendall(status_server(60))
        assert read_packet(sock) is not None
        try:
            reload_with(daemon, config)
            sock.sendall(status_server(61))
            assert read_packet(sock) is None
            daemon.wait_for_log("its certificate no longer matches its client entry")
        finally:
            reload_with(daemon, old)


def test_a_reload_that_changes_the_ca_closes_connections_verified_under_the_old_one(
    daemon, pki, tmp_path
):
    """A CA dropped from ca_file (compromised, retired) must not stay trusted on the
    connections its certificates opened. Here another CA is added: the old certificates
    verify again when they reconnect, yet every connection is verified anew."""
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(pki.ca.cert_path.read_bytes() + pki.foreign_ca.cert_path.read_bytes())
    old = daemon.config
    config = dict(old)
    config["listen_tls"] = [{**old["listen_tls"][0], "ca_file": str(bundle)}]
    with tls_client(daemon, pki, pki.capped) as sock:
        sock.sendall(status_server(62))
        assert read_packet(sock) is not None
        try:
            reload_with(daemon, config)
            assert closed_by_server(sock, 5)
            daemon.wait_for_log("the listener's ca_file or tls13_only changed")
            with tls_client(daemon, pki, pki.capped) as again:  # verified anew: welcome
                again.sendall(status_server(63))
                assert read_packet(again) is not None
        finally:
            reload_with(daemon, old)
