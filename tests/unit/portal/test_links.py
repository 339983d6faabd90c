"""One-time enrolment links: a user without a factor (and without a grace period) signs in
with the directory password and enrolls; the link works for its user only, once, until it
expires, and never once the user has a factor."""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred

from radmfa.admin.actor import Actor
from radmfa.admin.links import create_enrol_link, link_hash
from radmfa.auth.model import Reason
from radmfa.store.base import AUDIT_ADMIN, AUDIT_AUTH, TokenRecord
from tests.unit.portal.test_handlers import (
    QueuedRunner,
    _pending_of,
    _request,
    _submit,
    browser_take,
)
from tests.unit.portal.test_helpdesk import member
from tests.unit.portal.world import Browser, World, done, totp_code

HELP_DESK = b"help desk"


def new_link(world: World, user: str = "bob", ttl: float = 86400.0) -> str:
    made = create_enrol_link(world.store, Actor("root"), user, now=world.clock.seconds(), ttl=ttl)
    return made.secret


def open_link(browser: Browser, secret: str) -> int:
    page = browser.get(f"/link/{secret}")
    if page.status == 200:
        assert b"set up two-factor authentication" in page.body
    return page.status


def enroll(world: World, browser: Browser) -> int:
    browser.get("/enroll/app")
    pending = _pending_of(world, browser)
    return browser.post(
        "/enroll/app", {"code": totp_code(pending.secret, world.clock.seconds())}
    ).status


def test_a_link_lets_a_user_without_grace_enroll_once():
    world = World(grace_days=0)
    plain = Browser(world)
    assert HELP_DESK in plain.sign_in("bob", "bob-pw").body  # no grace: nothing to do
    secret = new_link(world)
    browser = Browser(world)
    assert open_link(browser, secret) == 200
    assert browser.post("/signin", {"username": "bob", "password": "bob-pw"}).status == 303
    assert enroll(world, browser) == 303
    assert [t.type for t in world.store.list_tokens("bob")] == ["totp"]
    link = world.store.enrol_link(link_hash(secret))
    assert link is not None and link.used_at == world.clock.seconds()
    assert "radmfa-link" not in browser.cookies  # spent: the cookie goes too
    assert b"Authenticator app added" in browser.get("/").body
    actions = [(r.action, r.actor) for r in world.audit(user="bob", kind=AUDIT_ADMIN)]
    assert actions == [
        ("enroll-link", "root"),
        ("token-add", "bob (portal)"),
        ("enroll-link-use", "bob (portal)"),
    ]
    (decision,) = [r for r in world.audit(user="bob", kind=AUDIT_AUTH) if r.outcome == "accept"]
    assert decision.reason == Reason.ENROLL_LINK.value
    # used: the link page says so, and a sign-in with its cookie gets nothing more
    again = Browser(world)
    assert open_link(again, secret) == 404
    world.store.remove_tokens("bob")
    replay = Browser(world, cookies={"radmfa-link": secret})
    assert HELP_DESK in replay.sign_in("bob", "bob-pw").body


def test_a_link_is_bound_to_its_user():
    world = World(grace_days=0)
    secret = new_link(world, "bob")
    carol = Browser(world)
    assert open_link(carol, secret) == 200
    page = carol.post("/signin", {"username": "carol", "password": "carol-pw"})
    assert page.status == 200 and HELP_DESK in page.body
    assert "radmfa-session" not in carol.cookies
    link = world.store.enrol_link(link_hash(secret))
    assert link is not None and link.used_at is None


def test_an_expired_link_does_nothing():
    world = World(grace_days=0)
    secret = new_link(world, ttl=3600)
    browser = Browser(world)
    assert open_link(browser, secret) == 200
    world.clock.advance(3600)
    assert HELP_DESK in browser.post("/signin", {"username": "bob", "password": "bob-pw"}).body
    assert open_link(Browser(world), secret) == 404
    assert open_link(Browser(world), "not-a-link") == 404


def test_a_link_expiring_before_the_enrolment_is_confirmed_enrolls_nothing():
    world = World(grace_days=0)
    secret = new_link(world, ttl=300)
    browser = Browser(world)
    open_link(browser, secret)
    browser.post("/signin", {"username": "bob", "password": "bob-pw"})
    browser.get("/enroll/app")
    pending = _pending_of(world, browser)
    world.clock.advance(300)
    page = browser.post("/enroll/app", {"code": totp_code(pending.secret, world.clock.seconds())})
    assert page.status == 403 and b"Ask the help desk for a new one" in page.body
    assert world.store.list_tokens("bob") == []


def test_a_link_is_refused_once_the_user_has_a_factor():
    world = World(grace_days=0)
    secret = new_link(world, "bob")
    browser = Browser(world)
    open_link(browser, secret)
    browser.post("/signin", {"username": "bob", "password": "bob-pw"})
    browser.get("/enroll/app")
    pending = _pending_of(world, browser)
    # meanwhile bob gets a factor another way
    world.store.add_token(
        TokenRecord("bob-phone", "bob", "totp", b"B" * 20, 6, "SHA1", 30, world.clock.seconds())
    )
    page = browser.post("/enroll/app", {"code": totp_code(pending.secret, world.clock.seconds())})
    assert page.status == 403 and b"Sign in again" in page.body
    assert [t.token_id for t in world.store.list_tokens("bob")] == ["bob-phone"]
    link = world.store.enrol_link(link_hash(secret))
    assert link is not None and link.used_at is None


def test_two_tabs_with_one_link_enroll_once():
    runner = QueuedRunner()
    world = World(grace_days=0, db=runner)
    secret = new_link(world)
    runner.drain()
    browsers = [Browser(world, cookies={"radmfa-link": secret}) for _ in range(2)]
    pendings = []
    for browser in browsers:
        browser.get("/signin")
        d = Deferred.fromCoroutine(
            world.app.handle(_request(browser, "/signin", username="bob", password="bob-pw"))
        )
        runner.drain()
        browser_take(browser, done(d))
        browser.get("/enroll/app")
        pendings.append(_pending_of(world, browser))
    now = world.clock.seconds()
    racing = [
        _submit(world, browser, totp_code(pending.secret, now))
        for browser, pending in zip(browsers, pendings, strict=True)
    ]
    runner.drain()
    assert sorted(done(d).status for d in racing) == [303, 403]
    assert len(world.store.list_tokens("bob")) == 1


def test_the_help_desk_creates_a_link_with_a_reason_shown_once():
    world = World(grace_days=0)
    hank = member(world)
    hank.post("/helpdesk/user", {"user": "bob"})
    assert b"Create an enrolment link" in hank.last.body  # type: ignore[union-attr]
    refused = hank.post("/helpdesk/link", {"user": "bob", "reason": " "})
    assert refused.status == 400 and world.audit(user="bob", kind=AUDIT_ADMIN) == []
    hank.post("/helpdesk/user", {"user": "bob"})
    page = hank.post("/helpdesk/link", {"user": "bob", "reason": "new starter"})
    found = re.search(rb"https://mfa\.example\.org/link/([A-Za-z0-9_-]{43})", page.body)
    assert page.status == 200 and found is not None
    (row,) = world.audit(user="bob", kind=AUDIT_ADMIN)
    assert (row.action, row.actor, row.reason) == ("enroll-link", "hank (portal)", "new starter")
    browser = Browser(world)
    assert open_link(browser, found.group(1).decode()) == 200
    assert browser.post("/signin", {"username": "bob", "password": "bob-pw"}).status == 303
    assert enroll(world, browser) == 303
    # alice has a factor: no link for her
    hank.post("/helpdesk/user", {"user": "alice"})
    assert b"Create an enrolment link" not in hank.last.body  # type: ignore[union-attr]
    page = hank.post("/helpdesk/link", {"user": "alice", "reason": "asked"})
    assert page.status == 400 and b"has a second factor already" in page.body


def test_the_radius_grace_message_says_where_to_enroll():
    world = World()
    decision = world.radius("bob", "bob-pw")
    assert decision.reason is Reason.GRACE_PERIOD
    assert decision.reply_message is not None
    assert "at https://mfa.example.org/:" in decision.reply_message
    assert len(decision.reply_message.encode()) <= 253
