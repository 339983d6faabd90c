"""The portal's pages: sign-in (password, then the code), the user's own page, enrolling an
authenticator app, sign-out.

Every POST carries a form token, compared in constant time: before sign-in the value of a
``pre`` cookie (double submit: a page of another site can neither read it nor, with
SameSite=Strict and a ``__Host-`` name over https, send it), after sign-in the session's
own token. Every change acts on the session's user; no form field names a user, except the
user name typed into the sign-in form.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from radmfa.admin.tokens import provisioning_uri, secret_base32
from radmfa.auth.signin import CHANNEL_PORTAL, SignIn, SignInParts, SignInResult, Step
from radmfa.config import Config, PortalConfig
from radmfa.portal.account import Account, AccountParts, Confirmed
from radmfa.portal.pages import STYLESHEET, Pages, qr_svg
from radmfa.portal.sessions import (
    STAGE_CODE,
    STAGE_ENROLL,
    STAGE_FULL,
    Session,
    SessionManager,
    same_token,
)
from radmfa.portal.web import (
    BadRequest,
    Cookie,
    WebRequest,
    WebResponse,
    cookie_name,
    parse_form,
)

__all__ = ["PortalApp", "PortalBackend"]

log = Logger(namespace="radmfa.portal")

SESSION_COOKIE = "radmfa-session"
PRE_COOKIE = "radmfa-pre"
SIGNIN_FAILED = "Sign-in failed. Check your user name and password, and try again."
CODE_FAILED = "That code did not work. Type the current code from your app, or a backup code."


class PortalBackend(Protocol):
    """The running configuration and pipeline (the daemon's current ``Runtime``)."""

    @property
    def config(self) -> Config: ...

    @property
    def authenticator(self) -> _Parts: ...


class _Parts(SignInParts, AccountParts, Protocol):
    """Both halves of what the portal uses of the pipeline."""


Handler = Callable[[WebRequest, Session | None], Awaitable[WebResponse]]


class PortalApp:
    """Routes requests to pages; one per daemon process that serves the portal."""

    def __init__(
        self,
        *,
        settings: PortalConfig,
        backend: Callable[[], PortalBackend],
        sessions: SessionManager,
        clock: IReactorTime,
        pages: Pages | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.sessions = sessions
        self.clock = clock
        self.pages = pages or Pages()
        self.account = Account(lambda: self.backend().authenticator, clock)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self.home,
            ("GET", "/signin"): self.signin_form,
            ("POST", "/signin"): self.signin,
            ("GET", "/signin/code"): self.code_form,
            ("POST", "/signin/code"): self.code,
            ("GET", "/enroll/app"): self.enroll_form,
            ("POST", "/enroll/app"): self.enroll,
            ("POST", "/signout"): self.signout,
        }

    # -- dispatch ----------------------------------------------------------------------------

    async def handle(self, request: WebRequest) -> WebResponse:
        """The response to ``request``; bad input is a 400 page, never an exception."""
        method = "GET" if request.method == "HEAD" else request.method
        if (method, request.path) == ("GET", "/static/portal.css"):
            return WebResponse(body=STYLESHEET, content_type="text/css; charset=utf-8")
        handler = self.routes.get((method, request.path))
        if handler is None:
            if any(path == request.path for _method, path in self.routes):
                return self._page("error.html", status=405, title="Not allowed")
            return self._page("error.html", status=404, title="Not found")
        try:
            session = await self.sessions.find(request.cookies.get(self._cookie(request)))
            return await handler(request, session)
        except BadRequest as e:
            return self._page("error.html", status=400, title="Bad request", message=str(e))

    def _cookie(self, request: WebRequest, base: str = SESSION_COOKIE) -> str:
        return cookie_name(base, request.secure)

    def _page(self, template: str, *, status: int = 200, **values: object) -> WebResponse:
        return WebResponse(status=status, body=self.pages.render(template, **values))

    def _session_cookie(self, request: WebRequest, session_id: str) -> Cookie:
        return Cookie(self._cookie(request), session_id)

    def _form(self, request: WebRequest, session: Session, *fields: str) -> dict[str, str]:
        """The form of a signed-in page, once its token is checked."""
        form = parse_form(request, ("csrf", *fields))
        if not same_token(session.csrf, form.get("csrf")):
            raise BadRequest("the form expired or came from another site; reload the page")
        return form

    def _signin(self) -> SignIn:
        backend = self.backend()
        return SignIn(
            backend.authenticator,
            self.clock,
            strip_realm=backend.config.usernames.strip_realm,
            channel=CHANNEL_PORTAL,
        )

    async def _after_failure(self, started: float) -> None:
        """Failed sign-ins answer no sooner than ``radius.reject_delay`` after they came in:
        the time taken says nothing about which check failed, and guessing is slower."""
        delay = self.backend().config.radius.reject_delay
        left = started + delay - self.clock.seconds()
        if left > 0:
            await deferLater(self.clock, left, lambda: None)

    # -- sign-in -----------------------------------------------------------------------------

    async def signin_form(self, request: WebRequest, session: Session | None) -> WebResponse:
        if session is not None:
            return WebResponse.redirect("/signin/code" if session.stage == STAGE_CODE else "/")
        return self._signin_page(request)

    def _signin_page(
        self, request: WebRequest, *, error: str | None = None, name: str = ""
    ) -> WebResponse:
        """The form, with the ``pre`` cookie its token must match (a new one if none)."""
        cookie = self._cookie(request, PRE_COOKIE)
        token = request.cookies.get(cookie, "")
        fresh = not token or len(token) > 64
        if fresh:
            token = secrets.token_urlsafe(32)
        response = self._page("signin.html", csrf=token, error=error, username=name)
        if fresh:
            response.cookies.append(Cookie(cookie, token))
        return response

    async def signin(self, request: WebRequest, session: Session | None) -> WebResponse:
        started = self.clock.seconds()
        form = parse_form(request, ("csrf", "username", "password"))
        if not same_token(
            request.cookies.get(self._cookie(request, PRE_COOKIE), ""), form.get("csrf")
        ):
            raise BadRequest("the form expired or came from another site; reload the page")
        name = form.get("username", "").strip()
        result = await self._signin().password(name, form.get("password", ""), request.client)
        if session is not None:  # whatever it was, it is not this sign-in's
            await self.sessions.end(session)
        if result.step is Step.REFUSED:
            await self._after_failure(started)
            return self._signin_page(request, error=SIGNIN_FAILED, name=name)
        if result.step is Step.UNAVAILABLE:
            return self._unavailable(request)
        if result.step is Step.HELP_DESK:
            return self._page("helpdesk.html", name=result.user)
        stage = STAGE_CODE if result.step is Step.CODE_DUE else STAGE_ENROLL
        return await self._start(request, result, stage, None)

    async def _start(
        self, request: WebRequest, result: SignInResult, stage: str, replacing: Session | None
    ) -> WebResponse:
        assert result.user is not None and result.key is not None
        session_id, _session = await self.sessions.start(
            result.key,
            result.user,
            stage,
            replacing=replacing,
            grace_ends_at=result.grace_ends_at,
        )
        response = WebResponse.redirect("/signin/code" if stage == STAGE_CODE else "/")
        response.cookies.append(self._session_cookie(request, session_id))
        return response

    def _unavailable(self, request: WebRequest) -> WebResponse:
        return self._page(
            "error.html",
            status=503,
            title="Try again in a moment",
            message="The service cannot reach its database right now. Nothing was changed.",
        )

    async def code_form(self, request: WebRequest, session: Session | None) -> WebResponse:
        if session is None or session.stage != STAGE_CODE:
            return WebResponse.redirect("/" if session is not None else "/signin")
        return self._page("code.html", csrf=session.csrf, name=session.name)

    async def code(self, request: WebRequest, session: Session | None) -> WebResponse:
        started = self.clock.seconds()
        if session is None or session.stage != STAGE_CODE:
            return WebResponse.redirect("/" if session is not None else "/signin")
        form = self._form(request, session, "code")
        result = await self._signin().code(session.name, form.get("code", ""), request.client)
        if result.step is Step.SIGNED_IN:
            return await self._start(request, result, STAGE_FULL, session)
        if result.step is Step.UNAVAILABLE:
            return self._unavailable(request)
        await self._after_failure(started)
        return self._page("code.html", csrf=session.csrf, name=session.name, error=CODE_FAILED)

    async def signout(self, request: WebRequest, session: Session | None) -> WebResponse:
        if session is None:
            return WebResponse.redirect("/signin")
        self._form(request, session)
        await self.sessions.end(session)
        log.info("{user} signed out of the portal", user=session.user)
        response = self._page("signedout.html")
        response.cookies.append(Cookie(self._cookie(request), "", max_age=0))
        return response

    # -- signed in ---------------------------------------------------------------------------

    def _signed_in(self, session: Session | None) -> WebResponse | Session:
        """The session when it may use the account pages, else where to go instead."""
        if session is None:
            return WebResponse.redirect("/signin")
        if session.stage == STAGE_CODE:
            return WebResponse.redirect("/signin/code")
        return session

    async def home(self, request: WebRequest, session: Session | None) -> WebResponse:
        checked = self._signed_in(session)
        if isinstance(checked, WebResponse):
            return checked
        session = checked
        if session.notice is not None:
            await self.sessions.update(replace(session, notice=None))
        factors = await self.account.factors_of(session.user)
        return self._page(
            "home.html",
            csrf=session.csrf,
            signed_in=session.name,
            notice=session.notice,
            factors=factors,
            enroll_only=session.stage == STAGE_ENROLL,
            grace_ends_at=session.grace_ends_at,
        )

    async def enroll_form(self, request: WebRequest, session: Session | None) -> WebResponse:
        checked = self._signed_in(session)
        if isinstance(checked, WebResponse):
            return checked
        session = checked
        if session.stage == STAGE_ENROLL and await self.account.has_factor(session.user):
            return await self._has_factor(request, session)
        if session.pending is None:
            totp = self.backend().config.otp.totp
            pending = self.account.new_app_token(session.user, totp, "added in the portal")
            session = replace(session, pending=pending)
            await self.sessions.update(session)
        return self._enroll_page(request, session)

    def _enroll_page(
        self, request: WebRequest, session: Session, error: str | None = None
    ) -> WebResponse:
        token = session.pending
        assert token is not None
        issuer = self.backend().config.otp.totp.issuer
        uri = provisioning_uri(token, issuer)
        secret = secret_base32(token)
        return self._page(
            "enroll.html",
            csrf=session.csrf,
            signed_in=session.name,
            qr=qr_svg(uri),
            secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            issuer=issuer,
            account=token.user,
            digits=token.digits,
            period=token.period,
            algorithm=token.algorithm,
            error=error,
        )

    async def enroll(self, request: WebRequest, session: Session | None) -> WebResponse:
        checked = self._signed_in(session)
        if isinstance(checked, WebResponse):
            return checked
        session = checked
        form = self._form(request, session, "code")
        pending = await self.sessions.take_pending(session)
        if pending is None:  # confirmed meanwhile (a second submit), or never started
            return WebResponse.redirect("/")
        session = replace(session, pending=None)  # what is stored now: never write it back
        outcome = await self.account.confirm(
            session.user,
            pending,
            form.get("code", ""),
            password_only=session.stage == STAGE_ENROLL,
        )
        if outcome is Confirmed.WRONG_CODE:
            session = replace(session, pending=pending)
            await self.sessions.update(session)
            return self._enroll_page(
                request,
                session,
                error="That code did not match. Type the code your app shows now.",
            )
        if outcome is Confirmed.HAS_FACTOR:
            return await self._has_factor(request, session)
        log.info("{user} enrolled an authenticator app in the portal", user=session.user)
        if session.stage == STAGE_ENROLL:  # the new factor was just proven: a full session
            session_id, fresh = await self.sessions.start(
                session.user, session.name, STAGE_FULL, replacing=session
            )
            await self.sessions.update(replace(fresh, notice="Authenticator app added."))
            response = WebResponse.redirect("/")
            response.cookies.append(self._session_cookie(request, session_id))
            return response
        await self.sessions.update(replace(session, notice="Authenticator app added."))
        return WebResponse.redirect("/")

    async def _has_factor(self, request: WebRequest, session: Session) -> WebResponse:
        """A password-only session of a user who has a factor by now: it ends here."""
        await self.sessions.end(session)
        response = self._page(
            "error.html",
            status=403,
            title="Sign in again",
            message="Your account has a second factor now. Sign in again and use it.",
        )
        response.cookies.append(Cookie(self._cookie(request), "", max_age=0))
        return response
