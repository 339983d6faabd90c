"""The portal's life cycle in the daemon: the app, its sessions (in the store: the daemon's
minute purge drops expired ones) and the listening port, shared by every worker with
SO_REUSEPORT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from radmfa.config import PortalConfig
from radmfa.portal.handlers import PortalApp, PortalBackend
from radmfa.portal.server import SharedListen, listen_portal
from radmfa.portal.sessions import SessionManager, SessionStore

__all__ = ["PortalService"]

log = Logger(namespace="radmfa.portal")


class PortalService:
    def __init__(
        self,
        settings: PortalConfig,
        backend: Callable[[], PortalBackend],
        reactor: Any,
        *,
        sessions: SessionStore,
        shared: SharedListen | None = None,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        #: How one of several workers binds the port they share (SO_REUSEPORT); None: alone.
        self.shared = shared
        self.sessions = SessionManager(
            sessions,
            reactor,
            idle=settings.session_idle,
            longest=settings.session_max,
            reauth_after=settings.reauth_after,
        )
        self.app = PortalApp(
            settings=settings, backend=backend, sessions=self.sessions, clock=reactor
        )
        self.port: Any = None

    def start(self) -> None:
        """Bind (raises when the address cannot be used)."""
        self.port = listen_portal(self.reactor, self.settings, self.app, shared=self.shared)

    def stop(self) -> None:
        if self.port is not None:
            self.port.stopListening()
            self.port = None

    @property
    def url(self) -> str:
        address = self.settings.listen
        host = f"[{address.host}]" if ":" in address.host else address.host
        scheme = "https" if self.settings.tls is not None else "http"
        return f"{scheme}://{host}:{address.port}/"
