"""Who a RadSec peer is, attacked: certificates built to be taken for a client they are not.

Each certificate here is signed by the CA the listener trusts (the chain check is OpenSSL's,
tested with real handshakes in test_radsec_handshake.py); what is attacked is the step after
it, :meth:`ClientTable.lookup_certificate`: names, lookalikes, unreadable extensions, and which
entry decides when several could.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID

from radmfa.config import RADSEC_SECRET, CertificateMatch, ClientConfig
from radmfa.radius.clients import ClientTable, certificate_names
from tests.support.certs import TestCA, make_ca

KELVIN = "\u212a"  # "K".lower() == "k"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_ca(tmp_path_factory.mktemp("radsec-identity"))


def _raw_dns_san(*names: bytes) -> x509.UnrecognizedExtension:
    """A subjectAltName of dNSNames written byte for byte, as a careless CA might sign it."""
    body = b"".join(bytes((0x82, len(n))) + n for n in names)
    return x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes((0x30, len(body))) + body
    )


def issue(
    ca: TestCA,
    *,
    cn: str | None = None,
    dns: Sequence[str] = (),
    san: x509.ExtensionType | None = None,
) -> bytes:
    """A client certificate (DER) signed by ``ca`` with exactly the names given."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if dns:
        san = x509.SubjectAlternativeName([x509.DNSName(n) for n in dns])
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(Encoding.DER)


def radsec(
    name: str,
    *,
    names: tuple[str, ...] = (),
    fingerprints: tuple[bytes, ...] = (),
    network: str | None = None,
) -> ClientConfig:
    return ClientConfig(
        name,
        ipaddress.ip_network(network) if network else None,
        RADSEC_SECRET,
        certificate=CertificateMatch(fingerprints, names),
    )


def found(table: ClientTable, der: bytes, address: str = "192.0.2.1") -> str | None:
    client = table.lookup_certificate(der, address)
    return client.name if client is not None else None


KIOSK = ClientTable([radsec("kiosk", names=("kiosk.example.org",))])


# -- names ------------------------------------------------------------------------------------


def test_a_lookalike_common_name_is_not_the_clients_name(ca: TestCA) -> None:
    """CN "\u212aiosk.example.org" (Kelvin sign) lower-cases to "kiosk.example.org"."""
    assert found(KIOSK, issue(ca, cn=f"{KELVIN}iosk.example.org")) is None
    assert found(KIOSK, issue(ca, cn="KIOSK.example.org")) == "kiosk"  # ASCII case still folds


def test_a_lookalike_dns_name_is_not_the_clients_name(ca: TestCA) -> None:
    """A dNSName must be ASCII (IA5String); one signed with UTF-8 bytes in it is decoded by
    cryptography and would fold into the client's name."""
    der = issue(ca, cn="x", san=_raw_dns_san(KELVIN.encode() + b"iosk.example.org"))
    assert found(KIOSK, der) is None


def test_an_unreadable_subject_alt_name_does_not_fall_back_to_the_cn(ca: TestCA) -> None:
    """The CN counts only without a subjectAltName; one that cannot be parsed is not absent."""
    broken = x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05\x82\x09ab"
    )
    assert found(KIOSK, issue(ca, cn="kiosk.example.org", san=broken)) is None


def test_a_subject_alt_name_without_dns_names_hides_the_cn(ca: TestCA) -> None:
    """A certificate identified by another kind of name (a URI, an address) does not become
    the client its free-form CN spells (RFC 6125 section 6.4.4)."""
    uri = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/x")])
    assert found(KIOSK, issue(ca, cn="kiosk.example.org", san=uri)) is None
    assert found(KIOSK, issue(ca, cn="kiosk.example.org")) == "kiosk"  # no SAN: the CN counts


def test_a_cn_matching_beside_a_dns_name_that_does_not_is_refused(ca: TestCA) -> None:
    assert found(KIOSK, issue(ca, cn="kiosk.example.org", dns=["other.example.org"])) is None


def test_a_dns_name_matching_beside_a_cn_that_does_not_is_accepted(ca: TestCA) -> None:
    assert found(KIOSK, issue(ca, cn="something else", dns=["kiosk.example.org"])) == "kiosk"


@pytest.mark.parametrize(
    "name",
    [
        "*.example.org",  # a wildcard is a literal, never expanded
        "kiosk.example.org.",  # a trailing dot is another name: refused, not widened
        "kiosk.example.org.evil.test",
        "xn--kiosk-example-org",
    ],
)
def test_other_spellings_of_the_name_are_not_the_client(ca: TestCA, name: str) -> None:
    assert found(KIOSK, issue(ca, dns=[name])) is None


def test_a_nul_byte_in_the_cn_does_not_truncate_it(ca: TestCA) -> None:
    assert found(KIOSK, issue(ca, cn="kiosk.example.org\x00.evil.test")) is None


def test_a_name_with_control_characters_is_no_name(ca: TestCA) -> None:
    """Nothing a terminal would act on reaches the logs as a certificate name."""
    der = issue(ca, cn="a\x1b[31mb\nc")
    assert certificate_names(x509.load_der_x509_certificate(der)) == []


# -- which entry decides ----------------------------------------------------------------------


def test_a_named_certificate_from_outside_its_address_is_not_taken_by_any(ca: TestCA) -> None:
    """The entry naming the certificate limits it to its network; the catch-all entry must
    not take it in from elsewhere (with that entry's policy, mode and secrets)."""
    der = issue(ca, dns=["kiosk.example.org"])
    table = ClientTable(
        [radsec("kiosk", names=("kiosk.example.org",), network="10.0.0.0/8"), radsec("any")]
    )
    assert found(table, der, "10.1.2.3") == "kiosk"
    assert found(table, der, "192.0.2.1") is None
    assert found(table, issue(ca, dns=["someone.example.org"]), "192.0.2.1") == "any"


def test_a_pinned_certificate_from_outside_its_address_is_not_taken_by_its_name(
    ca: TestCA,
) -> None:
    der = issue(ca, dns=["kiosk.example.org"])
    table = ClientTable(
        [
            radsec("pinned", fingerprints=(hashlib.sha256(der).digest(),), network="10.0.0.0/8"),
            radsec("by-name", names=("kiosk.example.org",)),
        ]
    )
    assert found(table, der, "10.1.2.3") == "pinned"
    assert found(table, der, "192.0.2.1") is None


def test_a_pinned_entry_also_claims_its_name(ca: TestCA) -> None:
    """An entry giving a name and a fingerprint: another certificate with that name (reissued
    to someone else) is not that client, and not ``any`` either."""
    der = issue(ca, dns=["kiosk.example.org"])
    table = ClientTable(
        [
            radsec(
                "kiosk", names=("kiosk.example.org",), fingerprints=(hashlib.sha256(der).digest(),)
            ),
            radsec("any"),
        ]
    )
    assert found(table, der) == "kiosk"
    assert found(table, issue(ca, dns=["kiosk.example.org"])) is None


def test_a_certificate_naming_two_clients_is_refused(ca: TestCA) -> None:
    """Which of two entries it would be must not depend on the order of its names."""
    table = ClientTable(
        [radsec("a", names=("a.example.org",)), radsec("b", names=("b.example.org",))]
    )
    assert found(table, issue(ca, dns=["a.example.org", "b.example.org"])) is None
    assert found(table, issue(ca, dns=["b.example.org", "a.example.org"])) is None
    assert found(table, issue(ca, dns=["a.example.org", "c.example.org"])) == "a"


def test_any_takes_a_certificate_no_entry_points_at(ca: TestCA, tmp_path: Path) -> None:
    table = ClientTable([radsec("kiosk", names=("kiosk.example.org",)), radsec("any")])
    assert found(table, issue(ca, dns=["kiosk.example.org"])) == "kiosk"
    assert found(table, issue(ca, cn="whoever")) == "any"
