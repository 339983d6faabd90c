"""The authentication pipeline, driven synchronously: fake clock, memory store, fake directory."""

from __future__ import annotations

import pyotp
import pytest
from twisted.internet.task import Clock

from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.auth.pipeline import Authenticator, PipelineSettings
from radmfa.config import LockoutConfig, OtpConfig
from radmfa.factors.base import FactorRegistry
from radmfa.factors.totp import TotpFactor
from radmfa.store.base import TokenRecord
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import FakeDirectory, InlineRunner

SECRET = b"0123456789abcdefghij"  # 160 bits
T0 = 1_800_000_000.0  # a step boundary: 1_800_000_000 / 30 is whole


class World:
    def __init__(self, mode: str = "auto", *, max_failures: int = 3, password_only=False):
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore()
        self.directory = FakeDirectory(users={"alice": "hunter2", "bob": "b0bpass123"})
        self.states = iter(bytes([i]) * 16 for i in range(1, 200))
        self.auth = Authenticator(
            settings=PipelineSettings(
                otp=OtpConfig(mode=mode, allow_password_only=password_only),
                lockout=LockoutConfig(max_failures=max_failures, duration=300),
            ),
            directory=self.directory,
            store=AsyncStore(self.store, InlineRunner()),
            factors=FactorRegistry([TotpFactor(skew=1)]),
            clock=self.clock,
            random_bytes=lambda n: next(self.states),
        )
        self.store.add_token(
            TokenRecord("tok-a", "alice", "totp", SECRET, 6, "SHA1", 30, T0 - 1000)
        )

    def code(self, offset_steps: int = 0) -> str:
        import base64

        otp = pyotp.TOTP(base64.b32encode(SECRET).decode())
        return otp.at(self.clock.seconds() + 30 * offset_steps)

    def send(
        self,
        user: bytes | None,
        password: bytes | None,
        *,
        state: bytes | None = None,
        method: AuthMethod = AuthMethod.PAP,
        client: str = "vpn",
        address: str = "127.0.0.1",
    ) -> Decision:
        request = AccessRequest(
            user_name=user,
            password=password,
            method=method,
            state=state,
            client_name=client,
            client_address=address,
        )
        results: list[Decision] = []
        self.auth.handle(request).addCallback(results.append)
        assert results, "the pipeline must finish synchronously with inline fakes"
        return results[0]


@pytest.fixture
def world() -> World:
    return World()


def test_append_mode_accepts_password_plus_code_with_one_bind():
    w = World("append")
    d = w.send(b"alice", f"hunter2{w.code()}".encode())
    assert (d.outcome, d.reason, d.method, d.factor) == (
        Outcome.ACCEPT,
        Reason.OK,
        "append",
        "totp",
    )
    assert w.directory.binds == [("alice", "hunter2")]


def test_append_mode_wrong_code_rejects_without_any_bind():
    w = World("append")
    d = w.send(b"alice", b"hunter2000000")
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_OTP)
    assert w.directory.binds == []


def test_append_mode_consumes_the_code_even_when_the_password_is_wrong():
    w = World("append")
    code = w.code()
    assert w.send(b"alice", f"wrong{code}".encode()).reason is Reason.BAD_PASSWORD
    d = w.send(b"alice", f"hunter2{code}".encode())
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.OTP_REPLAY)


def test_reused_code_is_refused_as_replay(world: World):
    code = world.code()
    assert world.send(b"alice", f"hunter2{code}".encode()).outcome is Outcome.ACCEPT
    again = world.send(b"alice", f"hunter2{code}".encode())
    # In auto mode a replayed tail is still recognised as this user's code, so: replay.
    assert (again.outcome, again.reason) == (Outcome.REJECT, Reason.OTP_REPLAY)
    assert len(world.directory.binds) == 1


def test_older_step_refused_after_newer_step_accepted(world: World):
    older, newer = world.code(-1), world.code(0)
    assert world.send(b"alice", f"hunter2{newer}".encode()).outcome is Outcome.ACCEPT
    assert world.send(b"alice", f"hunter2{older}".encode()).reason is Reason.OTP_REPLAY


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)]
)
def test_clock_skew_window_is_one_step_each_way(offset: int, accepted: bool):
    w = World("append")
    d = w.send(b"alice", f"hunter2{w.code(offset)}".encode())
    assert (d.outcome is Outcome.ACCEPT) is accepted


def test_full_width_digits_are_not_a_code():
    w = World("append")
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in w.code())
    d = w.send(b"alice", f"hunter2{fullwidth}".encode())
    assert d.outcome is Outcome.REJECT
    assert w.directory.binds == []


def test_challenge_mode_round_trip(world: World):
    w = World("challenge")
    first = w.send(b"alice", b"hunter2")
    assert first.outcome is Outcome.CHALLENGE
    assert first.state and len(first.state) == 16
    assert first.reply_message and first.reply_message.strip()
    second = w.send(b"alice", w.code().encode(), state=first.state)
    assert (second.outcome, second.method) == (Outcome.ACCEPT, "challenge")
    assert w.directory.binds == [("alice", "hunter2")]  # round two binds nothing


def test_challenge_state_is_single_use():
    w = World("challenge")
    first = w.send(b"alice", b"hunter2")
    assert w.send(b"alice", w.code().encode(), state=first.state).outcome is Outcome.ACCEPT
    w.clock.advance(30)
    again = w.send(b"alice", w.code().encode(), state=first.state)
    assert (again.outcome, again.reason) == (Outcome.REJECT, Reason.BAD_STATE)


def test_challenge_state_expires():
    w = World("challenge")
    first = w.send(b"alice", b"hunter2")
    w.clock.advance(121)
    d = w.send(b"alice", w.code().encode(), state=first.state)
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_STATE)


@pytest.mark.parametrize(
    ("user", "client", "address"),
    [
        (b"bob", "vpn", "127.0.0.1"),
        (b"alice", "other", "127.0.0.1"),
        (b"alice", "vpn", "127.0.0.9"),
    ],
)
def test_challenge_state_is_bound_to_user_and_client(user, client, address):
    w = World("challenge")
    first = w.send(b"alice", b"hunter2")
    d = w.send(user, w.code().encode(), state=first.state, client=client, address=address)
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_STATE)


def test_challenge_wrong_code_counts_a_failure():
    w = World("challenge")
    first = w.send(b"alice", b"hunter2")
    assert w.send(b"alice", b"000000", state=first.state).reason is Reason.BAD_OTP
    assert w.store.lock_state("alice").failures == 1


def test_auto_mode_password_alone_gets_a_challenge_with_one_bind(world: World):
    d = world.send(b"alice", b"hunter2")
    assert d.outcome is Outcome.CHALLENGE
    assert world.directory.binds == [("alice", "hunter2")]


def test_auto_mode_password_ending_in_digits_is_not_mistaken_for_a_code(world: World):
    world.directory.users["alice"] = "pass123456"
    d = world.send(b"alice", b"pass123456")
    assert d.outcome is Outcome.CHALLENGE
    assert world.directory.binds == [("alice", "pass123456")]


def test_auto_mode_appended_code_accepted_with_one_bind(world: World):
    d = world.send(b"alice", f"hunter2{world.code()}".encode())
    assert (d.outcome, d.method) == (Outcome.ACCEPT, "append")
    assert world.directory.binds == [("alice", "hunter2")]


def test_empty_password_never_reaches_the_directory(world: World):
    d = world.send(b"alice", b"")
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.EMPTY_PASSWORD)
    assert world.directory.binds == []


def test_code_alone_in_append_mode_is_rejected_without_a_bind():
    w = World("append")
    d = w.send(b"alice", w.code().encode())
    assert d.outcome is Outcome.REJECT
    assert w.directory.binds == []


@pytest.mark.parametrize(
    "user", [b"alice\x00admin", b"ali\nce", b"\xffalice", b"", None, b"   ", b"a\xe2\x80\x8bb"]
)
def test_bad_user_names_rejected_before_any_io(world: World, user):
    d = world.send(user, b"hunter2")
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_USER_NAME)
    assert world.directory.binds == []


def test_non_utf8_password_is_rejected_not_repaired(world: World):
    d = world.send(b"alice", b"hunter2\xff")
    assert d.reason is Reason.BAD_PASSWORD_ENCODING
    assert world.directory.binds == []


@pytest.mark.parametrize("method", [AuthMethod.CHAP, AuthMethod.MSCHAP, AuthMethod.EAP])
def test_non_pap_methods_are_told_pap_is_required(world: World, method: AuthMethod):
    d = world.send(b"alice", None, method=method)
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.UNSUPPORTED_METHOD)
    assert d.reply_message == "PAP is required."


def test_user_without_token_is_rejected_without_a_bind(world: World):
    d = world.send(b"bob", b"b0bpass123")
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.NO_TOKEN)
    assert world.directory.binds == []


def test_password_only_option_lets_users_without_token_in():
    w = World(password_only=True)
    d = w.send(b"bob", b"b0bpass123")
    assert (d.outcome, d.reason) == (Outcome.ACCEPT, Reason.PASSWORD_ONLY)
    assert w.send(b"bob", b"wrong").reason is Reason.BAD_PASSWORD


def test_lockout_after_max_failures_then_no_bind_until_it_expires():
    w = World("append", max_failures=3)
    for _ in range(3):
        assert w.send(b"alice", b"wrongpw" + w.code().encode()).outcome is Outcome.REJECT
        w.clock.advance(30)
    binds = len(w.directory.binds)
    d = w.send(b"alice", f"hunter2{w.code()}".encode())
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.LOCKED)
    assert len(w.directory.binds) == binds  # a locked user costs no bind
    w.clock.advance(301)
    assert w.send(b"alice", f"hunter2{w.code()}".encode()).outcome is Outcome.ACCEPT
    w.auth.ledger.flush()  # a success reaches the store with the next batch
    assert w.store.lock_state("alice").failures == 0


def test_success_resets_the_failure_count(world: World):
    world.send(b"alice", b"hunter2999999")
    world.send(b"alice", b"nothunter2")
    assert world.store.lock_state("alice").failures == 2
    assert world.send(b"alice", f"hunter2{world.code()}".encode()).outcome is Outcome.ACCEPT
    world.auth.ledger.flush()  # a success reaches the store with the next batch
    assert world.store.lock_state("alice").failures == 0


def test_name_case_and_blanks_share_one_lockout_counter_and_replay_window():
    w = World("append", max_failures=2)
    w.send(b"Alice", b"hunter2000000")
    w.send(b" ALICE ", b"hunter2000000")
    assert w.send(b"alice", f"hunter2{w.code()}".encode()).reason is Reason.LOCKED


def test_directory_outage_rejects_and_is_not_a_user_failure(world: World):
    world.directory.unavailable = True
    d = world.send(b"alice", f"hunter2{world.code()}".encode())
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.DIRECTORY_UNAVAILABLE)
    assert world.store.lock_state("alice").failures == 0


def test_all_rejects_carry_the_same_message(world: World):
    messages = {
        world.send(b"nobody", b"x123456").reply_message,
        world.send(b"alice", b"wrong").reply_message,
        world.send(b"alice", b"hunter2000000").reply_message,
        world.send(b"bob", b"b0bpass123").reply_message,
    }
    assert messages == {"Authentication failed."}


@pytest.mark.logs_errors
def test_a_store_outage_drops_requests_logs_once_and_ends_by_itself(world: World):
    from twisted.logger import LogLevel, globalLogPublisher

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        world.store._closed = True  # the database went away
        for _ in range(5):
            d = world.send(b"alice", b"hunter2")
            # No answer: the NAS tries its next server (which may reach the database).
            assert (d.outcome, d.reason) == (Outcome.DROP, Reason.STORE_UNAVAILABLE)
        world.store._closed = False  # and came back
        assert world.send(b"alice", b"hunter2").outcome is Outcome.CHALLENGE
    finally:
        globalLogPublisher.removeObserver(seen.append)
    store_lines = [
        e
        for e in seen
        if "unavailable" in e.get("log_format", "") or "available again" in e.get("log_format", "")
    ]
    assert len(store_lines) == 2  # one when it went, one when it came back
    assert store_lines[0]["log_level"] is LogLevel.error
    assert store_lines[1]["n"] == 5
    assert world.store.lock_state("alice").failures == 0  # nothing counted against her


def test_token_with_eight_digits_and_sha256():
    w = World("append")
    w.store.remove_tokens("alice")
    token = TokenRecord("tok-8", "alice", "totp", SECRET, 8, "SHA256", 60, T0)
    w.store.add_token(token)
    import base64
    import hashlib

    code = pyotp.TOTP(
        base64.b32encode(SECRET).decode(), digits=8, digest=hashlib.sha256, interval=60
    ).at(w.clock.seconds())
    d = w.send(b"alice", f"hunter2{code}".encode())
    assert d.outcome is Outcome.ACCEPT


def test_short_secrets_are_refused_like_pyotp_does():
    from radmfa.factors.totp import make_otp

    with pytest.raises(ValueError, match="at least 112 bits"):
        make_otp(TokenRecord("t", "u", "totp", b"x" * 13, 6, "SHA1", 30, T0))
    assert make_otp(TokenRecord("t", "u", "totp", b"x" * 14, 6, "SHA1", 30, T0)).digits == 6


@pytest.mark.logs_errors
def test_a_failing_decision_observer_does_not_change_the_decision():
    w = World("append")

    class Broken:
        def record(self, request, decision, elapsed):
            raise RuntimeError("observer bug")

    seen = []

    class Recorder:
        def record(self, request, decision, elapsed):
            seen.append(decision.outcome)

    w.auth.observers = (Broken(), Recorder())
    d = w.send(b"alice", f"hunter2{w.code()}".encode())
    assert d.outcome is Outcome.ACCEPT
    assert seen == [Outcome.ACCEPT]


def test_with_strip_realm_every_ad_name_form_is_one_user_for_lockout_and_binds():
    from radmfa.config import UsernamesConfig

    w = World("append", max_failures=3)
    w.auth.settings = PipelineSettings(
        otp=w.auth.settings.otp,
        lockout=w.auth.settings.lockout,
        usernames=UsernamesConfig(strip_realm=True),
    )
    w.send(b"CORP\\alice", b"hunter2000000")
    w.send(b"alice@corp.example", b"hunter2000000")
    w.send(b"ALICE", b"hunter2000000")
    assert w.send(b"alice", f"hunter2{w.code()}".encode()).reason is Reason.LOCKED
    w.clock.advance(301)
    d = w.send(b"CORP\\alice", f"hunter2{w.code()}".encode())
    assert d.outcome is Outcome.ACCEPT
    assert w.directory.binds[-1] == ("alice", "hunter2")
