"""twisted.web glue: one leaf resource hands every request to :class:`PortalApp` and writes
its response with the security headers; listening on TCP or TLS on the daemon's reactor.

Bodies are bounded while they arrive (:class:`BoundedRequest`): past
:data:`~radmfa.portal.web.MAX_FORM_BYTES` the rest is discarded, and the page is a 400.
An unexpected error is logged and answered with a plain 500 page, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from radmfa.config import ListenAddress, PortalConfig
from radmfa.portal.handlers import PortalApp
from radmfa.portal.web import (
    MAX_FORM_BYTES,
    Network,
    WebRequest,
    WebResponse,
    client_origin,
    direct_plain_peer,
    exempt_peer,
    loggable_path,
    security_headers,
)

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_PEER",
    "REQUEST_DEADLINE",
    "BoundedRequest",
    "PortalChannel",
    "PortalResource",
    "PortalSite",
    "listen_portal",
    "tls_options",
]

log = Logger(namespace="radmfa.portal")

_FAILED = (
    b"<!doctype html><meta charset=utf-8><title>Error</title>"
    b"<p>Something went wrong on our side. Please try again later.</p>"
)


class BoundedRequest(Request):
    """A request that keeps at most :data:`MAX_FORM_BYTES` of its body."""

    too_large = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        if length is not None and length > MAX_FORM_BYTES:
            self.too_large = True

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_FORM_BYTES:
            self.too_large = True
        if not self.too_large:
            super().handleContentChunk(data)


#: A request (its line, headers and body) must arrive whole within this long after the
#: connection opened or the previous answer went out. twisted.web's idle timeout restarts
#: with every byte: a byte a minute would hold a connection for days (slowloris).
REQUEST_DEADLINE = 30.0
#: Open connections one address may hold (trusted proxies and this host are not counted
#: against it), and all together: the portal shares the daemon's file descriptors with
#: RADIUS, so a crowd of idle browsers must not starve it.
MAX_CONNECTIONS_PER_PEER = 32
MAX_CONNECTIONS = 1024


class PortalChannel(http.HTTPChannel):
    """An HTTP/1.1 connection under :data:`REQUEST_DEADLINE` and the connection caps of
    its :class:`PortalSite`."""

    site: PortalSite
    _deadline: IDelayedCall | None = None
    _peer: str | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        peer = getattr(self.transport.getPeer(), "host", "") if self.transport else ""
        if not self.site.admit(peer):
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._peer = peer
        self._arm()

    def allContentReceived(self) -> None:
        self._disarm()  # the request is in: answering may take as long as it takes
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        super().requestDone(request)
        if self._peer is not None:
            self._arm()  # the next request on this connection, if any

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._disarm()
        if self._peer is not None:
            self.site.release(self._peer)
            self._peer = None
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.callLater(REQUEST_DEADLINE, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class PortalResource(Resource):
    """Every path, every method: the app decides."""

    isLeaf = True

    def __init__(self, app: PortalApp, settings: PortalConfig, *, tls: bool) -> None:
        super().__init__()
        self.app = app
        self.settings = settings
        self.tls = tls

    def render(self, request: Request) -> Any:  # twisted's signature
        web = self._web_request(request)
        host = getattr(request.getClientAddress(), "host", "") or ""
        if direct_plain_peer(
            self.settings.listen.host, host, self.settings.trusted_proxies, self.tls
        ):
            self._write(self.app.around_proxy(), request, web)
            return NOT_DONE_YET
        d = Deferred.fromCoroutine(self.app.handle(web))
        d.addErrback(self._failed, request)
        d.addCallback(self._write, request, web)
        d.addErrback(lambda f: log.failure("writing a portal response failed", f))
        return NOT_DONE_YET

    def _web_request(self, request: Request) -> WebRequest:
        peer = request.getClientAddress()
        host = getattr(peer, "host", "") or ""
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        client, secure = client_origin(host, headers, self.settings.trusted_proxies, self.tls)
        cookies: dict[str, str] = {}
        for raw in request.received_cookies.items():
            try:
                name, value = raw[0].decode("ascii"), raw[1].decode("ascii")
            except UnicodeDecodeError:
                continue
            cookies.setdefault(name, value)
        too_large = bool(getattr(request, "too_large", False))
        body = b"" if too_large or request.content is None else request.content.read()
        path = request.path.decode("latin-1")
        return WebRequest(
            method=request.method.decode("latin-1").upper(),
            path=path,
            headers=headers,
            cookies=cookies,
            body=body,
            client=client,
            secure=secure,
            too_large=too_large,
        )

    def _failed(self, failure: Failure, request: Request) -> WebResponse:
        path = loggable_path(request.path.decode("latin-1"))
        log.failure("portal request for {path} failed", failure, path=path)
        return WebResponse(status=500, body=_FAILED)

    def _write(self, response: WebResponse, request: Request, web: WebRequest) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return  # the browser went away meanwhile
        request.setResponseCode(response.status)
        cacheable = response.content_type.startswith("text/css")
        headers = security_headers(secure=web.secure, cacheable=cacheable)
        headers["Content-Type"] = response.content_type
        headers.update(response.headers)
        for name, value in headers.items():
            request.setHeader(name, value)
        for cookie in response.cookies:
            request.addCookie(
                cookie.name,
                cookie.value,
                path="/",
                max_age=str(cookie.max_age) if cookie.max_age is not None else None,
                secure=web.secure,
                httpOnly=True,
                sameSite="strict",
            )
        if web.too_large:  # the rest of the body is not worth reading
            request.setHeader("Connection", "close")
        request.write(response.body if request.method != b"HEAD" else b"")
        request.finish()


class PortalSite(Site):
    """A Site whose requests bound their bodies and whose connections are bounded in time
    and number (:class:`PortalChannel`); no access log of its own (the portal logs what
    matters, and query strings could hold anything). Plain HTTP/1.1: the pages need
    nothing of HTTP/2."""

    requestFactory = BoundedRequest
    protocol = PortalChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: Resource,
        reactor: Any = None,
        *,
        trusted: Sequence[Network] = (),
    ) -> None:
        super().__init__(resource, reactor=reactor)
        self.noisy = False
        #: Peers not held to :data:`MAX_CONNECTIONS_PER_PEER` (the reverse proxies).
        self.trusted = tuple(trusted)
        self.open_by_peer: dict[str, int] = {}
        self.open_total = 0

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False (not counted) over a cap."""
        if self.open_total >= MAX_CONNECTIONS:
            return False
        capped = not exempt_peer(peer, self.trusted)
        if capped and self.open_by_peer.get(peer, 0) >= MAX_CONNECTIONS_PER_PEER:
            return False
        self.open_total += 1
        if capped:
            self.open_by_peer[peer] = self.open_by_peer.get(peer, 0) + 1
        return True

    def release(self, peer: str) -> None:
        self.open_total -= 1
        left = self.open_by_peer.get(peer, 0) - 1
        if left > 0:
            self.open_by_peer[peer] = left
        else:
            self.open_by_peer.pop(peer, None)

    def log(self, request: http.Request) -> None:
        pass


def tls_options(cert_file: str, key_file: str) -> ssl.CertificateOptions:
    """TLS 1.2 or newer with the certificate, its chain after it in the same file, and key."""
    chain = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
        Path(cert_file).read_bytes(),
        re.DOTALL,
    )
    certificates = [x509.load_pem_x509_certificate(pem) for pem in chain]
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    # Twisted annotates these as pyOpenSSL's PKey and X509; pyOpenSSL, which gets them, takes
    # cryptography's objects and deprecates its own.
    return ssl.CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=certificates[0],  # type: ignore[arg-type]
        extraCertChain=certificates[1:],  # type: ignore[arg-type]
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


#: Binds a TCP port shared by several workers (SO_REUSEPORT): reactor, address, factory.
SharedListen = Callable[[Any, ListenAddress, Any], Any]


def listen_portal(
    reactor: Any, settings: PortalConfig, app: PortalApp, *, shared: SharedListen | None = None
) -> Any:
    """Bind the portal's address (TLS when configured); the listening port. ``shared``: how
    one of several workers binds it with SO_REUSEPORT (the kernel spreads connections over
    them; any worker serves any browser, since sessions live in the store)."""
    tls = settings.tls is not None
    site = PortalSite(
        PortalResource(app, settings, tls=tls), reactor, trusted=settings.trusted_proxies
    )
    factory: Any = site
    if settings.tls is not None:
        options = tls_options(settings.tls.cert_file, settings.tls.key_file)
        # what listenSSL does, spelled out so that a shared port can carry it too
        factory = TLSMemoryBIOFactory(cast(Any, options), False, cast(Any, site))
    address = settings.listen
    if shared is not None:
        return shared(reactor, address, factory)
    return reactor.listenTCP(address.port, factory, interface=address.host)
