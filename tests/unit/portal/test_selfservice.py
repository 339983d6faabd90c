"""The user's own pages over the real pipeline: backup codes shown once, the last factor kept,
addresses confirmed by a code sent there (and by another factor), trusted devices, recent
sign-ins, an email code at sign-in. Every change acts on the session's user only."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred

from radmfa.auth.model import Outcome, Reason
from radmfa.factors.outofband import SOURCE_CLI, address_token
from radmfa.store.base import AUDIT_ADMIN, DeviceRef, TokenRecord
from tests.unit.portal.test_handlers import QueuedRunner, _request, browser_take
from tests.unit.portal.test_server import cookies_of, csrf_of, get, post
from tests.unit.portal.world import (
    ALICE_SECRET,
    T0,
    Browser,
    World,
    done,
    headers_of,
    http,
    totp_code,
)

OTHER_SECRET = b"another-phone-secret"


def signed_in(world: World, user: str = "alice", secret: bytes = ALICE_SECRET) -> Browser:
    """A full session (password and code) of ``user``; the clock moves on a step after, so
    the next code is fresh."""
    browser = Browser(world)
    browser.sign_in(user, f"{user}-pw")
    browser.get("/signin/code")
    assert browser.post("/signin/code", {"code": totp_code(secret, world.clock.seconds())}).status
    assert browser.get("/").status == 200
    world.clock.advance(30)
    return browser


def admin_rows(world: World, user: str) -> list[Any]:
    return world.audit(user=user, kind=AUDIT_ADMIN)


def backup_codes_in(body: bytes) -> list[str]:
    return [c.decode() for c in re.findall(rb"<li><code>([^<]+)</code></li>", body)]


# -- home, backup codes --------------------------------------------------------------------------


def test_home_lists_factors_backup_codes_left_and_the_preferred_factor():
    world = World()
    world.store.add_token(address_token("email", "alice", "alice@example.org", SOURCE_CLI, T0))
    world.store.set_preferred("alice", "email")
    page = signed_in(world).get("/").body
    assert b"Authenticator app" in page and b"a***@example.org" in page
    assert b"preferred" in page
    assert b"No backup codes yet" in page


def test_backup_codes_are_shown_once_and_the_earlier_set_stops_working():
    world = World()
    browser = signed_in(world)
    page = browser.get("/backup")
    first = backup_codes_in(browser.post("/backup", {}).body)
    assert len(first) == 10
    again = browser.get("/backup").body
    assert backup_codes_in(again) == [] and b"10 of 10 codes left" in again
    browser.get("/backup")
    second = backup_codes_in(browser.post("/backup", {}).body)
    assert set(first).isdisjoint(second)
    # over RADIUS, an old code is refused and a new one works once
    assert world.radius("alice", "alice-pw" + first[0]).outcome is Outcome.REJECT
    world.clock.advance(1)
    assert world.radius("alice", "alice-pw" + second[0]).outcome is Outcome.ACCEPT
    assert world.radius("alice", "alice-pw" + second[0]).outcome is Outcome.REJECT
    rows = [r for r in admin_rows(world, "alice") if r.action == "backup-codes"]
    assert [(r.actor, r.client, r.after) for r in rows] == [
        ("alice (portal)", "portal", "10 new code(s)"),
        ("alice (portal)", "portal", "10 new code(s)"),
    ]
    assert page.status == 200


def test_the_page_showing_backup_codes_is_never_stored_by_a_browser_or_proxy():
    world = World()
    site = world.site()
    _s, headers, body = headers_of(http(site, get("/signin")))
    pre = next(iter(cookies_of(headers).values())).split(";")[0]
    fields = {"csrf": csrf_of(body), "username": "alice", "password": "alice-pw"}
    _s, headers, _b = headers_of(http(site, post("/signin", fields, cookie=pre)))
    cookie = next(iter(cookies_of(headers).values())).split(";")[0]
    _s, _h, body = headers_of(http(site, get("/signin/code", cookie=cookie)))
    fields = {"csrf": csrf_of(body), "code": totp_code(ALICE_SECRET, world.clock.seconds())}
    _s, headers, _b = headers_of(http(site, post("/signin/code", fields, cookie=cookie)))
    cookie = next(iter(cookies_of(headers).values())).split(";")[0]
    _s, _h, body = headers_of(http(site, get("/backup", cookie=cookie)))
    status, headers, body = headers_of(
        http(site, post("/backup", {"csrf": csrf_of(body)}, cookie=cookie))
    )
    assert status == 200 and len(backup_codes_in(body)) == 10
    assert headers["cache-control"] == ["no-store"]


# -- form tokens and the session user ------------------------------------------------------------

CHANGES = [
    ("/backup", {}),
    ("/factors/remove", {"token_id": "tok-a"}),
    ("/prefer", {"factor": "none"}),
    ("/devices/forget", {"device": "02:00:00:00:00:01"}),
    ("/devices/forget-all", {}),
    ("/enroll/replace", {"token_id": "tok-a"}),
    ("/address/email", {"address": "mallory@evil.example", "code": "123456"}),
    ("/address/email/confirm", {"code": "ABCDEF"}),
]


def test_every_change_needs_the_form_token():
    world = World()
    browser = signed_in(world)
    before = world.store.list_tokens("alice")
    for path, fields in CHANGES:
        assert browser.post(path, fields, csrf=False).status == 400, path
        assert browser.post(path, {**fields, "csrf": "forged"}).status == 400, path
    assert world.store.list_tokens("alice") == before
    assert admin_rows(world, "alice") == [] and world.mailer.messages == []


def test_a_form_naming_another_user_changes_nothing():
    world = World()
    bob_token = TokenRecord("tok-b", "bob", "totp", b"B" * 20, 6, "SHA1", 30, T0)
    world.store.add_token(bob_token)
    world.store.remember_device("bob", DeviceRef("02:00:00:00:00:0b", "vpn"), T0, T0 + 86400)
    browser = signed_in(world)
    # no form has a user field: one is refused outright
    for path, fields in CHANGES:
        browser.get("/")
        assert browser.post(path, {**fields, "user": "bob"}).status == 400, path
    # bob's token id and device in alice's forms reach only alice's data
    browser.get("/")
    browser.post("/factors/remove", {"token_id": "tok-b"})
    browser.get("/devices")
    browser.post("/devices/forget", {"device": "02:00:00:00:00:0b"})
    browser.get("/")
    assert browser.post("/enroll/replace", {"token_id": "tok-b"}).status == 400
    assert world.store.list_tokens("bob") == [bob_token]
    assert len(world.store.list_devices("bob", T0)) == 1
    assert admin_rows(world, "bob") == []


def test_a_session_still_at_the_code_step_or_password_only_cannot_change_anything():
    world = World()
    half = Browser(world)
    half.sign_in("alice", "alice-pw")
    half.get("/signin/code")
    for path in ("/backup", "/devices", "/activity"):
        assert half.get(path).headers["Location"] == "/signin/code"
    grace = Browser(world)
    grace.sign_in("bob", "bob-pw")
    grace.get("/")
    assert grace.post("/backup", {}).headers["Location"] == "/"
    assert world.store.list_tokens("bob") == []


# -- removing a factor ---------------------------------------------------------------------------


def test_the_last_factor_stays_while_the_policy_requires_one():
    world = World()
    browser = signed_in(world)
    browser.post("/backup", {})  # backup codes are no factor to stand on
    browser.get("/")
    browser.post("/factors/remove", {"token_id": "tok-a"})
    assert b"last sign-in method" in browser.get("/").body
    assert "tok-a" in {t.token_id for t in world.store.list_tokens("alice")}
    assert [r.action for r in admin_rows(world, "alice")] == ["backup-codes"]
    # with a second app, the first can go
    world.store.add_token(TokenRecord("tok-2", "alice", "totp", OTHER_SECRET, 6, "SHA1", 30, T0))
    browser.post("/factors/remove", {"token_id": "tok-a"})
    assert b"Removed." in browser.get("/").body
    assert "tok-a" not in {t.token_id for t in world.store.list_tokens("alice")}
    (row,) = [r for r in admin_rows(world, "alice") if r.action == "token-remove"]
    assert (row.actor, row.before) == ("alice (portal)", "totp tok-a")


def test_an_unconfirmed_address_does_not_count_as_a_factor_to_keep():
    world = World()
    pending = address_token("email", "alice", "new@example.org", SOURCE_CLI, T0)
    world.store.add_token(pending)
    world.store.replace_tokens(
        "alice",
        "email",
        [address_token("email", "alice", "other@example.org", SOURCE_CLI, T0, pending)],
    )
    browser = signed_in(world)
    browser.post("/factors/remove", {"token_id": "tok-a"})
    assert "tok-a" in {t.token_id for t in world.store.list_tokens("alice")}


def test_the_last_factor_may_go_when_the_policy_does_not_require_one():
    world = World(default="optional")
    browser = signed_in(world)
    browser.post("/factors/remove", {"token_id": "tok-a"})
    assert world.store.list_tokens("alice") == []


def test_two_removals_at_once_leave_one_factor():
    runner = QueuedRunner()
    world = World(db=runner)
    world.store.add_token(TokenRecord("tok-2", "alice", "totp", OTHER_SECRET, 6, "SHA1", 30, T0))
    browser = Browser(world)
    browser.get("/signin")
    d = Deferred.fromCoroutine(
        world.app.handle(_request(browser, "/signin", username="alice", password="alice-pw"))
    )
    runner.drain()
    browser_take(browser, done(d))
    code_page = Deferred.fromCoroutine(world.app.handle(_get(browser, "/signin/code")))
    runner.drain()
    browser_take(browser, done(code_page))
    d = Deferred.fromCoroutine(
        world.app.handle(_request(browser, "/signin/code", code=world.code()))
    )
    runner.drain()
    browser_take(browser, done(d))
    home = Deferred.fromCoroutine(world.app.handle(_get(browser, "/")))
    runner.drain()
    browser_take(browser, done(home))
    racing = [
        Deferred.fromCoroutine(
            world.app.handle(_request(browser, "/factors/remove", token_id=token_id))
        )
        for token_id in ("tok-a", "tok-2")
    ]
    runner.drain()
    assert [done(d).status for d in racing] == [303, 303]
    assert len(world.store.list_tokens("alice")) == 1


def _get(browser: Browser, path: str) -> Any:
    from radmfa.portal.web import WebRequest

    return WebRequest("GET", path, {}, dict(browser.cookies), b"", client=browser.client)


def test_an_app_is_replaced_in_one_step_even_when_it_is_the_last_factor():
    world = World()
    browser = signed_in(world)
    assert browser.post("/enroll/replace", {"token_id": "tok-a"}).headers["Location"] == (
        "/enroll/app"
    )
    page = browser.get("/enroll/app")
    assert b"replaces your old one" in page.body
    from tests.unit.portal.test_handlers import _pending_of

    pending = _pending_of(world, browser)
    assert [t.token_id for t in world.store.list_tokens("alice")] == ["tok-a"]
    browser.post("/enroll/app", {"code": totp_code(pending.secret, world.clock.seconds())})
    (token,) = world.store.list_tokens("alice")
    assert token.secret == pending.secret
    assert b"replaced" in browser.get("/").body
    actions = [(r.action, r.after) for r in admin_rows(world, "alice")]
    assert actions == [
        ("token-add", f"totp {token.token_id}"),
        ("token-remove", f"replaced by totp {token.token_id}"),
    ]


# -- preferred factor, devices, recent sign-ins --------------------------------------------------


def test_the_preferred_factor_is_one_of_the_users_own():
    world = World()
    world.store.add_token(address_token("email", "alice", "alice@example.org", SOURCE_CLI, T0))
    browser = signed_in(world)
    browser.post("/prefer", {"factor": "sms"})
    assert b"no such method" in browser.get("/").body
    assert world.store.user_settings("alice").preferred is None
    browser.post("/prefer", {"factor": "email"})
    assert world.store.user_settings("alice").preferred == "email"
    (row,) = admin_rows(world, "alice")
    assert (row.action, row.before, row.after, row.actor) == (
        "prefer",
        "none",
        "email",
        "alice (portal)",
    )
    browser.get("/")
    assert browser.post("/prefer", {"factor": "nonsense"}).status == 400


def test_trusted_devices_are_listed_and_forgotten_one_or_all():
    world = World()
    for station in ("02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"):
        world.store.remember_device("alice", DeviceRef(station, "vpn"), T0, T0 + 86400)
    browser = signed_in(world)
    page = browser.get("/devices")
    assert page.body.count(b"Forget</button>") == 3
    browser.post("/devices/forget", {"device": "02:00:00:00:00:01"})
    page = browser.get("/devices")
    assert b"Device forgotten" in page.body and b"02:00:00:00:00:01" not in page.body
    browser.post("/devices/forget-all", {})
    assert b"2 device(s) forgotten" in browser.get("/devices").body
    assert world.store.list_devices("alice", world.clock.seconds()) == []
    rows = admin_rows(world, "alice")
    assert [(r.action, r.actor) for r in rows] == [("device-revoke", "alice (portal)")] * 2


def test_recent_sign_ins_are_the_users_own_with_nas_station_and_outcome():
    world = World()
    world.radius("alice", "wrong" + world.code(), station="02-00-00-00-00-aa")
    world.radius("bob", "bob-pw", station="02-00-00-00-00-bb")
    world.clock.advance(30)  # the code above is spent
    browser = signed_in(world)
    page = browser.get("/activity").body
    assert b"02-00-00-00-00-aa" in page and b"refused" in page
    assert b"signed in" in page and b"portal" in page
    assert b"02-00-00-00-00-bb" not in page


# -- email address / phone number ----------------------------------------------------------------


def test_a_new_address_is_stored_only_after_another_factor_and_the_code_sent_there():
    world = World()
    world.store.add_token(address_token("email", "alice", "alice@example.org", SOURCE_CLI, T0))
    world.store.remember_device("alice", DeviceRef("02:00:00:00:00:01", "vpn"), T0, T0 + 9999)
    browser = signed_in(world)
    form = browser.get("/address/email")
    assert b"a***@example.org" in form.body and b'name="code"' in form.body
    # without a code of another factor: nothing is sent, and the guess counts
    page = browser.post("/address/email", {"address": "mallory@evil.example", "code": "000000"})
    assert b"did not work" in page.body and world.mailer.messages == []
    assert world.store.lock_state("alice").failures == 1
    # with it: a code goes to the new address, nothing is stored yet
    browser.get("/address/email")
    page = browser.post("/address/email", {"address": "new@example.org", "code": world.code()})
    assert b"We sent a code to n***@example.org" in page.body
    (message,) = world.mailer.messages
    assert message["To"] == "new@example.org"
    (email,) = [t for t in world.store.list_tokens("alice") if t.type == "email"]
    assert b"alice@example.org" in email.secret
    assert browser.post("/address/email/confirm", {"code": "ZZZZZZ"}).status == 200
    assert b"did not match" in browser.last.body
    browser.post("/address/email/confirm", {"code": world.mailer.codes()[-1]})
    (email,) = [t for t in world.store.list_tokens("alice") if t.type == "email"]
    assert b"new@example.org" in email.secret and email.last_step == 1
    assert b"is confirmed" in browser.get("/").body
    assert world.store.list_devices("alice", world.clock.seconds()) == []
    (row,) = admin_rows(world, "alice")
    assert (row.action, row.actor, row.client) == ("email-address", "alice (portal)", "portal")
    # the code cannot be used again
    browser.get("/")
    redirect = browser.post("/address/email/confirm", {"code": world.mailer.codes()[-1]})
    assert redirect.headers["Location"] == "/address/email"


def test_wrong_codes_for_a_new_address_end_the_attempt():
    world = World()
    browser = signed_in(world)
    browser.get("/address/sms")
    browser.post("/address/sms", {"address": "+49 151 2345 6789", "code": world.code()})
    ((number, _text),) = world.sms.sent
    assert number == "+4915123456789"
    for _ in range(2):
        assert b"did not match" in browser.post("/address/sms/confirm", {"code": "AAAAAA"}).body
    assert b"Too many wrong codes" in browser.post("/address/sms/confirm", {"code": "AAAAAA"}).body
    code = re.search(r"\b([0-9A-Z]{6,8})\b", world.sms.sent[0][1])
    assert code is not None
    browser.get("/")
    browser.post("/address/sms/confirm", {"code": code.group(1)})
    assert [t for t in world.store.list_tokens("alice") if t.type == "sms"] == []


def test_a_user_in_grace_registers_an_email_as_the_first_factor():
    world = World()
    browser = Browser(world)
    browser.sign_in("bob", "bob-pw")
    form = browser.get("/address/email")
    assert form.status == 200 and b'name="code"' not in form.body  # nothing to vouch with
    browser.post("/address/email", {"address": "bob@example.org"})
    browser.post("/address/email/confirm", {"code": world.mailer.codes()[-1]})
    (token,) = world.store.list_tokens("bob")
    assert token.type == "email" and token.last_step == 1
    assert b"Your sign-in methods" in browser.get("/").body  # a full session now


def test_sending_to_a_new_address_keeps_the_radius_send_limits():
    world = World()
    browser = signed_in(world)
    browser.get("/address/email")
    browser.post("/address/email", {"address": "new@example.org", "code": world.code()})
    world.clock.advance(30)
    browser.get("/address/email")
    page = browser.post("/address/email", {"address": "new@example.org", "code": world.code()})
    assert b"Please wait" in page.body and len(world.mailer.messages) == 1


# -- sign-in with a code sent on request ---------------------------------------------------------


def test_sign_in_with_an_email_code_sent_on_request_under_the_radius_cooldown():
    world = World()
    world.store.add_token(address_token("email", "carol", "carol@example.org", SOURCE_CLI, T0))
    browser = Browser(world)
    assert browser.sign_in("carol", "carol-pw").headers["Location"] == "/signin/code"
    page = browser.get("/signin/code")
    assert b"Send a code by email to c***@example.org" in page.body
    sent = browser.post("/signin/send", {"factor": "email"})
    assert b"We sent a code to c***@example.org" in sent.body
    again = browser.post("/signin/send", {"factor": "email"})
    assert b"Please wait" in again.body and len(world.mailer.messages) == 1
    # a RADIUS keyword meets the same cooldown
    challenge = world.radius("carol", "carol-pw,email")
    assert challenge.reason is Reason.SEND_LIMITED and len(world.mailer.messages) == 1
    assert browser.post("/signin/code", {"code": "ZZZZZZ"}).status == 200
    assert world.store.lock_state("carol").failures == 1
    browser.post("/signin/code", {"code": world.mailer.codes()[-1]})
    assert browser.get("/").status == 200
    rows = world.audit(user="carol")
    assert ("accept", "email") in [(r.outcome, r.factor) for r in rows]


def test_no_code_is_sent_to_an_address_that_is_not_confirmed():
    world = World()
    first = address_token("email", "carol", "carol@example.org", SOURCE_CLI, T0)
    world.store.add_token(first)
    world.store.replace_tokens(
        "carol",
        "email",
        [address_token("email", "carol", "mallory@evil.example", SOURCE_CLI, T0, first)],
    )
    world.store.add_token(TokenRecord("tok-c", "carol", "totp", OTHER_SECRET, 6, "SHA1", 30, T0))
    browser = Browser(world)
    browser.sign_in("carol", "carol-pw")
    page = browser.get("/signin/code")
    assert b"Send a code" not in page.body
    browser.post("/signin/send", {"factor": "email"})
    assert world.mailer.messages == []
