"""The portal's pages over the real pipeline: sign-in with the RADIUS counters, the second
factor, enrolment that stores nothing until confirmed, form tokens, session timeouts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from radmfa.auth.model import Outcome, Reason
from radmfa.store.base import AUDIT_ADMIN, AUDIT_AUTH, TokenRecord
from tests.unit.portal.world import T0, Browser, World, done, totp_code

# -- sign-in -------------------------------------------------------------------------------------


def test_sign_in_without_or_with_a_wrong_form_token_is_refused_before_any_bind():
    world = World()
    browser = Browser(world)
    browser.get("/signin")
    token = browser.csrf()
    fields = {"username": "bob", "password": "bob-pw"}
    assert browser.post("/signin", fields, csrf=False).status == 400
    assert browser.post("/signin", {**fields, "csrf": "x" * 43}).status == 400
    # the right token, but the cookie it must match is gone (another site's form)
    del browser.cookies["radmfa-pre"]
    assert browser.post("/signin", {**fields, "csrf": token}).status == 400
    assert world.directory.binds == []
    assert "radmfa-session" not in browser.cookies


def test_a_user_with_a_factor_must_give_a_code_before_any_page():
    world = World()
    browser = Browser(world)
    response = browser.sign_in("alice", "alice-pw")
    assert (response.status, response.headers["Location"]) == (303, "/signin/code")
    for path in ("/", "/enroll/app"):
        page = browser.get(path)
        assert (page.status, page.headers["Location"]) == (303, "/signin/code")
    code_page = browser.get("/signin/code")
    assert b'autocomplete="one-time-code"' in code_page.body
    assert browser.post("/signin/code", {"code": world.code()}).headers["Location"] == "/"
    home = browser.get("/")
    assert home.status == 200 and b"Authenticator app" in home.body


def test_the_session_id_changes_at_sign_in_and_again_after_the_code():
    world = World()
    browser = Browser(world)
    browser.sign_in("alice", "alice-pw")
    first = browser.cookies["radmfa-session"]
    browser.get("/signin/code")
    browser.post("/signin/code", {"code": world.code()})
    second = browser.cookies["radmfa-session"]
    assert first != second
    stale = Browser(world, cookies={"radmfa-session": first})
    assert stale.get("/").headers["Location"] == "/signin"
    # only hashes are kept: no cookie value is a key of the session storage
    assert all(key not in (first.encode(), second.encode()) for key in world.portal_sessions())


def test_wrong_codes_count_towards_the_same_lockout_as_radius():
    world = World()
    browser = Browser(world)
    browser.sign_in("alice", "alice-pw")
    browser.get("/signin/code")
    for _ in range(3):
        page = browser.post("/signin/code", {"code": "000000"})
        assert page.status == 200 and b"did not work" in page.body
    assert world.store.lock_state("alice").is_locked(world.clock.seconds())
    # the right code is refused now (the locked user's sign-in ends), and so is RADIUS
    browser.post("/signin/code", {"code": world.code()})
    assert browser.get("/").headers["Location"] == "/signin"
    decision = world.radius("alice", "alice-pw" + world.code())
    assert (decision.outcome, decision.reason) == (Outcome.REJECT, Reason.LOCKED)


def test_portal_and_radius_failures_add_up_and_the_portal_counts_its_source():
    world = World()
    for _ in range(2):
        assert world.radius("alice", "wrong" + world.code()).reason is Reason.BAD_PASSWORD
        world.clock.advance(30)  # a fresh code each time
    browser = Browser(world)
    page = browser.sign_in("alice", "wrong")
    assert page.status == 200 and b"Sign-in failed" in page.body
    assert world.store.lock_state("alice").is_locked(world.clock.seconds())
    rows = world.audit(user="alice", kind=AUDIT_AUTH)
    portal = [r for r in rows if r.client == "portal"]
    assert [(r.outcome, r.reason, r.src) for r in portal] == [
        ("reject", "bad_password", "203.0.113.7")
    ]
    # the browser's address is a source like a RADIUS station: one spraying budget
    window = world.store.failure_window("source:203.0.113.7", 0)
    assert window.count == 1


def test_a_locked_or_disabled_user_gets_no_bind_in_the_portal():
    world = World()
    world.store.set_status("carol", "disabled", None, "left")
    page = Browser(world).sign_in("carol", "carol-pw")
    assert b"Sign-in failed" in page.body
    assert world.directory.binds == []


def test_a_failed_sign_in_answers_no_sooner_than_the_reject_delay():
    world = World(reject_delay=1.0)
    browser = Browser(world)
    browser.get("/signin")
    request_done: list[Any] = []
    from urllib.parse import urlencode

    from radmfa.portal.web import WebRequest

    body = urlencode({"csrf": browser.csrf(), "username": "bob", "password": "no"}).encode()
    d = Deferred.fromCoroutine(
        world.app.handle(
            WebRequest(
                "POST",
                "/signin",
                {"content-type": "application/x-www-form-urlencoded"},
                dict(browser.cookies),
                body,
            )
        )
    )
    d.addCallback(request_done.append)
    assert request_done == []
    world.clock.advance(0.99)
    assert request_done == []
    world.clock.advance(0.02)
    assert request_done and b"Sign-in failed" in request_done[0].body


# -- grace, enrolment ----------------------------------------------------------------------------


def test_without_factor_or_grace_the_page_says_help_desk_and_no_session_is_made():
    world = World(grace_days=0)
    browser = Browser(world)
    page = browser.sign_in("bob", "bob-pw")
    assert page.status == 200 and b"help desk" in page.body
    assert "radmfa-session" not in browser.cookies
    assert browser.get("/enroll/app").headers["Location"] == "/signin"
    # and someone without the password learns nothing: the same page as any failure
    assert b"Sign-in failed" in Browser(world).sign_in("bob", "wrong").body


def test_a_grace_user_enrolls_and_the_token_exists_only_after_a_valid_code():
    world = World()
    browser = Browser(world)
    assert browser.sign_in("bob", "bob-pw").headers["Location"] == "/"
    home = browser.get("/")
    assert b"Set up an authenticator app" in home.body
    page = browser.get("/enroll/app")
    assert page.status == 200 and b"<svg" in page.body
    assert b'autocomplete="one-time-code"' in page.body
    (record,) = world.portal_sessions().values()
    assert record.pending is not None and world.store.list_tokens("bob") == []
    pending = record.pending.token
    # the app's code does not work over RADIUS before confirmation: there is no token
    code = totp_code(pending.secret, world.clock.seconds())
    assert world.radius("bob", "bob-pw" + code).reason is Reason.BAD_PASSWORD
    assert world.store.list_tokens("bob") == []
    # a wrong code stores nothing, and the same secret is offered again
    again = browser.post("/enroll/app", {"code": "000000"})
    assert b"did not match" in again.body and world.store.list_tokens("bob") == []
    done_page = browser.post("/enroll/app", {"code": code})
    assert done_page.headers["Location"] == "/"
    (token,) = world.store.list_tokens("bob")
    assert token.secret == pending.secret and token.type == "totp"
    assert token.last_step == int(world.clock.seconds()) // 30  # the confirming code is spent
    assert b"Authenticator app added" in browser.get("/").body
    # RADIUS now wants the code; the one used to confirm is a replay
    assert world.radius("bob", "bob-pw" + code).reason is Reason.OTP_REPLAY
    world.clock.advance(30)
    later = totp_code(pending.secret, world.clock.seconds())
    assert world.radius("bob", "bob-pw" + later).outcome is Outcome.ACCEPT
    (row,) = world.audit(user="bob", kind=AUDIT_ADMIN)
    assert (row.action, row.actor, row.after) == (
        "token-add",
        "bob (portal)",
        f"totp {token.token_id}",
    )


def test_the_qr_code_carries_a_standard_otpauth_uri_with_issuer_and_account():
    world = World()
    browser = Browser(world)
    browser.sign_in("bob", "bob-pw")
    page = browser.get("/enroll/app").body
    assert b"Example Corp" in page and b">bob<" in page
    assert page.count(b"<svg") == 1 and b"<script" not in page


def test_a_password_only_session_cannot_add_a_factor_once_the_user_has_one():
    world = World()
    intruder = Browser(world)
    intruder.sign_in("bob", "bob-pw")  # during grace, with bob's password
    intruder.get("/enroll/app")
    (record,) = world.portal_sessions().values()
    assert record.pending is not None
    pending = record.pending.token
    # meanwhile bob enrolls his own phone
    world.store.add_token(TokenRecord("bob-phone", "bob", "totp", b"B" * 20, 6, "SHA1", 30, T0))
    page = intruder.post("/enroll/app", {"code": totp_code(pending.secret, world.clock.seconds())})
    assert page.status == 403 and b"Sign in again" in page.body
    assert [t.token_id for t in world.store.list_tokens("bob")] == ["bob-phone"]
    assert intruder.get("/").headers["Location"] == "/signin"


class QueuedRunner:
    """A store runner whose calls wait until :meth:`drain` runs them, one at a time in call
    order: two requests' store calls then interleave as they would on a real thread."""

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[..., Any], tuple, dict, Deferred[Any]]] = []

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queue.append((fn, args, kwargs, d))
        return d

    def drain(self) -> None:
        while self.queue:
            fn, args, kwargs, d = self.queue.pop(0)
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                d.errback(e)
            else:
                d.callback(result)


def _submit(world: World, browser: Browser, code: str) -> Deferred[Any]:
    from urllib.parse import urlencode

    from radmfa.portal.web import WebRequest

    body = urlencode({"csrf": browser.csrf(), "code": code}).encode()
    request = WebRequest(
        "POST",
        "/enroll/app",
        {"content-type": "application/x-www-form-urlencoded"},
        dict(browser.cookies),
        body,
        client=browser.client,
    )
    return Deferred.fromCoroutine(world.app.handle(request))


def test_two_password_only_confirmations_at_once_add_one_factor():
    runner = QueuedRunner()
    world = World(db=runner)
    browsers = [Browser(world), Browser(world)]
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
    statuses = sorted(done(d).status for d in racing)
    assert statuses == [303, 403]
    assert len(world.store.list_tokens("bob")) == 1


def _request(browser: Browser, path: str, **fields: str) -> Any:
    from urllib.parse import urlencode

    from radmfa.portal.web import WebRequest

    body = urlencode({"csrf": browser.csrf(), **fields}).encode()
    return WebRequest(
        "POST",
        path,
        {"content-type": "application/x-www-form-urlencoded"},
        dict(browser.cookies),
        body,
        client=browser.client,
    )


def browser_take(browser: Browser, response: Any) -> None:
    for cookie in response.cookies:
        browser.cookies[cookie.name] = cookie.value
    browser.last = response


def _pending_of(world: World, browser: Browser) -> TokenRecord:
    from radmfa.portal.sessions import session_key

    session = world.portal_sessions()[session_key(browser.cookies["radmfa-session"])]
    assert session.pending is not None
    return session.pending.token


def test_a_confirmation_sent_twice_adds_one_token():
    world = World()
    browser = Browser(world)
    browser.sign_in("alice", "alice-pw")
    browser.get("/signin/code")
    browser.post("/signin/code", {"code": world.code()})
    browser.get("/enroll/app")
    pending = _pending_of(world, browser)
    world.clock.advance(30)
    code = totp_code(pending.secret, world.clock.seconds())
    first = _submit(world, browser, code)
    second = _submit(world, browser, code)
    assert done(first).status == 303 and done(second).status == 303
    assert len([t for t in world.store.list_tokens("alice") if t.secret == pending.secret]) == 1


# -- sessions ------------------------------------------------------------------------------------


def _signed_in(world: World) -> Browser:
    browser = Browser(world)
    browser.sign_in("alice", "alice-pw")
    browser.get("/signin/code")
    browser.post("/signin/code", {"code": world.code()})
    assert browser.get("/").status == 200
    return browser


def test_a_session_ends_after_the_idle_timeout():
    world = World()
    browser = _signed_in(world)
    world.clock.advance(599)
    assert browser.get("/").status == 200  # the idle timer starts again
    world.clock.advance(599)
    assert browser.get("/").status == 200
    world.clock.advance(600)
    assert browser.get("/").headers["Location"] == "/signin"
    world.store.purge_expired(world.clock.seconds())  # the daemon's minute purge
    assert len(world.portal_sessions()) == 0


def test_a_session_ends_after_the_absolute_timeout_however_active():
    world = World()
    browser = _signed_in(world)
    for _ in range(11):
        world.clock.advance(300)
        assert browser.get("/").status == 200
    world.clock.advance(300)  # 3600 s after sign-in
    assert browser.get("/").headers["Location"] == "/signin"


def test_the_absolute_timeout_counts_from_the_password_step():
    world = World()
    browser = Browser(world)
    browser.sign_in("alice", "alice-pw")
    for _ in range(6):
        world.clock.advance(590)
        browser.get("/signin/code")
    world.clock.advance(30)  # 3570 s: the code makes a new id, not a new hour
    browser.post("/signin/code", {"code": world.code()})
    world.clock.advance(31)
    assert browser.get("/").headers["Location"] == "/signin"


def test_sign_out_needs_the_form_token_and_ends_the_session():
    world = World()
    browser = _signed_in(world)
    assert browser.post("/signout", {"csrf": "forged"}).status == 400
    assert browser.get("/").status == 200
    page = browser.post("/signout", {})
    assert page.status == 200 and b"signed out" in page.body
    assert "radmfa-session" not in browser.cookies
    assert len(world.portal_sessions()) == 0


def test_a_signed_in_form_with_another_sessions_token_is_refused():
    world = World()
    victim = _signed_in(world)
    world.clock.advance(30)  # the next code
    attacker = _signed_in(world)
    attacker_token = attacker.csrf()
    victim.get("/enroll/app")
    assert victim.post("/enroll/app", {"csrf": attacker_token, "code": "123456"}).status == 400


# -- bad input -----------------------------------------------------------------------------------


def test_bad_form_bodies_are_a_400_page_not_an_error():
    world = World()
    browser = Browser(world)
    browser.get("/signin")
    token = browser.csrf()
    form = "application/x-www-form-urlencoded"
    cases = [
        (b"username=bob&password=x&csrf=" + token.encode(), "application/json"),
        (b"username=%ff%fe&password=x&csrf=" + token.encode(), form),
        (b"username=bob&username=eve&password=x&csrf=" + token.encode(), form),
        (b"username=bob&password=x&admin=1&csrf=" + token.encode(), form),
        (b"username=bob&password=x%00y&csrf=" + token.encode(), form),
        (b"\xff\xfe", form),
        (b"a" * 2000 + b"=1", form),
        (b"&&&=", form),
    ]
    for body, kind in cases:
        page = browser.request("POST", "/signin", body, content_type=kind)
        assert page.status == 400, body
        assert b"Bad request" in page.body
    assert world.directory.binds == []


def test_user_text_is_escaped_in_pages():
    world = World()
    browser = Browser(world)
    page = browser.sign_in('<script>alert(1)</script>"', "wrong")
    assert b"<script>alert" not in page.body
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;&#34;" in page.body


def test_unknown_paths_and_methods():
    world = World()
    browser = Browser(world)
    assert browser.get("/nope").status == 404
    assert browser.request("PUT", "/signin").status == 405
    assert browser.get("/static/portal.css").content_type.startswith("text/css")


def test_the_store_outage_is_a_503_page_and_counts_nothing():
    world = World()
    world.store.close()
    page = Browser(world).sign_in("alice", "alice-pw")
    assert page.status == 503
    decision = done(Deferred.fromCoroutine(_noop()))
    assert decision is None


async def _noop() -> None:
    return None
