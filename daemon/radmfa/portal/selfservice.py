"""The signed-in user's own pages: home (factors, backup codes left, preferred factor),
backup codes, an email address or phone number, removing a factor, trusted devices, recent
sign-ins.

Every page acts on the session's user; a form never names a user. Every change needs a
full session (a second factor proven at sign-in), except registering a first email address
or phone number during the enrolment grace period, like enrolling a first app. Security
changes (backup codes, removing a factor, a new address) need that factor proven within
``portal.reauth_after`` (:meth:`~radmfa.portal.handlers.PortalApp.step_up`); the preferred
factor and forgetting trusted devices do not: they take no trust away from the owner. Secrets
(backup codes) are in the answer to the POST that made them and nowhere else: every page
is ``no-store``, and a reload of the page shows only how many are left.

A new address is stored only once the code sent to it came back; when the user has another
factor, a code from it is asked for first (the rule RADIUS applies to a changed address:
whoever changes where codes go must prove a factor the user already trusts).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from twisted.logger import Logger

from radmfa.admin.factors import ADDRESS_TYPES, FactorAdminError, clean_address
from radmfa.auth.outofband import can_finish, code_hash_matches, destination_of
from radmfa.auth.signin import SentCode, Step, code_tokens
from radmfa.auth.stations import device_key
from radmfa.factors.outofband import SOURCE_CLI, address_token
from radmfa.portal.account import Confirmed, Removed
from radmfa.portal.sessions import STAGE_ENROLL, STAGE_FULL, Session
from radmfa.portal.web import BadRequest, WebRequest, WebResponse

if TYPE_CHECKING:
    from radmfa.portal.handlers import Handler, PortalApp

__all__ = ["SelfServicePages"]

log = Logger(namespace="radmfa.portal")

#: A page of a full session: the session is known to be full when it is called.
FullHandler = Callable[[WebRequest, Session], Awaitable[WebResponse]]

#: Wrong answers to a code sent to a new address before it must be sent again.
MAX_CONFIRM_TRIES = 3
#: What an address is called on the pages.
ADDRESS_WORDS = {"email": "email address", "sms": "mobile number"}


class SelfServicePages:
    """The user's own pages; routes into :class:`~radmfa.portal.handlers.PortalApp`."""

    def __init__(self, app: PortalApp) -> None:
        self.app = app
        self.account = app.account

    def routes(self) -> dict[tuple[str, str], Handler]:
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self.home,
            ("GET", "/backup"): self._full_only(self.backup_page),
            ("POST", "/backup"): self._full_only(self.backup),
            ("POST", "/factors/remove"): self._full_only(self.remove),
            ("POST", "/prefer"): self._full_only(self.prefer),
            ("GET", "/devices"): self._full_only(self.devices),
            ("POST", "/devices/forget"): self._full_only(self.forget),
            ("POST", "/devices/forget-all"): self._full_only(self.forget_all),
            ("GET", "/activity"): self._full_only(self.activity),
        }
        for kind in ADDRESS_TYPES:
            routes[("GET", f"/address/{kind}")] = self._address_form(kind)
            routes[("POST", f"/address/{kind}")] = self._address_send(kind)
            routes[("POST", f"/address/{kind}/confirm")] = self._address_confirm(kind)
        return routes

    def _full_only(self, handler: FullHandler) -> Handler:
        """``handler`` for a full session only (a second factor proven at sign-in); any other
        session gets what :meth:`PortalApp.full` answers instead."""

        async def checked(request: WebRequest, session: Session | None) -> WebResponse:
            full = self.app.full(session)
            if isinstance(full, WebResponse):
                return full
            return await handler(request, full)

        return checked

    # -- home ------------------------------------------------------------------------------------

    async def home(self, request: WebRequest, session: Session | None) -> WebResponse:
        checked = self.app.signed_in(session)
        if isinstance(checked, WebResponse):
            return checked
        session = checked
        if session.notice is not None:
            await self.app.sessions.notice(session, None)
        overview = await self.account.overview(session.user)
        parts = self.app.backend().authenticator
        address_types = [t for t in ADDRESS_TYPES if parts.factors.out_of_band(t) is not None]
        return self.app.page(
            "home.html",
            csrf=session.csrf,
            signed_in=session.name,
            notice=session.notice,
            overview=overview,
            factors=overview.factors,
            enroll_only=session.stage == STAGE_ENROLL,
            grace_ends_at=session.grace_ends_at,
            address_types=address_types,
            address_words=ADDRESS_WORDS,
            helpdesk=session.helpdesk and await self.app.helpdesk_member(session.name),
        )

    # -- backup codes ----------------------------------------------------------------------------

    async def backup_page(self, request: WebRequest, session: Session) -> WebResponse:
        overview = await self.account.overview(session.user)
        return self.app.page(
            "backup.html",
            csrf=session.csrf,
            signed_in=session.name,
            notice=await self.app.take_notice(session),
            left=overview.backup_left,
            total=overview.backup_total,
            codes=None,
        )

    async def backup(self, request: WebRequest, session: Session) -> WebResponse:
        """A new set, shown in this answer only (the previous set stops working)."""
        self.app.form(request, session)
        stale = self.app.step_up(session, "backup")
        if stale is not None:
            return stale
        codes = await self.account.backup_codes(session.user, self.app.backend().config)
        log.info("{user} made new backup codes in the portal", user=session.user)
        return self.app.page(
            "backup.html",
            csrf=session.csrf,
            signed_in=session.name,
            left=len(codes),
            total=len(codes),
            codes=codes,
        )

    # -- factors ---------------------------------------------------------------------------------

    async def remove(self, request: WebRequest, session: Session) -> WebResponse:
        form = self.app.form(request, session, "token_id")
        stale = self.app.step_up(session, "home")
        if stale is not None:
            return stale
        config = self.app.backend().config
        required = await self.account.mfa_required(
            session.name, session.user, [c.name for c in config.clients]
        )
        outcome = await self.account.remove(
            session.user, form.get("token_id", ""), keep_one=required
        )
        if outcome is Removed.LAST:
            notice = (
                "That is your last sign-in method, and your organisation requires one: add "
                "another first, or replace it."
            )
        elif outcome is Removed.GONE:
            notice = "That sign-in method was already gone."
        else:
            log.info("{user} removed a factor in the portal", user=session.user)
            notice = "Removed. It no longer works for signing in."
        await self.app.sessions.notice(session, notice)
        return WebResponse.redirect("/")

    async def prefer(self, request: WebRequest, session: Session) -> WebResponse:
        form = self.app.form(request, session, "factor")
        factor = form.get("factor", "")
        if factor != "none" and factor not in self.app.backend().authenticator.factors:
            raise BadRequest("no such kind of sign-in method")
        done = await self.account.prefer(session.user, factor)
        notice = "Preferred sign-in method saved." if done else "You have no such method."
        await self.app.sessions.notice(session, notice)
        return WebResponse.redirect("/")

    # -- trusted devices -------------------------------------------------------------------------

    async def devices(self, request: WebRequest, session: Session) -> WebResponse:
        if session.notice is not None:
            await self.app.sessions.notice(session, None)
        return self.app.page(
            "devices.html",
            csrf=session.csrf,
            signed_in=session.name,
            notice=session.notice,
            devices=await self.account.devices(session.user),
        )

    async def forget(self, request: WebRequest, session: Session) -> WebResponse:
        form = self.app.form(request, session, "device")
        device = device_key(form.get("device"))
        if device is None:
            raise BadRequest("which device?")
        count = await self.account.forget(session.user, device)
        notice = "Device forgotten: it asks for a code again." if count else "No such device."
        await self.app.sessions.notice(session, notice)
        return WebResponse.redirect("/devices")

    async def forget_all(self, request: WebRequest, session: Session) -> WebResponse:
        self.app.form(request, session)
        count = await self.account.forget(session.user, None)
        notice = f"{count} device(s) forgotten." if count else "No devices to forget."
        await self.app.sessions.notice(session, notice)
        return WebResponse.redirect("/devices")

    # -- recent sign-ins -------------------------------------------------------------------------

    async def activity(self, request: WebRequest, session: Session) -> WebResponse:
        return self.app.page(
            "activity.html",
            csrf=session.csrf,
            signed_in=session.name,
            rows=await self.account.recent(session.user),
        )

    # -- email address, phone number -------------------------------------------------------------

    async def _address_session(
        self, request: WebRequest, session: Session | None
    ) -> WebResponse | Session:
        """A full session, or a password-only one of a user who still has no factor."""
        checked = self.app.signed_in(session)
        if isinstance(checked, WebResponse):
            return checked
        if checked.stage == STAGE_ENROLL and await self.account.has_factor(checked.user):
            return await self.app.has_factor(request, checked)
        return checked

    def _stale(self, session: Session, kind: str) -> WebResponse | None:
        """The step-up of a full session changing where codes go (a first address on the
        password alone has no factor to prove)."""
        if session.stage != STAGE_FULL:
            return None
        return self.app.step_up(session, f"address-{kind}")

    async def _vouchers(self, session: Session, kind: str) -> tuple[bool, bool]:
        """(another factor must vouch, a typed code can): the user's trusted factors of
        another type, and whether one of them takes a typed code."""
        if session.stage != STAGE_FULL:
            return False, False
        parts = self.app.backend().authenticator
        tokens = await parts.store.list_tokens(session.user)
        now = self.app.clock.seconds()
        others = [
            t
            for t in tokens
            if t.type != kind and parts.factors.usable(t, now) and can_finish(parts.factors, t)
        ]
        return bool(others), bool(code_tokens(parts.factors, others, now))

    def _address_form(self, kind: str) -> Handler:
        async def handler(request: WebRequest, session: Session | None) -> WebResponse:
            if self.app.backend().authenticator.factors.out_of_band(kind) is None:
                return self.app.page("error.html", status=404, title="Not found")
            checked = await self._address_session(request, session)
            if isinstance(checked, WebResponse):
                return checked
            return await self._address_page(
                checked, kind, notice=await self.app.take_notice(checked)
            )

        return handler

    async def _address_page(
        self,
        session: Session,
        kind: str,
        *,
        error: str | None = None,
        status: int = 200,
        notice: str | None = None,
    ) -> WebResponse:
        parts = self.app.backend().authenticator
        tokens = await parts.store.list_tokens(session.user)
        current = next((t for t in tokens if t.type == kind), None)
        destination = destination_of(parts.factors, current) if current is not None else None
        vouch, typed = await self._vouchers(session, kind)
        return self.app.page(
            "address.html",
            status=status,
            csrf=session.csrf,
            signed_in=session.name,
            kind=kind,
            word=ADDRESS_WORDS[kind],
            current=destination.masked if destination is not None else None,
            vouch=vouch,
            can_vouch=typed,
            error=error,
            notice=notice,
        )

    def _address_send(self, kind: str) -> Handler:
        async def handler(request: WebRequest, session: Session | None) -> WebResponse:
            if self.app.backend().authenticator.factors.out_of_band(kind) is None:
                return self.app.page("error.html", status=404, title="Not found")
            checked = await self._address_session(request, session)
            if isinstance(checked, WebResponse):
                return checked
            return await self._send(request, checked, kind)

        return handler

    async def _send(self, request: WebRequest, session: Session, kind: str) -> WebResponse:
        """Check the new address (and the code of another factor, when one must vouch),
        then send a code to the address; nothing is stored yet."""
        started = self.app.clock.seconds()
        form = self.app.form(request, session, "address", "code")
        stale = self._stale(session, kind)
        if stale is not None:
            return stale
        try:
            address = clean_address(kind, form.get("address", ""))
        except FactorAdminError:
            word = ADDRESS_WORDS[kind]
            example = "name@example.org" if kind == "email" else "+4915123456789"
            return await self._address_page(
                session, kind, error=f"That is not a {word} we can use (like {example})."
            )
        vouch, typed = await self._vouchers(session, kind)
        if vouch and not typed:
            return await self._address_page(session, kind)  # the page says: the help desk
        if vouch:
            result = await self.app.sign_in().code(
                session.name, form.get("code", ""), request.client
            )
            if result.step is Step.UNAVAILABLE:
                return self.app.unavailable(request)
            if result.step is not Step.SIGNED_IN:
                await self.app.after_failure(started)
                return await self._address_page(
                    session,
                    kind,
                    error="That code did not work. Type the current code from your app, "
                    "or a backup code.",
                )
        parts = self.app.backend().authenticator
        draft = address_token(kind, session.user, address, SOURCE_CLI, started)
        destination = destination_of(parts.factors, draft)
        assert destination is not None
        outcome = await self.app.sign_in().send_to(session.user, session.name, kind, destination)
        if outcome.sent is None:
            wait = math.ceil(outcome.retry_after or 1)
            return await self._address_page(
                session, kind, error=f"Please wait {wait} seconds before asking for another code."
            )
        session = replace(session, sent=outcome.sent)
        await self.app.sessions.sent(session, outcome.sent)
        return self._confirm_page(session, kind, outcome.sent)

    def _confirm_page(
        self, session: Session, kind: str, sent: SentCode, error: str | None = None
    ) -> WebResponse:
        minutes = max(1, math.ceil((sent.expires_at - self.app.clock.seconds()) / 60))
        return self.app.page(
            "address_confirm.html",
            csrf=session.csrf,
            signed_in=session.name,
            kind=kind,
            word=ADDRESS_WORDS[kind],
            masked=sent.masked,
            minutes=minutes,
            error=error,
        )

    def _address_confirm(self, kind: str) -> Handler:
        async def handler(request: WebRequest, session: Session | None) -> WebResponse:
            checked = await self._address_session(request, session)
            if isinstance(checked, WebResponse):
                return checked
            return await self._confirm(request, checked, kind)

        return handler

    async def _confirm(self, request: WebRequest, session: Session, kind: str) -> WebResponse:
        """The code sent to the new address came back: store the address, confirmed."""
        form = self.app.form(request, session, "code")
        stale = self._stale(session, kind)
        if stale is not None:
            return stale
        # Taken, not read: of two answers sent at once one is checked, and a wrong one
        # goes back with its try counted, so parallel guesses get no more tries.
        sent = await self.app.sessions.take_sent(session)
        now = self.app.clock.seconds()
        if sent is None or sent.token_id is not None or sent.factor != kind:
            return WebResponse.redirect(f"/address/{kind}")
        if now >= sent.expires_at:
            return await self._address_page(
                session, kind, error="The code expired. Ask for a new one."
            )
        oob = self.app.backend().authenticator.factors.out_of_band(kind)
        typed = oob.normalize(form.get("code", "")) if oob is not None else None
        if typed is None or not code_hash_matches(sent.code_hash, typed):
            tries = sent.tries + 1
            if tries >= MAX_CONFIRM_TRIES:
                return await self._address_page(
                    session, kind, error="Too many wrong codes. Ask for a new one."
                )
            sent = replace(sent, tries=tries)
            session = replace(session, sent=sent)
            await self.app.sessions.sent(session, sent)
            return self._confirm_page(session, kind, sent, "That code did not match.")
        session = replace(session, sent=None)  # used: never again
        outcome = await self.account.save_address(
            session.user,
            self.app.backend().config,
            kind,
            sent.address,
            password_only=session.stage == STAGE_ENROLL,
            link=session.link,
        )
        if outcome is Confirmed.HAS_FACTOR:
            return await self.app.has_factor(request, session)
        if outcome is Confirmed.LINK_GONE:
            return await self.app.link_gone(request, session)
        if outcome is not Confirmed.ADDED:
            raise BadRequest("that address cannot be used")
        log.info("{user} confirmed a new {kind} address in the portal", user=session.user,
                 kind=kind)  # fmt: skip
        word = ADDRESS_WORDS[kind]
        return await self.app.proven(request, session, f"Your {word} is confirmed.")
