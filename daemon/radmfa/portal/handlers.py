"""The portal's pages: sign-in (password, then a code typed or sent on request), enrolling
an authenticator app, sign-out; the user's own pages (:mod:`~radmfa.portal.selfservice`) and
the help-desk pages (:mod:`~radmfa.portal.helpdesk`) register their routes here.

Every POST carries a form token, compared in constant time: before sign-in the value of a
``pre`` cookie (double submit: a page of another site can neither read it nor, with
SameSite=Strict and a ``__Host-`` name over https, send it), after sign-in the session's
own token. Every change acts on the session's user; no form field names a user, except the
user name typed into the sign-in form and the subject of a help-desk action.

Every ``/helpdesk`` URL answers 403 before anything else is read unless the session is a
full one whose user was a member of ``portal.helpdesk_groups`` at sign-in.

Every security change asks :meth:`PortalApp.step_up` first: past ``portal.reauth_after``
since the session last proved a factor, it changes nothing and sends the browser to a
"confirm it is you" page (:mod:`~radmfa.portal.stepup`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from radmfa.admin.links import LINK_PATH, link_hash, link_secret
from radmfa.admin.tokens import provisioning_uri, secret_base32
from radmfa.auth.policy import GroupSet
from radmfa.auth.signin import (
    CHANNEL_PORTAL,
    SignIn,
    SignInParts,
    SignInResult,
    Step,
    sendable_tokens,
)
from radmfa.config import Config, PortalConfig, fold_name
from radmfa.directory.base import DirectoryOutcome
from radmfa.portal.account import Account, AccountParts, Confirmed
from radmfa.portal.desk import HelpDesk
from radmfa.portal.pages import STYLESHEET, Pages, qr_svg
from radmfa.portal.sessions import (
    STAGE_CODE,
    STAGE_ENROLL,
    STAGE_FULL,
    Session,
    SessionManager,
    same_token,
)
from radmfa.portal.stepup import CONFIRM, RETURNS, StepUpPages
from radmfa.portal.web import (
    BadRequest,
    Cookie,
    WebRequest,
    WebResponse,
    cookie_name,
    loggable_path,
    parse_form,
)
from radmfa.store.base import StoreError

__all__ = ["PortalApp", "PortalBackend"]

log = Logger(namespace="radmfa.portal")

SESSION_COOKIE = "radmfa-session"
PRE_COOKIE = "radmfa-pre"
#: The secret of an enrolment link the browser came with, until it signs in and enrolls.
LINK_COOKIE = "radmfa-link"
LINK_GONE = (
    "This enrolment link does not work any more: it was used, or it expired. Ask the help "
    "desk for a new one."
)
SIGNIN_FAILED = "Sign-in failed. Check your user name and password, and try again."
CODE_FAILED = "That code did not work. Type the current code from your app, or a backup code."
SENT_FAILED = "That code did not work. Type the code we sent, or ask for a new one."


class PortalBackend(Protocol):
    """The running configuration and pipeline (the daemon's current ``Runtime``)."""

    @property
    def config(self) -> Config: ...

    @property
    def authenticator(self) -> _Parts: ...


class _Parts(SignInParts, AccountParts, Protocol):
    """Both halves of what the portal uses of the pipeline."""


Handler = Callable[[WebRequest, Session | None], Awaitable[WebResponse]]

#: Token types an authenticator app holds (what "replace" may swap).
APP_TYPES = ("totp", "hotp")
#: Where the help-desk pages live (every URL under it is theirs).
HELPDESK = "/helpdesk"


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
        self.desk = HelpDesk(self.account)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/signin"): self.signin_form,
            ("POST", "/signin"): self.signin,
            ("GET", "/signin/code"): self.code_form,
            ("POST", "/signin/code"): self.code,
            ("POST", "/signin/send"): self.send_code,
            ("GET", "/enroll/app"): self.enroll_form,
            ("POST", "/enroll/app"): self.enroll,
            ("POST", "/enroll/replace"): self.enroll_replace,
            ("POST", "/signout"): self.signout,
        }
        from radmfa.portal.helpdesk import HelpDeskPages
        from radmfa.portal.selfservice import SelfServicePages

        self.routes.update(SelfServicePages(self).routes())
        self.routes.update(HelpDeskPages(self).routes())
        self.routes.update(StepUpPages(self).routes())

    # -- dispatch ----------------------------------------------------------------------------

    async def handle(self, request: WebRequest) -> WebResponse:
        """The response to ``request``; bad input is a 400 page, a store outage a 503 page,
        never an exception."""
        try:
            return await self._dispatch(request)
        except StoreError as e:
            log.warn(
                "portal request for {path}: the store is unavailable ({err})",
                path=loggable_path(request.path),
                err=str(e),
            )
            return self.unavailable(request)

    async def _dispatch(self, request: WebRequest) -> WebResponse:
        method = "GET" if request.method == "HEAD" else request.method
        if (method, request.path) == ("GET", "/static/portal.css"):
            return WebResponse(body=STYLESHEET, content_type="text/css; charset=utf-8")
        if method == "GET" and request.path.startswith("/" + LINK_PATH):
            return await self.open_link(request, request.path[len(LINK_PATH) + 1 :])
        handler = self.routes.get((method, request.path))
        if handler is None:
            if any(path == request.path for _method, path in self.routes):
                return self.page("error.html", status=405, title="Not allowed")
            return self.page("error.html", status=404, title="Not found")
        try:
            session = await self._session_of(request)
            if request.path == HELPDESK or request.path.startswith(HELPDESK + "/"):
                refused = await self._helpdesk_refusal(session)
                if refused is not None:
                    return refused
            return await handler(request, session)
        except BadRequest as e:
            return self.page("error.html", status=400, title="Bad request", message=str(e))

    async def _session_of(self, request: WebRequest) -> Session | None:
        """The request's live session, as long as its user still stands: a user disabled
        or locked meanwhile (by an admin, the help desk, failures over RADIUS, another
        node) is signed out here, as a new sign-in would be refused."""
        session = await self.sessions.find(request.cookies.get(self._cookie(request)))
        if session is None or await self.account.in_good_standing(session.user):
            return session
        await self.sessions.end(session)
        log.info(
            "{user}: portal session ended, the account is disabled or locked", user=session.user
        )
        return None

    async def _helpdesk_refusal(self, session: Session | None) -> WebResponse | None:
        """None for a help-desk member's full session whose user is a member still (asked
        of the directory on every help-desk request: rights end with the membership, not
        with the session); else where to go, or 403."""
        if session is None:
            return WebResponse.redirect("/signin")
        if session.stage == STAGE_CODE:
            return WebResponse.redirect("/signin/code")
        if session.stage == STAGE_FULL and session.helpdesk:
            if await self.helpdesk_member(session.name):
                return None
            log.warn(
                "{user} is no longer in portal.helpdesk_groups: help-desk page refused",
                user=session.user,
            )
        return self.page(
            "error.html",
            status=403,
            title="Not allowed",
            message="These pages are for the help desk.",
            csrf=session.csrf,
            signed_in=session.name,
        )

    def _cookie(self, request: WebRequest, base: str = SESSION_COOKIE) -> str:
        return cookie_name(base, request.secure)

    def page(self, template: str, *, status: int = 200, **values: object) -> WebResponse:
        return WebResponse(status=status, body=self.pages.render(template, **values))

    def session_cookie(self, request: WebRequest, session_id: str) -> Cookie:
        return Cookie(self._cookie(request), session_id)

    def form(self, request: WebRequest, session: Session, *fields: str) -> dict[str, str]:
        """The form of a signed-in page, once its token is checked."""
        form = parse_form(request, ("csrf", *fields))
        if not same_token(session.csrf, form.get("csrf")):
            raise BadRequest("the form expired or came from another site; reload the page")
        return form

    def step_up(self, session: Session, back: str) -> WebResponse | None:
        """None when ``session`` may make a security change now (a factor proven within
        ``portal.reauth_after``); else the way to the confirm page, which returns to the
        page :data:`~radmfa.portal.stepup.RETURNS` names ``back``. Nothing is changed."""
        if self.sessions.fresh(session):
            return None
        if back not in RETURNS:
            raise ValueError(f"no confirm page returns to {back!r}")
        log.info("{user}: a security change asks for a second factor again", user=session.user)
        return WebResponse.redirect(CONFIRM + back)

    async def take_notice(self, session: Session) -> str | None:
        """The session's one-time message, cleared for the pages after this one."""
        if session.notice is not None:
            await self.sessions.notice(session, None)
        return session.notice

    def sign_in(self) -> SignIn:
        backend = self.backend()
        return SignIn(
            backend.authenticator,
            self.clock,
            strip_realm=backend.config.usernames.strip_realm,
            channel=CHANNEL_PORTAL,
        )

    async def after_failure(self, started: float) -> None:
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
        self,
        request: WebRequest,
        *,
        error: str | None = None,
        name: str = "",
        notice: str | None = None,
    ) -> WebResponse:
        """The form, with the ``pre`` cookie its token must match (a new one if none)."""
        cookie = self._cookie(request, PRE_COOKIE)
        token = request.cookies.get(cookie, "")
        fresh = not token or len(token) > 64
        if fresh:
            token = secrets.token_urlsafe(32)
        response = self.page("signin.html", csrf=token, error=error, username=name, notice=notice)
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
        link = self._link_of(request)
        result = await self.sign_in().password(
            name, form.get("password", ""), request.client, link=link
        )
        if session is not None:  # whatever it was, it is not this sign-in's
            await self.sessions.end(session)
        if result.step is Step.REFUSED:
            await self.after_failure(started)
            return self._signin_page(request, error=SIGNIN_FAILED, name=name)
        if result.step is Step.UNAVAILABLE:
            return self.unavailable(request)
        if result.step is Step.HELP_DESK:
            return self.page("helpdesk.html", name=result.user)
        stage = STAGE_CODE if result.step is Step.CODE_DUE else STAGE_ENROLL
        return await self._start(request, result, stage, None)

    async def _start(
        self,
        request: WebRequest,
        result: SignInResult,
        stage: str,
        replacing: Session | None,
        *,
        helpdesk: bool = False,
    ) -> WebResponse:
        assert result.user is not None and result.key is not None
        started = await self.sessions.start(
            result.key,
            result.user,
            stage,
            replacing=replacing,
            grace_ends_at=result.grace_ends_at,
            helpdesk=helpdesk,
            link=result.link,
        )
        if started is None:  # another request of this browser took the step first
            return WebResponse.redirect("/")
        session_id, _session = started
        response = WebResponse.redirect("/signin/code" if stage == STAGE_CODE else "/")
        response.cookies.append(self.session_cookie(request, session_id))
        return response

    def _link_of(self, request: WebRequest) -> bytes | None:
        """The hash of the enrolment link this browser came with (None: none)."""
        secret = link_secret(request.cookies.get(self._cookie(request, LINK_COOKIE), ""))
        return link_hash(secret) if secret is not None else None

    async def open_link(self, request: WebRequest, text: str) -> WebResponse:
        """An enrolment link: kept in a cookie for the sign-in that follows, which it lets
        enroll a first factor if (and only if) it is that user's. The page says nothing
        about whose link it is."""
        secret = link_secret(text)
        found = (
            await self.backend().authenticator.store.enrol_link(link_hash(secret))
            if secret is not None
            else None
        )
        now = self.clock.seconds()
        if secret is None or found is None or found.used_at is not None or now >= found.expires_at:
            return self.page("error.html", status=404, title="Link expired", message=LINK_GONE)
        response = self._signin_page(
            request,
            notice="Sign in with your network account to set up two-factor authentication.",
        )
        response.cookies.append(Cookie(self._cookie(request, LINK_COOKIE), secret))
        return response

    async def link_gone(self, request: WebRequest, session: Session) -> WebResponse:
        """A password-only session whose enrolment link was spent or expired meanwhile."""
        await self.sessions.end(session)
        response = self.page("error.html", status=403, title="Link expired", message=LINK_GONE)
        response.cookies.append(Cookie(self._cookie(request), "", max_age=0))
        response.cookies.append(Cookie(self._cookie(request, LINK_COOKIE), "", max_age=0))
        return response

    def around_proxy(self) -> WebResponse:
        """A browser that reached the plain-HTTP port around the TLS proxy: sent to the
        portal's address, with nothing to type a password into."""
        where = self.settings.public_url
        return self.page(
            "error.html",
            status=403,
            title="Use the secure address",
            message=(
                f"Open {where} to reach this service."
                if where is not None
                else "Open this service through its https:// address."
            ),
        )

    def unavailable(self, request: WebRequest) -> WebResponse:
        return self.page(
            "error.html",
            status=503,
            title="Try again in a moment",
            message="The service cannot reach its database right now. Nothing was changed.",
        )

    async def code_form(self, request: WebRequest, session: Session | None) -> WebResponse:
        if session is None or session.stage != STAGE_CODE:
            return WebResponse.redirect("/" if session is not None else "/signin")
        return await self._code_page(session)

    async def _code_page(
        self, session: Session, *, error: str | None = None, notice: str | None = None
    ) -> WebResponse:
        """The code form, with a "send me a code" button per confirmed email/SMS address."""
        parts = self.backend().authenticator
        tokens = await parts.store.list_tokens(session.user)
        sendable = [
            (t.type, parts.factors.label(t.type), d.masked)
            for t in sendable_tokens(parts.factors, tokens, self.clock.seconds())
            if (oob := parts.factors.out_of_band(t.type)) is not None
            and (d := oob.destination(t)) is not None
        ]
        sent = session.sent
        return self.page(
            "code.html",
            csrf=session.csrf,
            name=session.name,
            sendable=sendable,
            sent=sent.masked if sent is not None else None,
            error=error,
            notice=notice,
        )

    async def code(self, request: WebRequest, session: Session | None) -> WebResponse:
        started = self.clock.seconds()
        if session is None or session.stage != STAGE_CODE:
            return WebResponse.redirect("/" if session is not None else "/signin")
        form = self.form(request, session, "code")
        result = await self.sign_in().code(
            session.name, form.get("code", ""), request.client, session.sent
        )
        if result.step is Step.SIGNED_IN:
            helpdesk = await self.helpdesk_member(session.name)
            if helpdesk:
                log.info("{user} signed in to the portal as a help-desk member", user=session.user)
            return await self._start(request, result, STAGE_FULL, session, helpdesk=helpdesk)
        if result.step is Step.UNAVAILABLE:
            return self.unavailable(request)
        await self.after_failure(started)
        failed = SENT_FAILED if session.sent is not None else CODE_FAILED
        return await self._code_page(session, error=failed)

    async def send_code(self, request: WebRequest, session: Session | None) -> WebResponse:
        """ "Send me a code": to the user's confirmed address of the chosen type, under the
        same cooldown and hourly caps as RADIUS."""
        if session is None or session.stage != STAGE_CODE:
            return WebResponse.redirect("/" if session is not None else "/signin")
        form = self.form(request, session, "factor")
        outcome = await self.sign_in().send(session.user, session.name, form.get("factor", ""))
        if outcome.sent is None:
            if outcome.retry_after:
                wait = math.ceil(outcome.retry_after)
                error = f"Please wait {wait} seconds before asking for another code."
            else:
                error = "There is no such address to send a code to."
            return await self._code_page(session, error=error)
        session = replace(session, sent=outcome.sent)
        await self.sessions.sent(session, outcome.sent)
        minutes = max(1, math.ceil((outcome.sent.expires_at - self.clock.seconds()) / 60))
        return await self._code_page(
            session,
            notice=f"We sent a code to {outcome.sent.masked}. It works for {minutes} minutes.",
        )

    async def helpdesk_member(self, name: str) -> bool:
        """Whether ``name`` is in one of ``portal.helpdesk_groups`` (the directory's group
        lookup, on the service connection). Any failure: not a member."""
        wanted = self.settings.helpdesk_groups
        resolver = self.backend().authenticator.groups
        if not wanted or resolver is None:
            return False
        try:
            found = await resolver.user_groups(name)
        except Exception:
            log.failure("help-desk group lookup of {user} failed", user=name)
            return False
        if found.outcome is not DirectoryOutcome.OK:
            log.warn(
                "help-desk group lookup of {user}: {outcome} {detail}; not a help-desk session",
                user=name,
                outcome=found.outcome.value,
                detail=found.detail,
            )
            return False
        groups = GroupSet.of(found.groups)
        return any(groups.has(g if "=" in g else fold_name(g)) for g in wanted)

    async def signout(self, request: WebRequest, session: Session | None) -> WebResponse:
        if session is None:
            return WebResponse.redirect("/signin")
        self.form(request, session)
        await self.sessions.end(session)
        log.info("{user} signed out of the portal", user=session.user)
        response = self.page("signedout.html")
        response.cookies.append(Cookie(self._cookie(request), "", max_age=0))
        return response

    # -- signed in ---------------------------------------------------------------------------

    def signed_in(self, session: Session | None) -> WebResponse | Session:
        """The session when it may use the enrolment pages, else where to go instead."""
        if session is None:
            return WebResponse.redirect("/signin")
        if session.stage == STAGE_CODE:
            return WebResponse.redirect("/signin/code")
        return session

    def full(self, session: Session | None) -> WebResponse | Session:
        """The session when a second factor was proven (every page that changes more than
        "add a first factor"), else where to go instead."""
        checked = self.signed_in(session)
        if isinstance(checked, Session) and checked.stage != STAGE_FULL:
            return WebResponse.redirect("/")
        return checked

    async def enroll_form(self, request: WebRequest, session: Session | None) -> WebResponse:
        checked = self.signed_in(session)
        if isinstance(checked, WebResponse):
            return checked
        session = checked
        if session.stage == STAGE_ENROLL and await self.account.has_factor(session.user):
            return await self.has_factor(request, session)
        # A first factor on the password alone has nothing to prove; another one has.
        stale = self.step_up(session, "app") if session.stage == STAGE_FULL else None
        if stale is not None:
            return stale
        notice = await self.take_notice(session)
        if session.pending is None:
            totp = self.backend().config.otp.totp
            token = self.account.new_app_token(session.user, totp, "added in the portal")
            # A second tab asking at the same moment is shown the same app to scan.
            pending = await self.sessions.offer_pending(session, token, only_if_empty=True)
            if pending is None:  # the session ended meanwhile
                return WebResponse.redirect("/signin")
            session = replace(session, pending=pending)
        return self._enroll_page(request, session, notice=notice)

    def _enroll_page(
        self,
        request: WebRequest,
        session: Session,
        error: str | None = None,
        notice: str | None = None,
    ) -> WebResponse:
        assert session.pending is not None
        token = session.pending.token
        issuer = self.backend().config.otp.totp.issuer
        uri = provisioning_uri(token, issuer)
        secret = secret_base32(token)
        return self.page(
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
            replacing=session.replacing,
            error=error,
            notice=notice,
        )

    async def enroll(self, request: WebRequest, session: Session | None) -> WebResponse:
        checked = self.signed_in(session)
        if isinstance(checked, WebResponse):
            return checked
        session = checked
        form = self.form(request, session, "code")
        stale = self.step_up(session, "app") if session.stage == STAGE_FULL else None
        if stale is not None:  # the app being enrolled stays for after the confirmation
            return stale
        pending = await self.sessions.take_pending(session)
        if pending is None:  # confirmed meanwhile (a second submit), or never started
            return WebResponse.redirect("/")
        outcome = await self.account.confirm(
            session.user,
            pending.token,
            form.get("code", ""),
            password_only=session.stage == STAGE_ENROLL,
            replacing=pending.replacing,
            link=session.link,
        )
        if outcome is Confirmed.WRONG_CODE:
            # Back for another try, unless a new one was offered meanwhile.
            kept = await self.sessions.offer_pending(
                session, pending.token, pending.replacing, only_if_empty=True
            )
            if kept is None:
                return WebResponse.redirect("/")
            session = replace(session, pending=kept)
            return self._enroll_page(
                request,
                session,
                error="That code did not match. Type the code your app shows now.",
            )
        if outcome is Confirmed.HAS_FACTOR:
            return await self.has_factor(request, session)
        if outcome is Confirmed.LINK_GONE:
            return await self.link_gone(request, session)
        log.info("{user} enrolled an authenticator app in the portal", user=session.user)
        notice = (
            "Authenticator app added."
            if pending.replacing is None
            else ("Authenticator app replaced: the old one no longer works.")
        )
        return await self.proven(request, session, notice)

    async def proven(self, request: WebRequest, session: Session, notice: str) -> WebResponse:
        """A factor was just added and proven: to the home page with ``notice``; a
        password-only session becomes a full one (with a new id; an enrolment link it came
        with is spent, and its cookie goes)."""
        if session.stage == STAGE_ENROLL:
            started = await self.sessions.start(
                session.user, session.name, STAGE_FULL, replacing=session, notice=notice
            )
            response = WebResponse.redirect("/" if started is not None else "/signin")
            if started is not None:
                response.cookies.append(self.session_cookie(request, started[0]))
            if session.link is not None:
                response.cookies.append(Cookie(self._cookie(request, LINK_COOKIE), "", max_age=0))
            return response
        await self.sessions.notice(session, notice)
        return WebResponse.redirect("/")

    async def enroll_replace(self, request: WebRequest, session: Session | None) -> WebResponse:
        """A new phone: enroll a new app in place of one of the user's TOTP/HOTP tokens;
        the old one goes when the new one is confirmed, in the same step."""
        checked = self.full(session)
        if isinstance(checked, WebResponse):
            return checked
        session = checked
        form = self.form(request, session, "token_id")
        stale = self.step_up(session, "home")
        if stale is not None:
            return stale
        if not form.get("token_id"):  # "keep the old one too": a plain enrolment
            if session.pending is not None and session.pending.replacing is not None:
                await self.sessions.offer_pending(session, session.pending.token)
            return WebResponse.redirect("/enroll/app")
        factors = await self.account.factors_of(session.user)
        target = next(
            (f for f in factors if f.token_id == form.get("token_id") and f.type in APP_TYPES),
            None,
        )
        if target is None:
            raise BadRequest("that authenticator app is not one of yours")
        totp = self.backend().config.otp.totp
        token = self.account.new_app_token(session.user, totp, "added in the portal")
        await self.sessions.offer_pending(session, token, target.token_id)
        return WebResponse.redirect("/enroll/app")

    async def has_factor(self, request: WebRequest, session: Session) -> WebResponse:
        """A password-only session of a user who has a factor by now: it ends here."""
        await self.sessions.end(session)
        response = self.page(
            "error.html",
            status=403,
            title="Sign in again",
            message="Your account has a second factor now. Sign in again and use it.",
        )
        response.cookies.append(Cookie(self._cookie(request), "", max_age=0))
        return response
