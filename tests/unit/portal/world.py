"""A portal over the real pipeline, driven synchronously: fake clock, memory store, fake
directory, and a small browser (a cookie jar over the app, or over the whole HTTP stack)."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pyotp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from radmfa.audit import AuditRecorder
from radmfa.auth.model import AccessRequest, AuthMethod, Decision
from radmfa.auth.pipeline import Authenticator, PipelineSettings
from radmfa.auth.policy import Policy
from radmfa.config import CodeDelivery, Config, EmailConfig, SmsConfig, SmtpConfig, parse_config
from radmfa.factors.backup import BackupCodeFactor
from radmfa.factors.base import FactorRegistry
from radmfa.factors.email import EmailFactor
from radmfa.factors.emergency import EmergencyCodeFactor
from radmfa.factors.sms import SmsFactor
from radmfa.factors.totp import TotpFactor
from radmfa.portal.handlers import PortalApp
from radmfa.portal.server import PortalResource, PortalSite
from radmfa.portal.sessions import SessionManager
from radmfa.portal.web import WebRequest, WebResponse
from radmfa.store.base import PortalSession, TokenRecord
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import FakeDirectory, InlineRunner, RecordingMailer, RecordingSms

T0 = 1_800_000_000.0
ALICE_SECRET = b"0123456789abcdefghij"
HANK_SECRET = b"hank-hank-hank-hank!"

CONFIG = """\
clients:
  - {{name: vpn, address: 192.0.2.10, secret: "a-long-enough-secret-123"}}
ldap:
  servers: [ldaps://ldap.example.org]
  user_dn: "uid={{username}},ou=people,dc=example,dc=org"
radius: {{reject_delay: {reject_delay}}}
lockout: {{max_failures: 3, duration: 5m}}
otp: {{totp: {{issuer: "Example Corp"}}}}
policy:
  default: {default}
  unenrolled: {{grace_days: {grace_days}}}
portal:
  public_url: "https://mfa.example.org/"
  trusted_proxies: [10.0.0.1/32]
  session_idle: 10m
  session_max: 1h
  helpdesk_groups: [mfa-helpdesk]
"""

HELPDESK_GROUP = "cn=mfa-helpdesk,ou=groups,dc=example,dc=org"
EMAIL = EmailConfig(
    smtp=SmtpConfig(host="127.0.0.1"),
    sender="mfa@example.org",
    delivery=CodeDelivery(keyword="email", cooldown=60, max_per_hour=5),
)
SMS = SmsConfig(provider="command", message="{code} is your {service} code")


def totp_code(secret: bytes, at: float) -> str:
    return pyotp.TOTP(base64.b32encode(secret).decode()).at(at)


@dataclass
class Backend:
    """What the daemon's Runtime gives the portal."""

    config: Config
    authenticator: Authenticator


class World:
    def __init__(
        self,
        *,
        grace_days: int = 14,
        reject_delay: float = 0,
        db: Any = None,
        default: str = "required",
    ) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore()
        self.db = db if db is not None else InlineRunner()
        self.directory = FakeDirectory(
            users={
                "alice": "alice-pw",
                "bob": "bob-pw",
                "carol": "carol-pw",
                "hank": "hank-pw",
            },
            groups={"hank": [HELPDESK_GROUP]},
        )
        self.mailer = RecordingMailer()
        self.sms = RecordingSms()
        self.config = parse_config(
            CONFIG.format(grace_days=grace_days, reject_delay=reject_delay, default=default),
            source="test.yaml",
        )
        self.recorder = AuditRecorder(
            AsyncStore(self.store, InlineRunner()), self.clock, batch_size=1
        )
        self.authenticator = Authenticator(
            settings=PipelineSettings(
                otp=self.config.otp,
                lockout=self.config.lockout,
                policy=Policy(self.config.policy, self.config.trusted_devices.ttl),
                rate_limits=self.config.rate_limits,
            ),
            directory=self.directory,
            store=AsyncStore(self.store, self.db),
            factors=FactorRegistry(
                [
                    TotpFactor(skew=1),
                    BackupCodeFactor(),
                    EmergencyCodeFactor(),
                    EmailFactor(EMAIL, self.mailer, None),  # type: ignore[arg-type]
                    SmsFactor(SMS, self.sms, None),  # type: ignore[arg-type]
                ]
            ),
            clock=self.clock,
            observers=[self.recorder],
            audit=self.recorder,
        )
        self.backend = Backend(self.config, self.authenticator)
        assert self.config.portal is not None
        #: Sessions live in the store, through the same runner as everything else.
        self.sessions = AsyncStore(self.store, self.db)
        self.app = PortalApp(
            settings=self.config.portal,
            backend=lambda: self.backend,
            sessions=SessionManager(
                self.sessions,
                self.clock,
                idle=self.config.portal.session_idle,
                longest=self.config.portal.session_max,
                reauth_after=self.config.portal.reauth_after,
            ),
            clock=self.clock,
        )
        self.store.add_token(
            TokenRecord("tok-a", "alice", "totp", ALICE_SECRET, 6, "SHA1", 30, T0 - 1000)
        )
        self.store.add_token(
            TokenRecord("tok-h", "hank", "totp", HANK_SECRET, 6, "SHA1", 30, T0 - 1000)
        )

    def portal_sessions(self) -> dict[bytes, PortalSession]:
        """The sessions the store holds now (live or not yet purged), by key."""
        return dict(self.store._portal)

    def code(self, secret: bytes = ALICE_SECRET, steps: int = 0) -> str:
        return totp_code(secret, self.clock.seconds() + 30 * steps)

    def radius(self, user: str, password: str, station: str | None = None) -> Decision:
        """The same user over RADIUS (append mode: password followed by the code)."""
        request = AccessRequest(
            user_name=user.encode(),
            password=password.encode(),
            method=AuthMethod.PAP,
            state=None,
            client_name="vpn",
            client_address="192.0.2.10",
            calling_station_id=station,
        )
        return done(self.authenticator.handle(request))

    def audit(self, **query: Any) -> list[Any]:
        """The audit rows so far (decisions are queued, then written)."""
        from radmfa.store.base import AuditQuery

        while self.recorder.queued:  # one row per batch here
            done(self.recorder.flush())
        return self.store.query_audit(AuditQuery(**query))

    def site(self) -> PortalSite:
        assert self.config.portal is not None
        portal = self.config.portal
        return PortalSite(
            PortalResource(self.app, portal, tls=False), self.clock, trusted=portal.trusted_proxies
        )


def done(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "expected the call to finish synchronously"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


_CSRF = re.compile(rb'name="csrf" value="([^"]*)"')


@dataclass
class Browser:
    """Cookies and form tokens kept like a browser keeps them; requests go to the app."""

    world: World
    client: str = "203.0.113.7"
    cookies: dict[str, str] = field(default_factory=dict)
    last: WebResponse | None = None

    def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> WebResponse:
        request = WebRequest(
            method=method,
            path=path,
            headers={k.replace("_", "-").lower(): v for k, v in headers.items()},
            cookies=dict(self.cookies),
            body=body,
            client=self.client,
        )
        handled = Deferred.fromCoroutine(self.world.app.handle(request))
        drain = getattr(self.world.db, "drain", None)
        if drain is not None:
            drain()
        response = done(handled)
        for cookie in response.cookies:
            if cookie.max_age == 0:
                self.cookies.pop(cookie.name, None)
            else:
                self.cookies[cookie.name] = cookie.value
        self.last = response
        return response

    def get(self, path: str) -> WebResponse:
        return self.request("GET", path)

    def csrf(self) -> str:
        assert self.last is not None
        found = _CSRF.search(self.last.body)
        assert found, self.last.body
        return found.group(1).decode()

    def post(self, path: str, fields: dict[str, str], *, csrf: bool = True) -> WebResponse:
        if csrf and "csrf" not in fields:
            fields = {"csrf": self.csrf(), **fields}
        body = urlencode(fields).encode()
        return self.request("POST", path, body, content_type="application/x-www-form-urlencoded")

    def sign_in(self, user: str, password: str) -> WebResponse:
        self.get("/signin")
        return self.post("/signin", {"username": user, "password": password})

    def follow(self) -> WebResponse:
        assert self.last is not None and self.last.status == 303
        return self.get(self.last.headers["Location"])


def http(
    site: PortalSite, raw: bytes, *, peer: str = "203.0.113.7", clock: Clock | None = None
) -> bytes:
    """One raw HTTP/1.1 exchange through the whole twisted.web stack."""
    address = IPv4Address("TCP", peer, 40000)
    protocol = site.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    protocol.dataReceived(raw)
    out = transport.value()
    protocol.connectionLost(None)  # type: ignore[arg-type]
    return out


def headers_of(raw: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return status, found, body


Check = Callable[[WebResponse], None]
