"""A real SMTP server on a loopback port (aiosmtpd in its own thread), with an inbox to read.

``SmtpServer(security="starttls", username=..., password=...)`` speaks ESMTP with STARTTLS
(certificate from tests.support.certs) and AUTH; ``security="tls"`` is TLS from the first byte
(port-465 style); ``"none"`` is plain. :meth:`SmtpServer.wait_for` polls the inbox with a
deadline, so tests never sleep a fixed time.
"""

from __future__ import annotations

import email
import email.policy
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.certs import make_ca, make_server_cert
from tests.support.ports import free_port


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(
        self,
        workdir: Path,
        *,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.security = security
        self.port = free_port()
        self.inbox = Inbox()
        ca = make_ca(workdir / "ca")
        cert = make_server_cert(workdir / "smtp", ca)
        self.ca_file = str(ca.cert_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert.cert_path), str(cert.key_path))
        kwargs: dict[str, Any] = {}
        if username is not None:
            kwargs["authenticator"] = self._authenticate
            # implicit TLS: aiosmtpd does not count it as TLS for AUTH, but the wire is secure
            kwargs["auth_require_tls"] = security == "starttls"
            self.credentials = (username.encode(), (password or "").encode())
        if security == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        if security == "tls":
            kwargs["ssl_context"] = context
        self.controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, server_hostname="localhost", **kwargs
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and (
                auth_data.login,
                auth_data.password,
            )
            == self.credentials
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def config(self, **extra: Any) -> dict[str, Any]:
        """The ``otp.email.smtp`` section that reaches this server."""
        section: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "security": self.security,
            "timeout": 5,
        }
        if self.security != "none":
            section["ca_file"] = self.ca_file
        if hasattr(self, "credentials"):
            section["username"] = self.credentials[0].decode()
            section["password"] = self.credentials[1].decode()
        section.update(extra)
        return section

    def messages_to(self, address: str) -> list[EmailMessage]:
        with self.inbox.lock:
            return [m for m in self.inbox.messages if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 10.0) -> EmailMessage:
        end = time.monotonic() + timeout
        while True:
            found = self.messages_to(address)
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > end:
                raise TimeoutError(f"no message #{count} for {address} within {timeout}s")
            time.sleep(0.02)

    def code_for(self, address: str, count: int = 1, timeout: float = 10.0) -> str:
        body = self.wait_for(address, count, timeout).get_content()
        match = re.search(r"\bis ([0-9A-Z]{6,12})\b", body)
        assert match, body
        return match.group(1)
