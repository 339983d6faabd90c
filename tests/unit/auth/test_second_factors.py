"""The pipeline with every built-in factor: keywords, follow-up challenges, out-of-band codes,
rate limits, delivery failures, re-validation, backup and emergency codes. Fake clock, memory
store, fake directory, recording mail and SMS transports: all synchronous."""

from __future__ import annotations

import base64
import re
from dataclasses import replace

import pyotp
import pytest
from twisted.internet.task import Clock

from radmfa.admin import factors as admin
from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.auth.pipeline import MAX_EXCHANGE_SECONDS, Authenticator, PipelineSettings
from radmfa.config import CodeDelivery, EmailConfig, LockoutConfig, OtpConfig, SmsConfig, SmtpConfig
from radmfa.factors.backup import BackupCodeFactor
from radmfa.factors.base import FactorRegistry
from radmfa.factors.email import EmailFactor
from radmfa.factors.emergency import EmergencyCodeFactor
from radmfa.factors.hotp import HotpFactor
from radmfa.factors.outofband import SOURCE_CLI, SOURCE_DIRECTORY, address_token
from radmfa.factors.sms import SmsFactor
from radmfa.factors.totp import TotpFactor
from radmfa.store.base import TokenRecord
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import FakeDirectory, InlineRunner, RecordingMailer, RecordingSms

SECRET = b"0123456789abcdefghij"
T0 = 1_800_000_000.0

EMAIL = EmailConfig(smtp=SmtpConfig(host="127.0.0.1"), sender="mfa@example.org")
SMS = SmsConfig(provider="command", message="{code} is your {service} code")


class World:
    def __init__(
        self,
        mode: str = "auto",
        *,
        totp: bool = True,
        email: str | None = "alice@example.org",
        sms: str | None = None,
        attribute: str | None = None,
        max_failures: int = 5,
        cooldown: float = 60,
        per_hour: int = 5,
        total: int = 1000,
        max_open: int = 5,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore()
        self.directory = FakeDirectory(users={"alice": "hunter2"})
        self.mailer = RecordingMailer()
        self.sms = RecordingSms()
        self.states = iter(bytes([i % 256, i // 256]) * 8 for i in range(1, 5000))
        email_config = replace(
            EMAIL,
            delivery=CodeDelivery(
                keyword="email", cooldown=cooldown, max_per_hour=per_hour, max_per_hour_total=total
            ),
        )
        sms_config = replace(
            SMS, delivery=CodeDelivery(keyword="sms", cooldown=cooldown, max_per_hour=per_hour)
        )
        self.factors = FactorRegistry(
            [
                TotpFactor(skew=1),
                HotpFactor(window=3),
                BackupCodeFactor(),
                EmergencyCodeFactor(),
                EmailFactor(email_config, self.mailer, attribute),  # type: ignore[arg-type]
                SmsFactor(sms_config, self.sms, attribute and "mobile"),
            ]
        )
        self.auth = Authenticator(
            settings=PipelineSettings(
                otp=OtpConfig(mode=mode, max_open_challenges=max_open),  # type: ignore[arg-type]
                lockout=LockoutConfig(max_failures=max_failures, duration=300),
            ),
            directory=self.directory,
            store=AsyncStore(self.store, InlineRunner()),
            factors=self.factors,
            clock=self.clock,
            random_bytes=lambda n: next(self.states),
        )
        if totp:
            self.store.add_token(
                TokenRecord("tok-a", "alice", "totp", SECRET, 6, "SHA1", 30, T0 - 1000)
            )
        if email is not None or attribute:
            source = SOURCE_DIRECTORY if attribute else SOURCE_CLI
            self.store.add_token(address_token("email", "alice", email, source, T0 - 500))
        if sms is not None:
            self.store.add_token(address_token("sms", "alice", sms, SOURCE_CLI, T0 - 500))

    def code(self) -> str:
        return pyotp.TOTP(base64.b32encode(SECRET).decode()).at(self.clock.seconds())

    def send(self, password: str, state: bytes | None = None, **kw: object) -> Decision:
        request = AccessRequest(
            user_name=b"alice",
            password=password.encode(),
            method=AuthMethod.PAP,
            state=state,
            client_name=str(kw.get("client", "vpn")),
            client_address="127.0.0.1",
            nas_identifier=kw.get("nas"),  # type: ignore[arg-type]
        )
        results: list[Decision] = []
        self.auth.handle(request).addCallback(results.append)
        assert results, "the pipeline must finish synchronously with inline fakes"
        return results[0]

    def mailed_code(self, index: int = -1) -> str:
        return self.mailer.codes()[index]


# -- prompts and keywords -----------------------------------------------------------------


def test_user_with_several_factors_is_told_what_to_type():
    w = World(sms="+49 151 2345 1234")
    first = w.send("hunter2")
    assert first.outcome is Outcome.CHALLENGE
    assert first.reply_message == (
        "Enter your verification code, or type email (a***@example.org) "
        "or sms (******1234) to get one: "
    )
    assert len(first.reply_message.encode()) <= 253


def test_keyword_at_the_prompt_sends_a_code_and_challenges_again_with_a_fresh_state():
    w = World()
    first = w.send("hunter2")
    second = w.send("email", state=first.state)
    assert (second.outcome, second.reason, second.factor) == (
        Outcome.CHALLENGE,
        Reason.CODE_SENT,
        "email",
    )
    assert second.state and second.state != first.state
    assert second.reply_message == "Enter the code sent to a***@example.org: "
    assert len(w.mailer.messages) == 1
    third = w.send(w.mailed_code(), state=second.state)
    assert (third.outcome, third.factor) == (Outcome.ACCEPT, "email")
    assert w.directory.binds == [("alice", "hunter2")]  # one bind for the whole exchange


def test_keyword_is_case_insensitive_and_ignores_blanks():
    w = World()
    first = w.send("hunter2")
    assert w.send("  EMail ", state=first.state).reason is Reason.CODE_SENT


def test_the_message_names_the_service_and_the_expiry():
    w = World()
    first = w.send("hunter2", nas="sshd")
    w.send("email", state=first.state, nas="sshd")
    message = w.mailer.messages[0]
    assert message["To"] == "alice@example.org"
    assert message["Subject"] == "Your sshd verification code"
    body = message.get_content()
    assert "for sshd is" in body and "expires in 5 minutes" in body
    assert re.search(r"at \d\d:\d\d UTC", body)


@pytest.mark.parametrize("mode", ["auto", "append"])
def test_password_comma_keyword_checks_the_password_once_and_sends(mode: str):
    w = World(mode)
    d = w.send("hunter2,email")
    assert (d.outcome, d.reason) == (Outcome.CHALLENGE, Reason.CODE_SENT)
    assert w.directory.binds == [("alice", "hunter2")]
    assert w.send(w.mailed_code(), state=d.state).outcome is Outcome.ACCEPT


def test_keyword_split_is_on_the_last_separator():
    w = World()
    w.directory.users["alice"] = "a,b,c"
    d = w.send("a,b,c,email")
    assert d.reason is Reason.CODE_SENT
    assert w.directory.binds == [("alice", "a,b,c")]


def test_a_password_with_a_comma_but_no_keyword_is_a_password():
    w = World()
    w.directory.users["alice"] = "pass,word"
    d = w.send("pass,word")
    assert d.reason is Reason.CHALLENGE_ISSUED
    assert w.directory.binds == [("alice", "pass,word")]


def test_keyword_for_a_factor_the_user_lacks_is_part_of_the_password():
    w = World()
    d = w.send("hunter2,sms")  # alice has no sms factor: the whole field is her password
    assert d.reason is Reason.BAD_PASSWORD
    assert w.directory.binds == [("alice", "hunter2,sms")]


def test_wrong_password_with_keyword_sends_nothing():
    w = World()
    assert w.send("wrong,email").reason is Reason.BAD_PASSWORD
    assert w.mailer.messages == []


def test_preferred_email_is_sent_as_soon_as_the_password_checks_out():
    w = World(mode="challenge")
    w.store.set_preferred("alice", "email")
    d = w.send("hunter2")
    assert (d.reason, d.factor) == (Reason.CODE_SENT, "email")
    assert w.send(w.mailed_code(), state=d.state).outcome is Outcome.ACCEPT


def test_preferred_totp_changes_nothing_but_the_prompt():
    w = World()
    w.store.set_preferred("alice", "totp")
    d = w.send("hunter2")
    assert d.reason is Reason.CHALLENGE_ISSUED and w.mailer.messages == []


def test_app_code_still_works_at_the_email_prompt():
    w = World()
    d = w.send("hunter2,email")
    assert w.send(w.code(), state=d.state).factor == "totp"


def test_empty_answer_shows_the_prompt_again_without_a_failure():
    w = World()
    d = w.send("hunter2,email")
    again = w.send("", state=d.state)
    assert (again.outcome, again.reply_message) == (
        Outcome.CHALLENGE,
        "Enter the code sent to a***@example.org: ",
    )
    assert again.state != d.state
    assert w.store.lock_state("alice").failures == 0
    assert w.send(w.mailed_code(), state=again.state).outcome is Outcome.ACCEPT


# -- out-of-band code rules (O-10) --------------------------------------------------------


def test_email_code_is_single_use():
    w = World()
    d = w.send("hunter2,email")
    code = w.mailed_code()
    assert w.send(code, state=d.state).outcome is Outcome.ACCEPT
    assert w.send(code, state=d.state).reason is Reason.BAD_STATE
    w.clock.advance(61)
    d2 = w.send("hunter2")
    assert w.send(code, state=d2.state).reason is Reason.BAD_OTP


def test_email_code_from_one_state_is_refused_in_another():
    w = World()
    a = w.send("hunter2,email")
    b = w.send("hunter2")
    assert w.send(w.mailed_code(), state=b.state).reason is Reason.BAD_OTP
    assert w.store.lock_state("alice").failures == 1
    assert a.state != b.state


def test_email_code_expires_after_its_lifetime():
    w = World()
    d = w.send("hunter2,email")
    w.clock.advance(301)
    assert w.send(w.mailed_code(), state=d.state).reason is Reason.BAD_STATE


def test_wrong_email_code_counts_a_failure():
    w = World()
    d = w.send("hunter2,email")
    wrong = f"{(int(w.mailed_code()) + 1) % 10**6:06d}"
    assert w.send(wrong, state=d.state).reason is Reason.BAD_OTP
    assert w.store.lock_state("alice").failures == 1


def test_code_is_stored_hashed():
    w = World()
    d = w.send("hunter2,email")
    assert d.state is not None
    stored = w.store._challenges[d.state]
    assert stored.code_hash is not None and w.mailed_code().encode() not in stored.code_hash


def test_letters_alphabet_and_length_are_configurable():
    w = World()
    factor = w.factors.out_of_band("email")
    assert factor is not None
    factor.alphabet, factor.code_length = "ABCDEFGHJKLMNPQRSTUVWXYZ", 8
    d = w.send("hunter2,email")
    code = w.mailed_code()
    assert len(code) == 8 and code.isalpha()
    assert w.send(code.lower(), state=d.state).outcome is Outcome.ACCEPT


# -- never wait, report failures at the next prompt ---------------------------------------


def test_challenge_goes_out_before_the_mail_is_delivered():
    w = World()
    w.mailer.hold = True
    d = w.send("hunter2,email")  # answered although the mail server has not replied
    assert d.reason is Reason.CODE_SENT
    assert w.auth.courier.pending == 1
    w.mailer.release()
    assert w.auth.courier.pending == 0 and w.auth.courier.sent == 1


@pytest.mark.logs_errors
def test_delivery_failure_is_logged_and_shown_at_the_next_prompt(fail_on_logged_errors):
    w = World()
    w.mailer.fail = True
    d = w.send("hunter2,email")
    assert d.outcome is Outcome.CHALLENGE  # the challenge is still answered
    assert any("not delivered" in str(e.get("log_format")) for e in fail_on_logged_errors)
    again = w.send("", state=d.state)
    assert again.reply_message is not None
    assert again.reply_message.startswith("Your email code could not be sent. ")
    # shown once; the user can still finish with another factor
    assert w.send(w.code(), state=again.state).outcome is Outcome.ACCEPT
    assert w.store.take_notice("alice") is None


@pytest.mark.logs_errors
def test_failure_notice_leads_the_next_login_prompt():
    w = World()
    w.mailer.fail = True
    w.send("hunter2,email")
    w.clock.advance(30)
    d = w.send("hunter2")
    assert d.reply_message is not None
    assert d.reply_message.startswith("Your email code could not be sent. Enter your")


# -- rate limits --------------------------------------------------------------------------


def test_resend_within_the_cooldown_keeps_the_code_already_sent():
    w = World()
    d = w.send("hunter2,email")
    again = w.send("email", state=d.state)
    assert (again.outcome, again.reason) == (Outcome.CHALLENGE, Reason.SEND_LIMITED)
    assert again.reply_message is not None and again.reply_message.startswith("Please wait 60s")
    assert len(w.mailer.messages) == 1
    assert w.send(w.mailed_code(), state=again.state).outcome is Outcome.ACCEPT


def test_six_requests_in_a_minute_send_one_code():
    w = World()
    d = w.send("hunter2")
    for _ in range(6):
        d = w.send("email", state=d.state)
        assert d.outcome is Outcome.CHALLENGE
        w.clock.advance(9)
    assert len(w.mailer.messages) == 1


def test_hourly_cap_holds_across_logins():
    w = World(cooldown=0, per_hour=3)
    for _ in range(3):
        assert w.send("hunter2,email").reason is Reason.CODE_SENT
    refused = w.send("hunter2,email")
    assert refused.reason is Reason.SEND_LIMITED
    assert refused.reply_message is not None and "Please wait" in refused.reply_message
    assert len(w.mailer.messages) == 3
    w.clock.advance(3600)
    assert w.send("hunter2,email").reason is Reason.CODE_SENT


def test_codes_for_all_users_together_are_capped_per_hour(caplog_twisted):
    w = World(total=2)
    for other in ("bob", "carol"):
        assert w.store.reserve_send(other, "email", T0, 60, 5, total_per_hour=2).granted
    d = w.send("hunter2,email")
    assert (d.outcome, d.reason) == (Outcome.CHALLENGE, Reason.SEND_LIMITED)
    assert w.mailer.messages == []
    assert "otp.email.max_per_hour_total" in "\n".join(caplog_twisted)
    assert w.send(w.code(), state=d.state).outcome is Outcome.ACCEPT  # the app still works
    w.clock.advance(3600)
    assert w.send("hunter2,email").reason is Reason.CODE_SENT


def test_a_user_has_at_most_max_open_challenges_the_oldest_dies():
    w = World(max_open=2)
    first, second, third = (w.send("hunter2") for _ in range(3))
    assert w.send(w.code(), state=first.state).reason is Reason.BAD_STATE
    assert w.send("", state=second.state).outcome is Outcome.CHALLENGE
    assert w.send(w.code(), state=third.state).outcome is Outcome.ACCEPT


def test_the_exchange_cannot_be_stretched_beyond_ten_minutes():
    w = World(cooldown=0, per_hour=100)
    d = w.send("hunter2")
    for _ in range(12):
        w.clock.advance(60)
        d = w.send("email", state=d.state)
        if d.outcome is not Outcome.CHALLENGE:
            break
    assert d.outcome is Outcome.REJECT
    assert w.clock.seconds() - T0 <= MAX_EXCHANGE_SECONDS + 60


# -- sms ----------------------------------------------------------------------------------


def test_sms_round_trip_with_masked_number():
    w = World(email=None, sms="+491512345678")
    d = w.send("hunter2,sms")
    assert d.reply_message == "Enter the code sent to ******5678: "
    number, text = w.sms.sent[0]
    assert number == "+491512345678" and "is your vpn code" in text
    code = text.split()[0]
    assert w.send(code, state=d.state).factor == "sms"


def test_user_with_only_out_of_band_factors_is_asked_to_pick_one():
    w = World(totp=False, sms="+491512345678")
    d = w.send("hunter2")
    assert d.reply_message == (
        "Type email (a***@example.org) or sms (******5678) to get a verification code: "
    )


# -- re-validation ------------------------------------------------------------------------


def test_directory_address_is_taken_from_the_bind_and_trusted_the_first_time():
    w = World(email=None, attribute="mail")
    w.directory.attributes["alice"] = {"mail": ["alice@example.org"]}
    d = w.send("hunter2,email")
    assert d.reply_message == "Enter the code sent to a***@example.org: "
    assert w.send(w.mailed_code(), state=d.state).outcome is Outcome.ACCEPT


def _mailed_to(w: World, address: str) -> int:
    return sum(address in str(m["To"]) for m in w.mailer.messages)


def _email_token(w: World) -> TokenRecord:
    return next(t for t in w.store.list_tokens("alice") if t.type == "email")


def test_changed_directory_address_kills_codes_in_flight_and_needs_confirming():
    w = World(attribute="mail", email=None)
    w.directory.attributes["alice"] = {"mail": ["alice@example.org"]}
    old = w.send("hunter2,email")
    old_code = w.mailed_code()
    w.clock.advance(61)
    w.directory.attributes["alice"] = {"mail": ["mallory@evil.example"]}
    fresh = w.send("hunter2")  # the bind sees the new address
    assert "m***@evil.example" in (fresh.reply_message or "")
    # the code sent to the old address died with it
    assert w.send(old_code, state=old.state).reason is Reason.BAD_OTP
    w.clock.advance(61)
    d = w.send("hunter2,email")
    # nothing goes to the new address before a trusted factor vouches for it
    assert (d.outcome, d.reason) == (Outcome.CHALLENGE, Reason.ADDRESS_PENDING)
    assert d.reply_message == (
        "To confirm your new email address m***@evil.example, first: Enter your verification code: "
    )
    assert _mailed_to(w, "mallory@evil.example") == 0
    step = w.send(w.code(), state=d.state)
    assert (step.outcome, step.reason) == (Outcome.CHALLENGE, Reason.CODE_SENT)
    assert step.reply_message == (
        "Enter the code sent to your new address m***@evil.example to confirm it: "
    )
    assert _email_token(w).last_step is None  # pending until its own code comes back
    done = w.send(w.mailed_code(), state=step.state)
    assert (done.outcome, done.reason, done.factor) == (Outcome.ACCEPT, Reason.OK, "totp")
    assert _email_token(w).last_step == 1
    w.clock.advance(61)
    d = w.send("hunter2,email")
    assert d.reason is Reason.CODE_SENT  # trusted now: an ordinary email login
    assert w.send(w.mailed_code(), state=d.state).outcome is Outcome.ACCEPT


def test_confirmation_code_then_dropping_the_exchange_leaves_the_address_pending():
    """The attack of an outside review: password,email, the confirmation code, drop the
    'now your other factor' step, password,email again - with the old code that marked the
    address confirmed, and the second code logged the attacker in."""
    w = World(attribute="mail", email=None)
    w.directory.attributes["alice"] = {"mail": ["alice@example.org"]}
    w.send("hunter2")  # the first address is trusted
    w.directory.attributes["alice"] = {"mail": ["mallory@evil.example"]}
    for _ in range(3):
        w.clock.advance(61)
        d = w.send("hunter2,email")
        assert d.outcome is Outcome.CHALLENGE and d.reason is Reason.ADDRESS_PENDING
        # the attacker has no TOTP code and no mail to answer with; Enter, a keyword, a guess
        again = w.send("", state=d.state)
        assert again.outcome is Outcome.CHALLENGE and "m***@evil" in (again.reply_message or "")
        assert w.send("email", state=again.state).outcome is Outcome.REJECT
    w.clock.advance(120)  # past the throttle those failures earned
    d = w.send("hunter2")
    assert w.send("email", state=d.state).reason is Reason.ADDRESS_PENDING
    assert _mailed_to(w, "mallory@evil.example") == 0
    assert _email_token(w).last_step is None
    assert all(t.type != "email" or t.last_step is None for t in w.store.list_tokens("alice"))


def test_preferred_pending_address_gets_nothing_at_round_one():
    w = World()
    admin.enroll_address(w.store, _config(), "email", "alice", "mallory@evil.example", T0)
    w.store.set_preferred("alice", "email")
    d = w.send("hunter2")
    assert d.reason is Reason.ADDRESS_PENDING
    assert w.mailer.messages == []


def test_a_confirmation_state_from_before_this_version_is_refused():
    """Older versions stored 'confirm' States before any vouching: never read as vouched."""
    from radmfa.store.base import ChallengeRecord

    w = World()
    admin.enroll_address(w.store, _config(), "email", "alice", "new@example.org", T0)
    token = _email_token(w)
    for phase in ("confirm", "another:email", "address:", "vouch"):
        state = bytes([9]) * 16
        w.store.put_challenge(
            ChallengeRecord(state, "alice", "vpn", "127.0.0.1", T0 + 60, T0, factor="email",
                            token_id=token.token_id, phase=phase, started_at=T0)
        )  # fmt: skip
        assert w.send("", state=state).reason is Reason.BAD_STATE
    assert _email_token(w).last_step is None


def test_two_new_addresses_cannot_vouch_for_each_other():
    w = World(email="alice@example.org", sms="+491512345678")
    for kind, new in (("email", "mallory@evil.example"), ("sms", "+499999999999")):
        admin.enroll_address(w.store, _config(), kind, "alice", new, T0)
    d = w.send("hunter2,email")
    assert d.reason is Reason.ADDRESS_PENDING
    # the other new address is not offered, and asking for it anyway is refused
    assert "sms" not in (d.reply_message or "")
    assert w.send("sms", state=d.state).reason is Reason.BAD_OTP
    assert w.sms.sent == [] and w.mailer.messages == []


def test_a_trusted_sms_code_vouches_for_a_new_email_address():
    w = World(totp=False, email="alice@example.org", sms="+491512345678")
    admin.enroll_address(w.store, _config(), "email", "alice", "new@example.org", T0)
    d = w.send("hunter2,email")
    assert d.reply_message == (
        "To confirm your new email address n***@example.org, first: "
        "Type sms (******5678) to get a verification code: "
    )
    sent = w.send("sms", state=d.state)
    assert sent.reason is Reason.CODE_SENT and w.mailer.messages == []
    step = w.send(re.findall(r"\d{6}", w.sms.sent[-1][1])[0], state=sent.state)
    assert "to confirm it" in (step.reply_message or "")
    done = w.send(w.mailed_code(), state=step.state)
    assert (done.outcome, done.factor) == (Outcome.ACCEPT, "sms")
    assert _email_token(w).last_step == 1


def test_with_nothing_else_trusted_a_changed_address_cannot_be_confirmed_over_radius():
    w = World(totp=False, email="alice@example.org")
    admin.enroll_address(w.store, _config(), "email", "alice", "new@example.org", T0)
    d = w.send("hunter2,email")
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.NO_TOKEN)
    assert w.mailer.messages == []
    assert w.store.lock_state("alice").failures == 0  # the password was right
    # the help desk's emergency code is a trusted factor: it vouches for the new address
    code, _ = admin.issue_emergency_code(w.store, _config(), "alice", 120, "helpdesk", T0)
    d = w.send("hunter2,email")
    assert d.reason is Reason.ADDRESS_PENDING
    step = w.send(code, state=d.state)
    assert w.send(w.mailed_code(), state=step.state).outcome is Outcome.ACCEPT
    assert _email_token(w).last_step == 1


def test_cli_address_change_needs_confirming_and_old_codes_die():
    w = World()
    d = w.send("hunter2,email")
    code = w.mailed_code()
    change = admin.enroll_address(w.store, _config(), "email", "alice", "new@example.org", T0)
    assert change.needs_confirmation
    assert w.send(code, state=d.state).reason is Reason.BAD_OTP
    w.clock.advance(61)
    d = w.send("hunter2,email")
    assert d.reason is Reason.ADDRESS_PENDING
    step = w.send(w.code(), state=d.state)
    assert "to confirm it" in (step.reply_message or "")
    assert w.send(w.mailed_code(), state=step.state).outcome is Outcome.ACCEPT


def test_another_factor_at_the_confirmation_prompt_logs_in_and_leaves_the_address_pending():
    w = World()
    admin.enroll_address(w.store, _config(), "email", "alice", "new@example.org", T0)
    d = w.send("hunter2,email")
    step = w.send(w.code(), state=d.state)
    w.clock.advance(30)
    done = w.send(w.code(), state=step.state)
    assert (done.outcome, done.factor) == (Outcome.ACCEPT, "totp")
    assert _email_token(w).last_step is None


def test_the_confirmation_code_dies_with_an_address_replaced_meanwhile():
    w = World()
    admin.enroll_address(w.store, _config(), "email", "alice", "new@example.org", T0)
    d = w.send("hunter2,email")
    step = w.send(w.code(), state=d.state)
    admin.enroll_address(w.store, _config(), "email", "alice", "other@example.org", T0)
    assert w.send(w.mailed_code(), state=step.state).reason is Reason.BAD_OTP
    assert _email_token(w).last_step is None


def test_same_address_again_stays_confirmed():
    w = World()
    change = admin.enroll_address(w.store, _config(), "email", "alice", "alice@example.org", T0)
    assert not change.needs_confirmation


# -- backup and emergency codes -----------------------------------------------------------


def test_backup_code_works_once_appended_or_at_the_prompt():
    w = World("auto", email=None)
    codes = admin.new_backup_codes(w.store, _config(), "alice", T0)
    assert len(codes) == 10 and re.fullmatch(r"([0-9a-z]{4}-){3}[0-9a-z]{4}", codes[0])
    assert w.send(f"hunter2{codes[0]}").factor == "backup"
    assert w.send(f"hunter2{codes[0]}").reason is Reason.OTP_REPLAY
    d = w.send("hunter2")
    assert w.send(codes[1].replace("-", "").upper(), state=d.state).factor == "backup"
    assert admin.backup_codes_left(w.store.list_tokens("alice")) == (8, 10)


def test_regenerating_backup_codes_invalidates_the_old_set():
    w = World(email=None)
    old = admin.new_backup_codes(w.store, _config(), "alice", T0)
    admin.new_backup_codes(w.store, _config(), "alice", T0)
    assert w.send(f"hunter2{old[0]}").outcome is Outcome.REJECT


def test_user_with_only_spent_backup_codes_has_no_factor():
    w = World(totp=False, email=None)
    codes = admin.new_backup_codes(w.store, replace(_config(), otp=_otp(count=1)), "alice", T0)
    assert w.send(f"hunter2{codes[0]}").outcome is Outcome.ACCEPT
    assert w.send("hunter2").reason is Reason.NO_TOKEN


def test_emergency_code_works_once_within_its_lifetime_and_is_audited(caplog_twisted):
    w = World(email=None)
    code, _ = admin.issue_emergency_code(w.store, _config(), "alice", 120, "helpdesk-ann", T0)
    d = w.send(f"hunter2{code}")
    assert (d.outcome, d.factor) == (Outcome.ACCEPT, "emergency")
    assert any("issued by helpdesk-ann" in line for line in caplog_twisted)
    assert w.send(f"hunter2{code}").reason is Reason.OTP_REPLAY


def test_emergency_code_expires_under_the_clock():
    w = World(email=None)
    code, _ = admin.issue_emergency_code(w.store, _config(), "alice", 120, "ann", T0)
    w.clock.advance(119)
    first = w.send("hunter2")
    w.clock.advance(1)  # now exactly at the end of its lifetime
    assert w.send(code, state=first.state).reason is Reason.BAD_OTP


def test_a_new_emergency_code_replaces_the_previous_one():
    w = World(email=None)
    first, _ = admin.issue_emergency_code(w.store, _config(), "alice", 120, "ann", T0)
    admin.issue_emergency_code(w.store, _config(), "alice", 120, "ann", T0)
    assert w.send(f"hunter2{first}").outcome is Outcome.REJECT


def test_hotp_code_at_the_prompt_moves_the_counter_forward_only():
    from radmfa.factors.hotp import make_hotp

    w = World(email=None)
    token = TokenRecord("h1", "alice", "hotp", SECRET, 6, "SHA1", 0, T0)
    w.store.add_token(token)
    otp = make_hotp(token)
    assert w.send(f"hunter2{otp.at(2)}").factor == "hotp"
    assert w.send(f"hunter2{otp.at(1)}").reason is Reason.OTP_REPLAY
    # next expected is 3; a window of 3 reaches 6, so 7 is too far ahead
    assert w.send(f"hunter2{otp.at(7)}").outcome is Outcome.REJECT
    assert w.send(f"hunter2{otp.at(6)}").factor == "hotp"
    assert w.store.list_tokens("alice")[-1].last_step == 6


# -- helpers ------------------------------------------------------------------------------


def _otp(count: int = 10) -> OtpConfig:
    from radmfa.config import BackupCodesConfig

    return OtpConfig(email=EMAIL, sms=SMS, backup_codes=BackupCodesConfig(count=count))


def _config():
    from radmfa.config import parse_config

    config = parse_config(
        "clients: [{name: a, address: 127.0.0.1, secret: 0123456789abcdef}]\n"
        "local_users: {path: /dev/null}\n"
    )
    return replace(config, otp=_otp())


@pytest.fixture
def caplog_twisted():
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)
