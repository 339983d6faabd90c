"""The portal's life cycle in the daemon: the app, its sessions, a purge of expired ones,
and the listening port."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from radmfa.config import PortalConfig
from radmfa.portal.handlers import PortalApp, PortalBackend
from radmfa.portal.server import listen_portal
from radmfa.portal.sessions import MemorySessionStore, SessionManager, SessionStore

__all__ = ["PortalService"]

log = Logger(namespace="radmfa.portal")

#: Seconds between purges of expired sessions (a session past its timeout is refused at
#: once anyway; this only frees the memory).
PURGE_INTERVAL = 60.0


class PortalService:
    def __init__(
        self,
        settings: PortalConfig,
        backend: Callable[[], PortalBackend],
        reactor: Any,
        *,
        sessions: SessionStore | None = None,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self.sessions = SessionManager(
            sessions if sessions is not None else MemorySessionStore(),
            reactor,
            idle=settings.session_idle,
            longest=settings.session_max,
        )
        self.app = PortalApp(
            settings=settings, backend=backend, sessions=self.sessions, clock=reactor
        )
        self.port: Any = None
        self._purge = LoopingCall(self._purge_expired)
        self._purge.clock = reactor

    def start(self) -> None:
        """Bind (raises when the address cannot be used) and start purging."""
        self.port = listen_portal(self.reactor, self.settings, self.app)
        self._purge.start(PURGE_INTERVAL, now=False)

    def _purge_expired(self) -> Any:
        d = self.sessions.purge()
        d.addErrback(lambda f: log.failure("purging portal sessions failed", f))
        return d

    def stop(self) -> None:
        if self._purge.running:
            self._purge.stop()
        if self.port is not None:
            self.port.stopListening()
            self.port = None

    @property
    def url(self) -> str:
        address = self.settings.listen
        host = f"[{address.host}]" if ":" in address.host else address.host
        scheme = "https" if self.settings.tls is not None else "http"
        return f"{scheme}://{host}:{address.port}/"
