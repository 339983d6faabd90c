"""Step-up: a security change asks for a second factor proven recently.

A full session proved a factor when it signed in; ``portal.reauth_after`` later, a change
that adds, replaces or removes a factor, makes backup codes, changes where codes go, or any
help-desk action, is not made: the user is sent here instead (:meth:`~radmfa.portal.
handlers.PortalApp.step_up`), proves a factor they have (a typed code, or an email/SMS code
sent on request) through the sign-in's own code step (:meth:`radmfa.auth.signin.SignIn.
code`: the same lockout, throttles, replay rule and audit row), and is sent back to the page
the change came from, to submit it again: a form is never replayed.

Where "back" is comes from a fixed table (:data:`RETURNS`): the confirm page's own URL
names an entry of it, and an unknown name is no page at all. Nothing the browser sends is
ever a redirect target.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from twisted.logger import Logger

from radmfa.admin.factors import ADDRESS_TYPES
from radmfa.auth.signin import SentCode, Step, code_tokens, sendable_tokens
from radmfa.portal.sessions import Session
from radmfa.portal.web import WebRequest, WebResponse

if TYPE_CHECKING:
    from radmfa.portal.handlers import Handler, PortalApp

__all__ = ["CONFIRM", "RETURNS", "StepUpPages"]

log = Logger(namespace="radmfa.portal")

#: The confirm pages live under this path, one per entry of :data:`RETURNS`.
CONFIRM = "/confirm/"
#: Where a confirmation returns to, by the name in the confirm page's URL: the pages whose
#: forms make security changes.
RETURNS: dict[str, str] = {
    "home": "/",
    "backup": "/backup",
    "app": "/enroll/app",
    "helpdesk": "/helpdesk",
    **{f"address-{kind}": f"/address/{kind}" for kind in ADDRESS_TYPES},
}
CONFIRMED = "Confirmed. You can make the change now."
WRONG_CODE = "That code did not work. Type the current code from your app, or a backup code."
WRONG_SENT = "That code did not work. Type the code we sent, or ask for a new one."


class StepUpPages:
    """The "confirm it is you" pages; routes into :class:`~radmfa.portal.handlers.PortalApp`."""

    def __init__(self, app: PortalApp) -> None:
        self.app = app

    def routes(self) -> dict[tuple[str, str], Handler]:
        routes: dict[tuple[str, str], Handler] = {}
        for name in RETURNS:
            routes[("GET", CONFIRM + name)] = self._form(name)
            routes[("POST", CONFIRM + name)] = self._confirm(name)
        return routes

    def _form(self, name: str) -> Handler:
        async def handler(request: WebRequest, session: Session | None) -> WebResponse:
            checked = self.app.full(session)
            if isinstance(checked, WebResponse):
                return checked
            if self.app.sessions.fresh(checked):
                return WebResponse.redirect(RETURNS[name])  # nothing to confirm
            return await self._page(checked, name)

        return handler

    def _confirm(self, name: str) -> Handler:
        async def handler(request: WebRequest, session: Session | None) -> WebResponse:
            checked = self.app.full(session)
            if isinstance(checked, WebResponse):
                return checked
            form = self.app.form(request, checked, "code", "factor")
            if "factor" in form:
                return await self._send(checked, name, form["factor"])
            return await self._check(request, checked, name, form.get("code", ""))

        return handler

    async def _page(
        self,
        session: Session,
        name: str,
        *,
        error: str | None = None,
        notice: str | None = None,
        sent: SentCode | None = None,
    ) -> WebResponse:
        """The code form, with a "send me a code" button per confirmed email/SMS address."""
        parts = self.app.backend().authenticator
        tokens = await parts.store.list_tokens(session.user)
        now = self.app.clock.seconds()
        sendable = [
            (t.type, parts.factors.label(t.type), d.masked)
            for t in sendable_tokens(parts.factors, tokens, now)
            if (oob := parts.factors.out_of_band(t.type)) is not None
            and (d := oob.destination(t)) is not None
        ]
        return self.app.page(
            "confirm.html",
            csrf=session.csrf,
            signed_in=session.name,
            action=CONFIRM + name,
            typed=bool(code_tokens(parts.factors, tokens, now)),
            sendable=sendable,
            sent=sent is not None,
            error=error,
            notice=notice,
        )

    async def _send(self, session: Session, name: str, factor: str) -> WebResponse:
        """A code to the user's confirmed address of that type, under the same cooldown
        and hourly caps as RADIUS and the sign-in; kept (its hash) for the next answer."""
        outcome = await self.app.sign_in().send(session.user, session.name, factor)
        if outcome.sent is None:
            if outcome.retry_after:
                wait = math.ceil(outcome.retry_after)
                error = f"Please wait {wait} seconds before asking for another code."
            else:
                error = "There is no such address to send a code to."
            return await self._page(session, name, error=error)
        await self.app.sessions.sent(replace(session, sent=outcome.sent), outcome.sent)
        minutes = max(1, math.ceil((outcome.sent.expires_at - self.app.clock.seconds()) / 60))
        return await self._page(
            session,
            name,
            sent=outcome.sent,
            notice=f"We sent a code to {outcome.sent.masked}. It works for {minutes} minutes.",
        )

    async def _take_sent(self, session: Session) -> SentCode | None:
        """The code sent for this confirmation, taken so it proves one step-up only (a
        code sent to a new address being registered is not one, and stays)."""
        if session.sent is None or session.sent.token_id is None:
            return None
        sent = await self.app.sessions.take_sent(session)
        if sent is not None and sent.token_id is None:
            await self.app.sessions.sent(session, sent)  # an address's, set meanwhile
            return None
        return sent

    async def _check(
        self, request: WebRequest, session: Session, name: str, code: str
    ) -> WebResponse:
        started = self.app.clock.seconds()
        sent = await self._take_sent(session)
        result = await self.app.sign_in().code(session.name, code, request.client, sent)
        if result.step is Step.SIGNED_IN:
            if not await self.app.sessions.prove(session):
                return WebResponse.redirect("/signin")  # the session ended meanwhile
            log.info("{user} confirmed a second factor in the portal", user=session.user)
            await self.app.sessions.notice(session, CONFIRMED)
            return WebResponse.redirect(RETURNS[name])
        if sent is not None and started < sent.expires_at:
            await self.app.sessions.sent(session, sent)  # the next try may still use it
        if result.step is Step.UNAVAILABLE:
            return self.app.unavailable(request)
        await self.app.after_failure(started)
        return await self._page(
            session, name, error=WRONG_SENT if sent is not None else WRONG_CODE, sent=sent
        )
