"""Step-up: past ``portal.reauth_after`` since the session last proved a factor, a security
change changes nothing and sends the user to "confirm it is you"; a code there (checked like a
sign-in code, counted like one) lets the change through, back on the page it came from."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from radmfa.factors.outofband import SOURCE_CLI, address_token
from radmfa.portal.sessions import session_key
from radmfa.portal.stepup import CONFIRM, RETURNS
from radmfa.store.base import AUDIT_ADMIN, DeviceRef, PortalSession, TokenRecord
from tests.unit.portal.test_helpdesk import member
from tests.unit.portal.test_selfservice import backup_codes_in, signed_in
from tests.unit.portal.world import HANK_SECRET, T0, Browser, World, totp_code

OTHER_SECRET = b"another-phone-secret"
#: ``portal.reauth_after`` of the World's config (the default).
REAUTH = 300.0


def stored(world: World, browser: Browser) -> PortalSession:
    return world.portal_sessions()[session_key(browser.cookies["radmfa-session"])]


def admin_rows(world: World, user: str = "alice") -> list[Any]:
    return world.audit(user=user, kind=AUDIT_ADMIN)


def stale(world: World, user: str = "alice", secret: bytes | None = None) -> Browser:
    """A full session whose factor was proven just over ``reauth_after`` ago."""
    browser = signed_in(world, user, *(() if secret is None else (secret,)))
    world.clock.advance(REAUTH + 1 - 30)  # signed_in moved on 30 s already
    return browser


def confirm(world: World, browser: Browser, back: str, secret: bytes | None = None) -> None:
    """The confirm page, a code from the user's app, and back where the change came from;
    then on to the next TOTP step, so the next code is fresh."""
    assert browser.get(CONFIRM + back).status == 200
    code = world.code() if secret is None else totp_code(secret, world.clock.seconds())
    done = browser.post(CONFIRM + back, {"code": code})
    assert (done.status, done.headers["Location"]) == (303, RETURNS[back])
    world.clock.advance(30)


def nothing_changed(world: World) -> None:
    assert [t.token_id for t in world.store.list_tokens("alice")] == ["tok-a", "tok-2"]
    assert admin_rows(world) == [] and world.mailer.messages == [] and world.sms.sent == []


# -- every security change -----------------------------------------------------------------------


def _backup(world: World, browser: Browser) -> dict[str, str]:
    browser.get("/backup")
    return {}


def _remove(world: World, browser: Browser) -> dict[str, str]:
    browser.get("/")
    return {"token_id": "tok-a"}


def _new_address(kind: str, address: str) -> Any:
    def fill(world: World, browser: Browser) -> dict[str, str]:
        browser.get(f"/address/{kind}")
        return {"address": address, "code": world.code()}

    return fill


CHANGES = [
    ("/backup", _backup, "backup"),
    ("/factors/remove", _remove, "home"),
    ("/enroll/replace", _remove, "home"),
    ("/address/email", _new_address("email", "new@example.org"), "address-email"),
    ("/address/sms", _new_address("sms", "+4915123456789"), "address-sms"),
]


@pytest.mark.parametrize(("path", "fill", "back"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_security_change_after_reauth_after_is_refused_until_a_factor_is_proven(path, fill, back):
    world = World()
    world.store.add_token(TokenRecord("tok-2", "alice", "totp", OTHER_SECRET, 6, "SHA1", 30, T0))
    browser = stale(world)
    refused = browser.post(path, fill(world, browser))
    assert (refused.status, refused.headers["Location"]) == (303, CONFIRM + back)
    nothing_changed(world)
    assert stored(world, browser).pending is None
    page = browser.get(CONFIRM + back)
    assert b"Confirm it is you" in page.body and b'autocomplete="one-time-code"' in page.body
    confirm(world, browser, back)
    # submitted again (the form is not replayed): made now
    done = browser.post(path, fill(world, browser))
    assert done.headers.get("Location") != CONFIRM + back
    changed = (
        admin_rows(world) != []
        or world.mailer.messages != []
        or world.sms.sent != []
        or stored(world, browser).pending is not None
    )
    assert changed, path


def test_a_session_may_change_things_right_after_sign_in_until_reauth_after():
    world = World()
    browser = signed_in(world)  # 30 s after the code
    assert stored(world, browser).proven_at == T0
    world.clock.advance(REAUTH - 30)
    browser.get("/backup")
    assert len(backup_codes_in(browser.post("/backup", {}).body)) == 10
    world.clock.advance(1)
    browser.get("/backup")
    assert browser.post("/backup", {}).headers["Location"] == "/confirm/backup"


def test_a_full_session_that_has_no_proof_on_record_is_never_fresh():
    """A session signed in before the upgrade that added ``proven_at`` has none: it must
    confirm, not count as proven just now."""
    world = World()
    browser = signed_in(world)
    key = session_key(browser.cookies["radmfa-session"])
    world.store._portal[key] = dataclasses.replace(world.store._portal[key], proven_at=None)
    browser.get("/backup")
    assert browser.post("/backup", {}).headers["Location"] == "/confirm/backup"
    assert admin_rows(world) == []


def test_a_new_app_is_asked_for_before_its_qr_code_and_again_before_it_is_stored():
    world = World()
    browser = signed_in(world)
    page = browser.get("/enroll/app")  # fresh: the QR code
    assert b"<svg" in page.body
    pending = stored(world, browser).pending
    assert pending is not None
    world.clock.advance(REAUTH)
    refused = browser.post("/enroll/app", {"code": totp_code(pending.token.secret, T0 + 330)})
    assert refused.headers["Location"] == "/confirm/app"
    assert [t.token_id for t in world.store.list_tokens("alice")] == ["tok-a"]
    assert stored(world, browser).pending == pending  # kept for after the confirmation
    assert browser.get("/enroll/app").headers["Location"] == "/confirm/app"
    confirm(world, browser, "app")
    page = browser.get("/enroll/app")
    assert b"Confirmed." in page.body and stored(world, browser).pending == pending
    code = totp_code(pending.token.secret, world.clock.seconds())
    browser.post("/enroll/app", {"code": code})
    assert len(world.store.list_tokens("alice")) == 2
    assert [r.action for r in admin_rows(world)] == ["token-add"]


def test_the_code_sent_to_a_new_address_is_kept_while_the_user_confirms():
    world = World()
    browser = signed_in(world)
    world.clock.advance(REAUTH - 60)  # sent late in the window: the code outlives it
    browser.get("/address/email")
    browser.post("/address/email", {"address": "new@example.org", "code": world.code()})
    world.clock.advance(60)
    (sent,) = world.mailer.codes()
    refused = browser.post("/address/email/confirm", {"code": sent})
    assert refused.headers["Location"] == "/confirm/address-email"
    assert [t.type for t in world.store.list_tokens("alice")] == ["totp"]
    confirm(world, browser, "address-email")
    browser.get("/address/email")
    browser.post("/address/email/confirm", {"code": sent})
    (email,) = [t for t in world.store.list_tokens("alice") if t.type == "email"]
    assert b"new@example.org" in email.secret
    assert [r.action for r in admin_rows(world)] == ["email-address"]


def test_views_the_preferred_factor_and_forgetting_devices_are_never_asked_for():
    world = World()
    world.store.remember_device("alice", DeviceRef("02:00:00:00:00:01", "vpn"), T0, T0 + 9999)
    browser = stale(world)
    for path in ("/", "/backup", "/devices", "/activity", "/address/email"):
        assert browser.get(path).status == 200, path
    browser.get("/")
    browser.post("/prefer", {"factor": "totp"})
    assert world.store.user_settings("alice").preferred == "totp"
    browser.get("/devices")
    browser.post("/devices/forget-all", {})
    assert world.store.list_devices("alice", world.clock.seconds()) == []
    assert stored(world, browser).proven_at == T0  # nothing was proven meanwhile


def test_a_first_factor_on_the_password_alone_is_never_asked_for():
    """Grace period: there is no factor to prove; the enrolment itself proves the new one."""
    world = World()
    browser = Browser(world)
    browser.sign_in("bob", "bob-pw")
    assert stored(world, browser).proven_at is None
    world.clock.advance(REAUTH + 1)
    browser.get("/enroll/app")
    pending = stored(world, browser).pending
    assert pending is not None
    code = totp_code(pending.token.secret, world.clock.seconds())
    assert browser.post("/enroll/app", {"code": code}).headers["Location"] == "/"
    assert [t.type for t in world.store.list_tokens("bob")] == ["totp"]
    # a full session now, proven by that code: the next change needs no confirmation
    assert stored(world, browser).proven_at == world.clock.seconds()
    browser.get("/backup")
    assert len(backup_codes_in(browser.post("/backup", {}).body)) == 10


# -- the confirm page ----------------------------------------------------------------------------


def test_a_wrong_code_on_the_confirm_page_counts_against_the_lockout():
    world = World()  # lockout after 3 failures
    browser = stale(world)
    browser.get("/confirm/backup")
    page = browser.post("/confirm/backup", {"code": "000000"})
    assert page.status == 200 and b"did not work" in page.body
    assert world.store.lock_state("alice").failures == 1
    assert stored(world, browser).proven_at == T0
    browser.get("/backup")
    assert browser.post("/backup", {}).headers["Location"] == "/confirm/backup"
    rows = [(r.outcome, r.client) for r in world.audit(user="alice") if r.kind != AUDIT_ADMIN]
    assert rows[-1] == ("reject", "portal")
    for _ in range(2):
        browser.get("/confirm/backup")
        browser.post("/confirm/backup", {"code": "000000"})
    assert world.store.lock_state("alice").locked_until is not None
    # locked: the session ends, and the right code no longer helps
    assert browser.get("/confirm/backup").headers["Location"] == "/signin"
    assert admin_rows(world) == []


def test_a_code_sent_by_email_on_request_proves_one_confirmation():
    world = World()
    world.store.add_token(address_token("email", "alice", "alice@example.org", SOURCE_CLI, T0))
    browser = stale(world)
    page = browser.get("/confirm/backup")
    assert b"Send a code by email to a***@example.org" in page.body
    sent = browser.post("/confirm/backup", {"factor": "email"})
    assert b"We sent a code to a***@example.org" in sent.body
    (code,) = world.mailer.codes()
    assert browser.post("/confirm/backup", {"code": "ZZZZZZ"}).status == 200
    assert world.store.lock_state("alice").failures == 1  # the sent code stays for a retry
    assert browser.post("/confirm/backup", {"code": code}).headers["Location"] == "/backup"
    assert stored(world, browser).sent is None
    world.clock.advance(REAUTH + 1)
    browser.get("/confirm/backup")
    again = browser.post("/confirm/backup", {"code": code})  # taken: once only
    assert again.status == 200 and b"did not work" in again.body
    assert stored(world, browser).proven_at == T0 + REAUTH + 1  # the emailed code's


@pytest.mark.parametrize("name", sorted(RETURNS))
def test_a_confirmation_returns_only_to_the_page_its_url_names(name):
    world = World()
    browser = stale(world)
    confirm(world, browser, name)
    assert RETURNS[name].startswith("/") and not RETURNS[name].startswith("//")


@pytest.mark.parametrize(
    "path",
    ["/confirm/evil", "/confirm/", "/confirm//evil.example", "/confirm/https://evil.example/"],
)
def test_a_confirm_page_of_no_known_page_does_not_exist(path):
    world = World()
    browser = stale(world)
    assert browser.get(path).status == 404
    browser.get("/confirm/home")
    assert browser.post(path, {"code": world.code()}).status == 404
    assert world.store.lock_state("alice").failures == 0


@pytest.mark.parametrize("field", ["back", "next", "return", "url"])
def test_the_confirm_form_takes_no_return_address(field):
    world = World()
    browser = stale(world)
    browser.get("/confirm/home")
    refused = browser.post("/confirm/home", {"code": world.code(), field: "https://evil.example/"})
    assert refused.status == 400 and "Location" not in refused.headers
    assert stored(world, browser).proven_at == T0


def test_the_confirm_form_needs_the_sessions_form_token():
    world = World()
    browser = stale(world)
    other = signed_in(world, "hank", HANK_SECRET)
    other.get("/")
    browser.get("/confirm/backup")
    for fields in ({"code": world.code()}, {"code": world.code(), "csrf": "forged"},
                   {"code": world.code(), "csrf": other.csrf()}):  # fmt: skip
        refused = browser.post("/confirm/backup", fields, csrf=False)
        assert refused.status == 400, fields
    refused = browser.post("/confirm/backup", {"factor": "email", "csrf": "forged"})
    assert refused.status == 400
    assert stored(world, browser).proven_at == T0
    assert world.store.lock_state("alice").failures == 0


def test_without_a_factor_that_gives_a_code_the_confirm_page_sends_to_the_help_desk():
    world = World()
    browser = stale(world)
    world.store.remove_tokens("alice")
    page = browser.get("/confirm/backup")
    assert b"Ask your help desk" in page.body and b'name="code"' not in page.body


def test_half_signed_in_and_password_only_sessions_get_no_confirm_page():
    world = World()
    half = Browser(world)
    half.sign_in("alice", "alice-pw")
    assert half.get("/confirm/backup").headers["Location"] == "/signin/code"
    grace = Browser(world)
    grace.sign_in("bob", "bob-pw")
    assert grace.get("/confirm/backup").headers["Location"] == "/"
    grace.get("/")
    assert grace.post("/confirm/backup", {"code": "123456"}).headers["Location"] == "/"
    assert Browser(world).get("/confirm/backup").headers["Location"] == "/signin"


# -- the help desk -------------------------------------------------------------------------------


def test_a_helpdesk_action_after_reauth_after_asks_the_member_first():
    world = World()
    world.store.remember_device("alice", DeviceRef("02:00:00:00:00:01", "vpn"), T0, T0 + 9999)
    browser = member(world)
    world.clock.advance(REAUTH + 1 - 30)
    # looking is not changing
    assert browser.post("/helpdesk/find", {"q": "ali"}).status == 200
    page = browser.post("/helpdesk/user", {"user": "alice"})
    assert page.status == 200
    actions = [
        ("/helpdesk/act", {"user": "alice", "action": "reset", "reason": "lost phone"}),
        ("/helpdesk/act", {"user": "alice", "action": "disable", "reason": "left"}),
        ("/helpdesk/act", {"user": "alice", "action": "forget", "reason": "stolen laptop"}),
        ("/helpdesk/emergency", {"user": "alice", "reason": "no phone"}),
        ("/helpdesk/link", {"user": "bob", "reason": "new starter"}),
    ]
    for path, fields in actions:
        browser.get("/helpdesk")
        refused = browser.post(path, fields)
        assert refused.headers["Location"] == "/confirm/helpdesk", (path, fields)
    assert [t.token_id for t in world.store.list_tokens("alice")] == ["tok-a"]
    assert world.store.user_settings("alice").status == "enabled"
    assert len(world.store.list_devices("alice", world.clock.seconds())) == 1
    assert admin_rows(world) == [] and admin_rows(world, "bob") == []
    confirm(world, browser, "helpdesk", HANK_SECRET)
    assert b"Confirmed." in browser.get("/helpdesk").body
    browser.post("/helpdesk/user", {"user": "alice"})
    page = browser.post("/helpdesk/emergency", {"user": "alice", "reason": "no phone"})
    assert page.status == 200 and b"secret" in page.body
    (row,) = admin_rows(world)
    assert (row.action, row.actor) == ("emergency-code", "hank (portal)")
