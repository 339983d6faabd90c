"""The help-desk pages: find a user; their status, factors, devices, lock and recent sign-ins;
unlock, disable/enable, suspend until, resume, reset, forget devices, issue an emergency code,
create an enrolment link (with ``portal.public_url``).

Only for a full session of a member of ``portal.helpdesk_groups`` (checked at sign-in; the
dispatcher answers 403 to everyone else before a handler runs). Every action needs a reason
and writes an audit row naming the member (``hank (portal)``), through the same admin use
cases as the CLI. The subject is a form field (the member acts on others), canonicalised
like a login name; the actor is always the session's user. An emergency code is in the
answer to the POST that made it and nowhere else, and so is an enrolment link. Every action
needs the member's second factor proven within ``portal.reauth_after``
(:meth:`~radmfa.portal.handlers.PortalApp.step_up`): a member's stolen session cookie must
not hand out emergency codes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from twisted.logger import Logger

from radmfa.admin.links import DEFAULT_LINK_TTL
from radmfa.auth.identity import NameProblem, check_user, store_key
from radmfa.auth.stations import device_key
from radmfa.config import parse_duration
from radmfa.portal.desk import ACTIONS, DeskError
from radmfa.portal.sessions import Session
from radmfa.portal.web import BadRequest, WebRequest, WebResponse

if TYPE_CHECKING:
    from radmfa.portal.handlers import Handler, PortalApp

__all__ = ["HelpDeskPages", "parse_until"]

log = Logger(namespace="radmfa.portal")

REASON_REQUIRED = "Every help-desk action needs a reason (it goes into the audit trail)."


def parse_until(text: str, now: float) -> float | None:
    """``suspend until``: empty (until resumed), a duration from now (``8h``, ``2d``) or a
    time (``2030-01-31T12:00``, UTC unless a zone is given)."""
    value = text.strip()
    if not value:
        return None
    try:
        return now + parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DeskError(
            "Until: give a duration such as 8h or 2d, or a time such as 2030-01-31T12:00 (UTC)."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class HelpDeskPages:
    """Routes of the help desk into :class:`~radmfa.portal.handlers.PortalApp`."""

    def __init__(self, app: PortalApp) -> None:
        self.app = app
        self.desk = app.desk

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/helpdesk"): self.start,
            ("POST", "/helpdesk/find"): self.find,
            ("POST", "/helpdesk/user"): self.user,
            ("POST", "/helpdesk/act"): self.act,
            ("POST", "/helpdesk/emergency"): self.emergency,
            ("POST", "/helpdesk/link"): self.link,
        }

    @staticmethod
    def _member(session: Session | None) -> Session:
        """The dispatcher let only members through; say so to the type checker, and again
        to anyone calling a handler directly."""
        if session is None or not session.helpdesk:
            raise BadRequest("not a help-desk session")
        return session

    def _subject(self, text: str) -> str:
        """The store key of the user named in a form, read like a login name."""
        strip_realm = self.app.backend().config.usernames.strip_realm
        user = check_user(text.strip().encode("utf-8", "surrogateescape"), strip_realm=strip_realm)
        if isinstance(user, NameProblem):
            raise BadRequest("that is not a user name")
        return store_key(user)

    async def start(self, request: WebRequest, session: Session | None) -> WebResponse:
        member = self._member(session)
        notice = await self.app.take_notice(member)
        return self._find_page(member, query="", found=None, notice=notice)

    def _find_page(
        self,
        member: Session,
        *,
        query: str,
        found: list[str] | None,
        status: int = 200,
        notice: str | None = None,
    ) -> WebResponse:
        return self.app.page(
            "helpdesk_find.html",
            status=status,
            csrf=member.csrf,
            signed_in=member.name,
            query=query,
            found=found,
            notice=notice,
        )

    async def find(self, request: WebRequest, session: Session | None) -> WebResponse:
        member = self._member(session)
        form = self.app.form(request, member, "q")
        query = form.get("q", "").strip()
        found = await self.desk.find(query) if query else []
        return self._find_page(member, query=query, found=found)

    async def user(self, request: WebRequest, session: Session | None) -> WebResponse:
        member = self._member(session)
        form = self.app.form(request, member, "user")
        return await self._subject_page(member, self._subject(form.get("user", "")))

    async def _subject_page(
        self,
        member: Session,
        subject: str,
        *,
        notice: str | None = None,
        error: str | None = None,
        status: int = 200,
        code: str | None = None,
        code_until: float | None = None,
        link: str | None = None,
        link_until: float | None = None,
    ) -> WebResponse:
        view = await self.desk.view(subject)
        return self.app.page(
            "helpdesk_user.html",
            status=status,
            csrf=member.csrf,
            signed_in=member.name,
            view=view,
            own=subject == member.user,
            notice=notice,
            error=error,
            code=code,
            code_until=code_until,
            link=link,
            link_until=link_until,
            links=self.app.settings.public_url is not None,
        )

    async def act(self, request: WebRequest, session: Session | None) -> WebResponse:
        member = self._member(session)
        form = self.app.form(request, member, "user", "action", "reason", "until", "device")
        stale = self.app.step_up(member, "helpdesk")
        if stale is not None:
            return stale
        subject = self._subject(form.get("user", ""))
        action = form.get("action", "")
        if action not in ACTIONS:
            raise BadRequest("unknown action")
        reason = form.get("reason", "").strip()
        if not reason:
            return await self._subject_page(member, subject, error=REASON_REQUIRED, status=400)
        try:
            until = (
                parse_until(form.get("until", ""), self.app.clock.seconds())
                if action == "suspend"
                else None
            )
            device = device_key(form.get("device")) if form.get("device") else None
            if form.get("device") and device is None:
                raise DeskError("That is not a device.")
            done = await self.desk.act(
                member.user, subject, action, reason, until=until, device=device
            )
        except DeskError as e:
            return await self._subject_page(member, subject, error=str(e), status=400)
        log.info(
            "help desk {member}: {action} {user}", member=member.user, action=action, user=subject
        )
        return await self._subject_page(member, subject, notice=done)

    async def emergency(self, request: WebRequest, session: Session | None) -> WebResponse:
        """A single-use emergency code, shown in this answer only."""
        member = self._member(session)
        form = self.app.form(request, member, "user", "reason")
        stale = self.app.step_up(member, "helpdesk")
        if stale is not None:
            return stale
        subject = self._subject(form.get("user", ""))
        reason = form.get("reason", "").strip()
        if not reason:
            return await self._subject_page(member, subject, error=REASON_REQUIRED, status=400)
        try:
            code, until = await self.desk.emergency(
                member.user, subject, reason, self.app.backend().config
            )
        except DeskError as e:
            return await self._subject_page(member, subject, error=str(e), status=400)
        log.info("help desk {member}: emergency code for {user}", member=member.user, user=subject)
        return await self._subject_page(member, subject, code=code, code_until=until)

    async def link(self, request: WebRequest, session: Session | None) -> WebResponse:
        """A one-time enrolment link for a user without a factor, shown in this answer only."""
        member = self._member(session)
        form = self.app.form(request, member, "user", "reason")
        stale = self.app.step_up(member, "helpdesk")
        if stale is not None:
            return stale
        subject = self._subject(form.get("user", ""))
        reason = form.get("reason", "").strip()
        if not reason:
            return await self._subject_page(member, subject, error=REASON_REQUIRED, status=400)
        public_url = self.app.settings.public_url
        if public_url is None:
            raise BadRequest("enrolment links need portal.public_url")
        try:
            url, until = await self.desk.link(
                member.user, subject, reason, public_url, DEFAULT_LINK_TTL
            )
        except DeskError as e:
            return await self._subject_page(member, subject, error=str(e), status=400)
        log.info("help desk {member}: enrolment link for {user}", member=member.user, user=subject)
        return await self._subject_page(member, subject, link=url, link_until=until)
