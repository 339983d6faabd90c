"""The portal's view of HTTP: plain request and response values, and the rules every
response follows, independent of twisted.web (the handlers are tested without a socket).

- Every response carries the security headers (:func:`security_headers`): a CSP without any
  script, no framing, no referrer, no sniffing, and ``no-store`` on every page.
- The client's address is the peer's, unless the peer is a trusted proxy: then the right-most
  X-Forwarded-For entry that is not a trusted proxy, and X-Forwarded-Proto says whether the
  browser used https (:func:`client_origin`).
- Form bodies are size-limited and decoded strictly (:func:`parse_form`): bad input is a
  :class:`BadRequest`, which the server turns into a 400 page.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

__all__ = [
    "MAX_FORM_BYTES",
    "BadRequest",
    "Cookie",
    "WebRequest",
    "WebResponse",
    "client_origin",
    "cookie_name",
    "direct_plain_peer",
    "exempt_peer",
    "loggable_path",
    "parse_form",
    "security_headers",
]

#: Larger form bodies are refused unread: the portal's forms hold a few short fields.
MAX_FORM_BYTES = 8192
#: Fields a form may have at most, and the longest value of one.
MAX_FIELDS = 16
MAX_FIELD_CHARS = 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class BadRequest(Exception):
    """Input the portal refuses with a 400 page; the message says what was wrong."""


@dataclass(frozen=True)
class WebRequest:
    """One HTTP request as the handlers see it."""

    method: str
    path: str
    #: Lower-case header names; the last value of a repeated header.
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: The browser's address (after trusted proxies) and whether it used https.
    client: str = "127.0.0.1"
    secure: bool = False
    #: The body was larger than :data:`MAX_FORM_BYTES` (and was not kept).
    too_large: bool = False


@dataclass(frozen=True)
class Cookie:
    name: str
    value: str
    #: Seconds; 0 deletes the cookie. None: until the browser closes.
    max_age: int | None = None


@dataclass
class WebResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[Cookie] = field(default_factory=list)

    @classmethod
    def redirect(cls, location: str) -> WebResponse:
        """303 See Other: after a POST the browser GETs ``location`` (a local path)."""
        assert location.startswith("/") and not location.startswith("//")
        return cls(status=303, headers={"Location": location})


def security_headers(*, secure: bool, cacheable: bool = False) -> dict[str, str]:
    """The headers every response carries. ``cacheable``: the stylesheet only."""
    headers = {
        "Content-Security-Policy": CSP,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "public, max-age=3600" if cacheable else "no-store",
    }
    if secure:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


def cookie_name(base: str, secure: bool) -> str:
    """``__Host-`` names over https: the browser then refuses the cookie from any other host,
    a sub-domain included, or without Secure (so no one can plant a session id)."""
    return f"__Host-{base}" if secure else base


#: Paths whose last part is a secret (an enrolment link): never in a log line.
SECRET_PATHS = ("/link/",)


def loggable_path(path: str) -> str:
    """``path`` as a log line may show it: the secret of an enrolment link cut off (a log
    reader must not be able to enroll), anything else escaped by the logger."""
    for prefix in SECRET_PATHS:
        if path.startswith(prefix):
            return prefix + "…"
    return path


def client_origin(
    peer: str, headers: Mapping[str, str], trusted: Sequence[Network], tls: bool
) -> tuple[str, bool]:
    """(the browser's address, whether it used https). Forwarded headers count only from a
    trusted proxy; from anyone else they are ignored, whatever they say."""
    peer_ip = _ip(peer)
    if peer_ip is None or not _within(peer_ip, trusted):
        return peer, tls
    client = peer
    forwarded = headers.get("x-forwarded-for")
    if forwarded is not None:
        for part in reversed(forwarded.split(",")):
            hop = _ip(part.strip())
            if hop is None:  # unreadable: stop at the last hop we can vouch for
                break
            client = str(hop)
            if not _within(hop, trusted):
                break
    proto = headers.get("x-forwarded-proto")
    secure = tls
    if proto is not None:
        secure = proto.split(",")[-1].strip().lower() == "https"
    return client, secure


def direct_plain_peer(listen_host: str, peer: str, trusted: Sequence[Network], tls: bool) -> bool:
    """Whether ``peer`` reached a plain-HTTP portal on a network address around the TLS
    proxy in front of it: such a browser would send the password in clear. Only the
    trusted proxies and this host itself are served there."""
    if tls or _loopback(listen_host):
        return False
    return not exempt_peer(peer, trusted)


def exempt_peer(peer: str, trusted: Sequence[Network]) -> bool:
    """A trusted proxy or this host: many browsers may share its connections."""
    peer_ip = _ip(peer)
    return peer_ip is not None and (peer_ip.is_loopback or _within(peer_ip, trusted))


def _loopback(host: str) -> bool:
    address = _ip(host)
    return address is not None and address.is_loopback


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Sequence[Network]
) -> bool:
    return any(address.version == net.version and address in net for net in nets)


def parse_form(request: WebRequest, allowed: Sequence[str]) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body: UTF-8 only, each field
    once, only ``allowed`` ones, short values, no control characters."""
    if request.too_large:
        raise BadRequest("the form is larger than any form of this site")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadRequest("expected a form (application/x-www-form-urlencoded)")
    try:
        text = request.body.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form could not be read") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise BadRequest("the form has a field this page does not have")
        if name in fields:
            raise BadRequest("the form has a field twice")
        if len(value) > MAX_FIELD_CHARS or not _printable(value):
            raise BadRequest("a field of the form is too long or holds control characters")
        fields[name] = value
    return fields


def _printable(value: str) -> bool:
    return all(ch == " " or ch.isprintable() for ch in value)
