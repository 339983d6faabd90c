"""The help-desk pages: members only (403 for everyone else on every URL, before anything is
read), a reason for every action, the member named in the audit trail, an emergency code
shown once, never an action on one's own account."""

from __future__ import annotations

import re

import pytest

from radmfa.auth.model import Outcome, Reason
from radmfa.store.base import AUDIT_ADMIN, DeviceRef, TokenRecord
from tests.unit.portal.test_selfservice import signed_in
from tests.unit.portal.world import HANK_SECRET, T0, Browser, World

ROUTES = [
    ("GET", "/helpdesk", {}),
    ("POST", "/helpdesk/find", {"q": "alice"}),
    ("POST", "/helpdesk/user", {"user": "alice"}),
    ("POST", "/helpdesk/act", {"user": "alice", "action": "reset", "reason": "lost phone"}),
    ("POST", "/helpdesk/act", {"user": "alice", "action": "disable", "reason": "left"}),
    ("POST", "/helpdesk/emergency", {"user": "alice", "reason": "lost phone"}),
]


def member(world: World) -> Browser:
    browser = signed_in(world, "hank", HANK_SECRET)
    browser.get("/helpdesk")
    return browser


def act(browser: Browser, user: str, action: str, reason: str = "ticket 42", **extra: str):
    browser.get("/helpdesk")
    browser.post("/helpdesk/user", {"user": user})
    return browser.post(
        "/helpdesk/act", {"user": user, "action": action, "reason": reason, **extra}
    )


def admin_rows(world: World, user: str) -> list:
    return world.audit(user=user, kind=AUDIT_ADMIN)


def test_a_member_of_the_helpdesk_group_gets_the_pages_after_a_full_sign_in():
    world = World()
    browser = signed_in(world, "hank", HANK_SECRET)
    assert b'href="/helpdesk"' in browser.get("/").body
    page = browser.get("/helpdesk")
    assert page.status == 200 and b"Find a user" in page.body
    # at sign-in, and again for every page that offers or serves help-desk rights
    assert world.directory.group_lookups == ["hank"] * 4


@pytest.mark.parametrize(("method", "path", "fields"), ROUTES)
def test_everyone_else_gets_403_on_every_helpdesk_url_and_nothing_changes(method, path, fields):
    world = World()
    alice = signed_in(world)  # a full session, but not a member
    grace = Browser(world)
    grace.sign_in("bob", "bob-pw")  # a password-only session
    for browser in (alice, grace):
        browser.get("/")
        token = browser.csrf()
        if method == "GET":
            response = browser.get(path)
        else:
            response = browser.post(path, {"csrf": token, **fields})
        assert response.status == 403, (path, browser)
        assert b"for the help desk" in response.body
    assert [t.token_id for t in world.store.list_tokens("alice")] == ["tok-a"]
    assert world.store.user_settings("alice").status == "enabled"
    assert admin_rows(world, "alice") == []
    # without a session: to the sign-in page; half signed in: to the code
    assert Browser(world).request(method, path).headers["Location"] == "/signin"
    half = Browser(world)
    half.sign_in("hank", "hank-pw")
    assert half.request(method, path).headers["Location"] == "/signin/code"


def test_a_member_signed_in_on_the_password_alone_is_no_helpdesk():
    world = World()
    world.store.remove_tokens("hank")
    browser = Browser(world)
    browser.sign_in("hank", "hank-pw")  # grace: password only
    assert browser.get("/helpdesk").status == 403


def test_every_action_needs_a_reason():
    world = World()
    world.store.set_status("alice", "disabled", None, "left")
    browser = member(world)
    page = act(browser, "alice", "enable", reason="   ")
    assert page.status == 400 and b"needs a reason" in page.body
    browser.get("/helpdesk")
    browser.post("/helpdesk/user", {"user": "alice"})
    page = browser.post("/helpdesk/emergency", {"user": "alice", "reason": ""})
    assert page.status == 400
    assert world.store.user_settings("alice").status == "disabled"
    assert [t.type for t in world.store.list_tokens("alice")] == ["totp"]
    assert admin_rows(world, "alice") == []


def test_find_a_user_and_see_status_factors_devices_lock_and_sign_ins():
    world = World()
    world.store.remember_device("alice", DeviceRef("02:00:00:00:00:01", "vpn"), T0, T0 + 86400)
    world.radius("alice", "wrong" + world.code(), station="02-00-00-00-00-aa")
    world.clock.advance(30)
    browser = member(world)
    found = browser.post("/helpdesk/find", {"q": "ALI"})
    assert b">alice</button>" in found.body
    page = browser.post("/helpdesk/user", {"user": "Alice"})
    assert page.status == 200
    for text in (b"enabled", b"1 failure(s)", b"Authenticator app", b"02:00:00:00:00:01",
                 b"bad_password", b"02-00-00-00-00-aa"):  # fmt: skip
        assert text in page.body, text


def test_a_helpdesk_reset_is_audited_with_the_member_and_radius_then_asks_to_enroll():
    world = World(grace_days=0)
    world.store.remember_device("alice", DeviceRef("02:00:00:00:00:01", "vpn"), T0, T0 + 86400)
    browser = member(world)
    page = act(browser, "alice", "reset", reason="lost phone, ticket 42")
    assert page.status == 200 and b"1 factor(s) and 1 trusted device(s) removed" in page.body
    assert world.store.list_tokens("alice") == []
    (row,) = admin_rows(world, "alice")
    assert (row.action, row.actor, row.reason, row.client) == (
        "reset",
        "hank (portal)",
        "lost phone, ticket 42",
        "portal",
    )
    decision = world.radius("alice", "alice-pw")
    assert (decision.outcome, decision.reason) == (Outcome.REJECT, Reason.NO_TOKEN)


def test_unlock_disable_enable_suspend_resume_and_forget_devices():
    world = World()
    for _ in range(3):
        world.radius("alice", "wrong" + world.code())
        world.clock.advance(30)
    assert world.store.lock_state("alice").is_locked(world.clock.seconds())
    browser = member(world)
    assert b"alice unlocked" in act(browser, "alice", "unlock").body
    assert not world.store.lock_state("alice").is_locked(world.clock.seconds())
    assert b"enabled \xe2\x86\x92 disabled" in act(browser, "alice", "disable").body
    assert world.radius("alice", "alice-pw" + world.code()).reason is Reason.USER_DISABLED
    act(browser, "alice", "enable")
    page = act(browser, "alice", "suspend", until="8h")
    assert b"suspended until" in page.body
    settings = world.store.user_settings("alice")
    assert settings.status_until == world.clock.seconds() + 8 * 3600
    assert world.radius("alice", "alice-pw").outcome is Outcome.ACCEPT  # the lost-phone day
    bad = act(browser, "alice", "suspend", until="next tuesday")
    assert bad.status == 400 and b"Until" in bad.body
    act(browser, "alice", "resume")
    world.store.remember_device("alice", DeviceRef("02:00:00:00:00:01", "vpn"), T0, T0 + 86400)
    world.store.remember_device("alice", DeviceRef("02:00:00:00:00:02", "vpn"), T0, T0 + 86400)
    act(browser, "alice", "forget", device="02:00:00:00:00:01")
    assert [d.device for d in world.store.list_devices("alice", T0)] == ["02:00:00:00:00:02"]
    act(browser, "alice", "forget")
    assert world.store.list_devices("alice", T0) == []
    actions = [(r.action, r.actor) for r in admin_rows(world, "alice")]
    assert actions == [
        (action, "hank (portal)")
        for action in (
            "unlock", "disable", "enable", "suspend", "resume", "device-revoke", "device-revoke"
        )
    ]  # fmt: skip


def test_an_emergency_code_is_shown_once_and_works_once_over_radius():
    world = World()
    world.store.remove_tokens("alice")
    world.store.add_token(TokenRecord("tok-x", "alice", "totp", b"X" * 20, 6, "SHA1", 30, T0))
    browser = member(world)
    browser.post("/helpdesk/user", {"user": "alice"})
    page = browser.post("/helpdesk/emergency", {"user": "alice", "reason": "phone in the lake"})
    found = re.search(rb'<code class="secret">([0-9]+)</code>', page.body)
    assert found, page.body
    code = found.group(1).decode()
    again = browser.post("/helpdesk/user", {"user": "alice"})
    assert code.encode() not in again.body
    assert world.radius("alice", "alice-pw" + code).outcome is Outcome.ACCEPT
    assert world.radius("alice", "alice-pw" + code).outcome is Outcome.REJECT
    (row,) = admin_rows(world, "alice")
    assert (row.action, row.actor, row.reason) == (
        "emergency-code",
        "hank (portal)",
        "phone in the lake",
    )
    assert code not in (row.after or "")


def test_a_member_cannot_act_on_their_own_account():
    world = World()
    browser = member(world)
    page = act(browser, "hank", "reset")
    assert page.status == 400 and b"own account" in page.body
    browser.post("/helpdesk/user", {"user": "hank"})
    page = browser.post("/helpdesk/emergency", {"user": "hank", "reason": "me"})
    assert page.status == 400
    assert [t.token_id for t in world.store.list_tokens("hank")] == ["tok-h"]
    assert admin_rows(world, "hank") == []


def test_a_bad_subject_or_action_is_a_400_page():
    world = World()
    browser = member(world)
    assert browser.post("/helpdesk/user", {"user": "bad\u00dfname"}).status == 400
    browser.get("/helpdesk")
    assert (
        browser.post("/helpdesk/act", {"user": "alice", "action": "drop", "reason": "x"}).status
        == 400
    )


@pytest.mark.parametrize(
    "path",
    [
        "/helpdesk/",
        "/HELPDESK",
        "/Helpdesk/act",
        "//helpdesk",
        "//helpdesk/act",
        "/helpdesk/act/",
        "/helpdesk%2Fact",
        "/helpdesk/%61ct",
        "/./helpdesk/act",
        "/x/../helpdesk/act",
        "/helpdesk/act;x",
        "/helpdesk/act%00",
    ],
)
def test_no_other_spelling_of_a_helpdesk_url_reaches_an_action(path):
    """Routes match the raw path exactly: every other spelling is a 404 (or the help desk's
    own 403), for GET, HEAD and POST alike, and nothing changes."""
    world = World()
    alice = signed_in(world)
    alice.get("/")
    token = alice.csrf()
    fields = {"csrf": token, "user": "bob", "action": "disable", "reason": "x"}
    for method in ("GET", "HEAD", "POST"):
        if method == "POST":
            response = alice.post(path, fields)
        else:
            response = alice.request(method, path)
        assert response.status in (403, 404), (method, path, response.status)
    assert world.store.user_settings("bob").status == "enabled"
    assert admin_rows(world, "bob") == []
