"""``listen_tls`` and RadSec client entries: typed settings and FILE:LINE problems."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from radmfa.config import RADSEC_SECRET, CertificateMatch, TlsListener
from tests.support.certs import fingerprint, make_ca, make_server_cert
from tests.unit.test_config import LOCAL, assert_one_problem, load, problems


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = make_ca(tmp_path / "pki")
    server = make_server_cert(tmp_path / "pki", ca, ["radmfa.example.org"])
    other = make_server_cert(tmp_path / "pki", ca, ["other.example.org"], stem="other")
    return {
        "cert": server.cert_path,
        "key": server.key_path,
        "ca": ca.cert_path,
        "other_key": other.key_path,
    }


def listen_tls(files: dict[str, Path], **extra: str) -> str:
    lines = [
        "listen_tls:",
        "  - address: 127.0.0.1",
        f"    cert_file: {extra.pop('cert_file', files['cert'])}",
        f"    key_file: {extra.pop('key_file', files['key'])}",
        f"    ca_file: {files['ca']}",
    ]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


RADSEC_CLIENT = """\
clients:
  - name: vpn
    address: 127.0.0.0/8
    secret: a-long-random-secret-0001
  - name: edge
    certificate:
      name: Edge.Example.org
"""


def test_a_radsec_listener_and_client_are_read(tmp_path: Path, files: dict[str, Path]) -> None:
    text = listen_tls(files, port="12083", tls13_only="true", idle_timeout="5m")
    config = load(tmp_path, text + RADSEC_CLIENT + LOCAL)
    assert config.listen_tls == (
        TlsListener(
            "127.0.0.1",
            12083,
            str(files["cert"]),
            str(files["key"]),
            str(files["ca"]),
            tls13_only=True,
            idle_timeout=300.0,
        ),
    )
    edge = config.clients[1]
    assert edge.certificate == CertificateMatch((), ("edge.example.org",))
    assert edge.secret == RADSEC_SECRET and edge.network is None
    assert edge.require_message_authenticator  # same default as every client


def test_the_port_defaults_to_2083(tmp_path: Path, files: dict[str, Path]) -> None:
    assert load(tmp_path, listen_tls(files) + RADSEC_CLIENT + LOCAL).listen_tls[0].port == 2083


def test_fingerprints_are_read_in_openssl_notation(tmp_path: Path, files: dict[str, Path]) -> None:
    shown = fingerprint(files["cert"])  # AB:CD:... as openssl prints it
    text = listen_tls(files) + (
        "clients:\n  - name: pinned\n    certificate:\n"
        f'      fingerprint: ["{shown}", "sha256:{"00" * 32}"]\n'
    )
    client = load(tmp_path, text + LOCAL).clients[0]
    der = x509.load_pem_x509_certificate(files["cert"].read_bytes()).public_bytes(Encoding.DER)
    assert client.certificate is not None
    assert client.certificate.fingerprints == (hashlib.sha256(der).digest(), bytes(32))


def test_a_key_that_is_not_the_certificates_is_refused(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    text = listen_tls(files, key_file=str(files["other_key"])) + RADSEC_CLIENT + LOCAL
    assert_one_problem(tmp_path, text, "key_file", "listen_tls[0].key_file", "is not the key of")


def test_a_missing_certificate_file_is_named(tmp_path: Path, files: dict[str, Path]) -> None:
    text = listen_tls(files, cert_file=str(tmp_path / "nope.pem")) + RADSEC_CLIENT + LOCAL
    assert_one_problem(tmp_path, text, "cert_file", "listen_tls[0].cert_file", "does not exist")


def test_a_radsec_client_must_say_which_certificates(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    text = listen_tls(files) + "clients:\n  - name: edge\n    certificate: {}\n" + LOCAL
    assert_one_problem(tmp_path, text, "certificate", "clients[0].certificate", "any: true")


def test_any_certificate_is_explicit_and_only_once(tmp_path: Path, files: dict[str, Path]) -> None:
    text = (
        listen_tls(files)
        + (
            "clients:\n"
            "  - name: a\n    certificate: {any: true}\n"
            "  - name: b\n    certificate: {any: true}\n"
        )
        + LOCAL
    )
    found = problems(tmp_path, text)
    assert len(found) == 1 and "clients[1].certificate.any" in found[0], found


def test_one_certificate_name_for_two_clients_is_refused(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    text = (
        listen_tls(files)
        + (
            "clients:\n"
            "  - name: a\n    certificate: {name: nas.example.org}\n"
            "  - name: b\n    certificate: {name: NAS.example.org}\n"
        )
        + LOCAL
    )
    found = problems(tmp_path, text)
    assert len(found) == 1 and "already the certificate name of clients[0] (a)" in found[0], found


def test_a_bad_fingerprint_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    text = (
        listen_tls(files)
        + ("clients:\n  - name: a\n    certificate: {fingerprint: 'AB:CD'}\n")
        + LOCAL
    )
    assert_one_problem(tmp_path, text, "AB:CD", "clients[0].certificate.fingerprint", "64 hex")


def test_a_listener_without_radsec_clients_is_refused(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    text = (
        listen_tls(files)
        + "clients:\n  - {name: vpn, address: 127.0.0.1, secret: a-long-random-secret-0001}\n"
        + LOCAL
    )
    found = problems(tmp_path, text)
    assert len(found) == 1 and "listen_tls: no client has a certificate" in found[0], found


def test_a_udp_client_still_needs_its_address_and_secret(tmp_path: Path) -> None:
    found = problems(tmp_path, "clients:\n  - name: vpn\n" + LOCAL)
    assert any("clients[0].address" in p for p in found)
    assert any("clients[0].secret" in p for p in found)


def test_a_certificate_name_that_is_not_ascii_is_refused(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """A Kelvin sign lower-cases to an ASCII k; names are compared as certificates carry
    them, in their A-label form."""
    client = "clients:\n  - name: a\n    certificate: {name: \u212aiosk.example}\n"
    text = listen_tls(files) + client
    assert_one_problem(tmp_path, text + LOCAL, "iosk", "clients[0].certificate.name", "A-label")
