"""Whether a server certificate names the LDAP server radmfa connects to: one rule, both engines.

The matching is service_identity's (RFC 6125): the subjectAltName DNS names, a wildcard only as
the whole leftmost label of a name with three labels or more (``*.example.org``; never
``ldap*.example.org``, never a bare ``*.org``), and the subjectAltName IP addresses. An IP
address is matched by an IP subjectAltName only, never by a DNS name or the subject.

Only when the certificate presents no subjectAltName identity at all (no DNS, IP, URI or SRV
entry) does its one subject common name count, as a DNS name: Microsoft's rules for LDAPS
allow domain controller certificates that carry the name in the CN alone. A CN that is not a
valid host name, or several CNs, match nothing.

Neither engine uses the name checks of its TLS library: Twisted's logs and ignores a
certificate without subjectAltName, and ldap3's own (on Python 3.12 and later) ignores IP
subjectAltNames and falls back to the CN.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID
from service_identity import CertificateError, VerificationError
from service_identity.hazmat import (
    DNS_ID,
    CertificatePattern,
    DNSPattern,
    IPAddress_ID,
    IPAddressPattern,
    verify_service_identity,
)

__all__ = ["NameMismatch", "ServerName", "check_server_name"]

#: otherName type of an SRV-ID (RFC 4985): an identity, so no CN fallback either.
_SRV_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.7")
#: Names shown in a log line before "...".
_SHOWN = 6


class NameMismatch(Exception):
    """The certificate does not name the server; the message says what it names instead."""


class ServerName:
    """The host a connection was made to, as the identity a certificate must carry.

    Built once per configured server, so a host that no certificate can name (not a valid
    DNS name or IP address) is a configuration error, not a failure per connection.
    """

    __slots__ = ("_reference", "host", "ip")

    def __init__(self, host: str) -> None:
        self.host = host
        text = host.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        self._reference: DNS_ID | IPAddress_ID
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # no IPv6 zone in certificates
        except ValueError:
            # The absolute form names the same host; certificates carry the relative one.
            name = text[:-1] if text.endswith(".") else text
            try:
                self._reference = DNS_ID(name)
            except (ValueError, UnicodeError) as exc:
                raise ValueError(f"{host!r} is not a host name a certificate can carry") from exc
            self.ip = False
        else:
            self._reference = IPAddress_ID(address)
            self.ip = True

    @property
    def sni(self) -> bytes | None:
        """The name to send as Server Name Indication (none for an IP address, RFC 6066)."""
        reference = self._reference
        return reference.hostname if isinstance(reference, DNS_ID) else None

    def check(self, certificate: x509.Certificate) -> None:
        """Return if ``certificate`` names this server, else raise :class:`NameMismatch`.

        Only the name: the chain of trust is the TLS library's job and is checked first.
        """
        patterns, shown, identities = _subject_alt_names(certificate)
        if not identities:
            patterns, shown = self._common_name(certificate)
        if patterns:
            try:
                verify_service_identity(patterns, [self._reference], [])
            except (VerificationError, CertificateError):
                pass
            else:
                return
        raise NameMismatch(f"the certificate names {_listed(shown)}, not {_escaped(self.host)}")

    def _common_name(
        self, certificate: x509.Certificate
    ) -> tuple[list[CertificatePattern], list[str]]:
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        shown = [f"CN {_escaped(_text(n.value))}" for n in names]
        if not names:
            raise NameMismatch("the certificate has neither a subjectAltName nor a subject CN")
        if self.ip:
            raise NameMismatch(
                f"the certificate has no subjectAltName, only {_listed(shown)}; an IP address "
                f"({_escaped(self.host)}) must be an IP subjectAltName"
            )
        if len(names) > 1:
            raise NameMismatch(f"the certificate has no subjectAltName and {len(names)} CNs")
        try:
            return [DNSPattern.from_bytes(_text(names[0].value).encode("utf-8"))], shown
        except CertificateError:
            return [], shown  # an IP address, an invalid wildcard, not a host name


def check_server_name(certificate: x509.Certificate, host: str) -> None:
    """:meth:`ServerName.check` for a host given as text (ValueError if it is no host name)."""
    ServerName(host).check(certificate)


def _subject_alt_names(
    certificate: x509.Certificate,
) -> tuple[list[CertificatePattern], list[str], bool]:
    """(patterns to match, names for the log, whether any identity is present at all).

    Each DNS entry stands alone: one that service_identity refuses as a pattern (an IP address
    written as a DNS name, ``*.org``, a partial wildcard) matches nothing, and the others
    still count, unlike service_identity's ``extract_patterns``, which refuses the whole
    certificate for it.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return [], [], False
    patterns: list[CertificatePattern] = []
    shown: list[str] = []
    identities = False
    for name in extension.value:
        if isinstance(name, x509.DNSName):
            identities = True
            shown.append(f"DNS {_escaped(name.value)}")
            try:
                patterns.append(DNSPattern.from_bytes(name.value.encode("utf-8")))
            except CertificateError:
                pass
        elif isinstance(name, x509.IPAddress):
            identities = True
            shown.append(f"IP {name.value}")
            if isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                patterns.append(IPAddressPattern(name.value))
        elif isinstance(name, x509.UniformResourceIdentifier) or (
            isinstance(name, x509.OtherName) and name.type_id == _SRV_NAME
        ):
            identities = True
    return patterns, shown, identities


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _escaped(text: str, limit: int = 100) -> str:
    """Certificate text is the peer's: shown with control characters escaped, and short."""
    cut = text[:limit]
    if not cut.isprintable():
        cut = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in cut)
    return cut + ("..." if len(text) > limit else "")


def _listed(shown: list[str]) -> str:
    if not shown:
        return "nothing usable"
    more = f" and {len(shown) - _SHOWN} more" if len(shown) > _SHOWN else ""
    return ", ".join(shown[:_SHOWN]) + more
