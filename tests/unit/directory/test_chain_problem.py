"""The libldap engine's explanation of a refused server certificate, for its log line: the
chain judged against ``ldap.ca_file`` or, without one, the system's trust store."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from radmfa.directory.ldap_libldap import _chain_problem
from tests.support.certs import make_ca, make_server_cert


def _server_cert(tmp_path: Path) -> tuple[x509.Certificate, Path]:
    ca = make_ca(tmp_path / "ca")
    made = make_server_cert(tmp_path, ca, ("ldap.example.org",))
    return x509.load_pem_x509_certificate(made.cert_path.read_bytes()), ca.cert_path


def test_chain_from_the_configured_ca_has_no_problem(tmp_path: Path) -> None:
    certificate, ca_file = _server_cert(tmp_path)
    assert _chain_problem(certificate, str(ca_file)) is None


def test_without_ca_file_a_private_ca_is_explained_against_the_system_trust_store(
    tmp_path: Path,
) -> None:
    """Without ``ldap.ca_file`` the chain is judged by the system's trust store, which does
    not know a private CA: a reason for the log line, never an exception from the check."""
    certificate, _ca_file = _server_cert(tmp_path)
    problem = _chain_problem(certificate, None)
    assert problem is not None
    assert "issuer certificate" in problem
    assert problem.endswith("(the server's certificate)")
