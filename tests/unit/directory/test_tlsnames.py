"""The host-name rule both LDAP engines apply to a server certificate (RFC 6125, CN fallback
only without any subjectAltName identity), on certificates made here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from radmfa.directory.tlsnames import NameMismatch, ServerName, check_server_name
from tests.support.certs import make_ca, make_server_cert

Make = Callable[..., x509.Certificate]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def cert(ca: Any, tmp_path: Path) -> Make:
    """``cert(*names, **options)``: a certificate as make_server_cert builds it, loaded."""
    made = 0

    def make(*names: str, **options: object) -> x509.Certificate:
        nonlocal made
        made += 1
        path = make_server_cert(tmp_path, ca, names, stem=f"c{made}", **options).cert_path
        return x509.load_pem_x509_certificate(path.read_bytes())

    return make


def names(certificate: x509.Certificate, host: str) -> bool:
    try:
        check_server_name(certificate, host)
    except NameMismatch:
        return False
    return True


def test_dns_subject_alt_names(cert):
    c = cert("ldap1.example.org", "ldap2.example.org")
    assert names(c, "ldap1.example.org") and names(c, "ldap2.example.org")
    assert names(c, "LDAP1.Example.ORG")  # DNS names are case-insensitive
    assert names(c, "ldap1.example.org.")  # the absolute form of the same name
    assert not names(c, "ldap3.example.org")
    assert not names(c, "example.org")
    assert not names(c, "ldap1.example.org.evil.example")


def test_wildcards_only_as_the_whole_leftmost_label(cert):
    c = cert("*.example.org")
    assert names(c, "ldap.example.org")
    assert not names(c, "a.ldap.example.org")  # one label only
    assert not names(c, "example.org")
    partial = cert("ldap*.example.org")
    assert not names(partial, "ldap1.example.org")
    inner = cert("ldap.*.example.org")
    assert not names(inner, "ldap.eu.example.org")


def test_a_wildcard_over_a_public_suffix_matches_nothing_but_spoils_nothing(cert):
    c = cert("*.org", "ldap.example.org")
    assert not names(c, "example.org")
    assert names(c, "ldap.example.org")  # the other name still counts


def test_ip_subject_alt_names(cert):
    c = cert("127.0.0.1", "::1", "localhost")
    assert names(c, "127.0.0.1") and names(c, "::1") and names(c, "[::1]")
    assert not names(c, "127.0.0.2")
    assert not names(cert("127.0.0.2"), "127.0.0.1")


def test_an_ip_address_is_never_matched_by_a_dns_name_or_the_cn(cert):
    as_dns = cert("ldap.example.org", common_name="127.0.0.1")
    assert not names(as_dns, "127.0.0.1")
    cn_only = cert("127.0.0.1", subject_alt_names=False)
    with pytest.raises(NameMismatch, match="must be an IP subjectAltName"):
        check_server_name(cn_only, "127.0.0.1")
    wildcard_ip = cert("*.0.0.1")
    assert not names(wildcard_ip, "127.0.0.1")


def test_common_name_counts_only_without_any_subject_alt_name(cert):
    cn_only = cert("dc1.corp.example", subject_alt_names=False)
    assert names(cn_only, "dc1.corp.example") and names(cn_only, "DC1.corp.example")
    assert not names(cn_only, "dc2.corp.example")
    # With subjectAltNames present, the CN is not looked at (RFC 6125 §6.4.4).
    with_san = cert("other.corp.example", common_name="dc1.corp.example")
    assert not names(with_san, "dc1.corp.example")
    ip_san_only = cert("10.0.0.5", common_name="dc1.corp.example")
    assert not names(ip_san_only, "dc1.corp.example")


def test_common_name_follows_the_same_wildcard_rules(cert):
    assert names(cert("*.corp.example", subject_alt_names=False), "dc1.corp.example")
    assert not names(cert("dc*.corp.example", subject_alt_names=False), "dc1.corp.example")
    assert not names(cert("*.example", subject_alt_names=False), "corp.example")


def test_mismatch_says_what_the_certificate_names(cert):
    with pytest.raises(NameMismatch) as raised:
        check_server_name(cert("ldap.elsewhere.example", "10.1.2.3"), "localhost")
    assert str(raised.value) == (
        "the certificate names DNS ldap.elsewhere.example, IP 10.1.2.3, not localhost"
    )
    with pytest.raises(NameMismatch, match=r"names CN dc9\.corp\.example, not dc1"):
        check_server_name(cert("dc9.corp.example", subject_alt_names=False), "dc1.corp.example")


def test_certificate_text_is_escaped_in_the_message(cert):
    c = cert("ldap.example.org", common_name="evil\nINFO forged line", subject_alt_names=False)
    with pytest.raises(NameMismatch) as raised:
        check_server_name(c, "ldap.example.org")
    assert "\n" not in str(raised.value) and "evil\\nINFO" in str(raised.value)


@pytest.mark.parametrize("host", ["", "ldap example.org", "ldap_\x00.org", "*.example.org"])
def test_a_host_no_certificate_can_name_is_a_configuration_error(host):
    with pytest.raises(ValueError):
        ServerName(host)


def test_server_name_indication_only_for_dns_names():
    assert ServerName("LDAP.example.org").sni == b"ldap.example.org"
    assert ServerName("127.0.0.1").sni is None and ServerName("::1").sni is None
