"""Policy, admin state, trusted devices, grace periods and throttles in the pipeline, driven
synchronously: fake clock, memory store, fake directory (which counts binds and group
lookups)."""

from __future__ import annotations

import base64
from pathlib import Path

import pyotp
import pytest
from twisted.internet.task import Clock

from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.auth.pipeline import Authenticator, PipelineSettings
from radmfa.auth.policy import Policy
from radmfa.config import (
    LockoutConfig,
    OtpConfig,
    RateLimitsConfig,
    SourceLimitConfig,
    UserLimitConfig,
    parse_config,
)
from radmfa.factors.base import FactorRegistry
from radmfa.factors.totp import TotpFactor
from radmfa.store.base import TokenRecord
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import FakeDirectory, InlineRunner

SECRET = b"0123456789abcdefghij"
T0 = 1_800_000_000.0
DAY = 86400.0
OTP = pyotp.TOTP(base64.b32encode(SECRET).decode())

HEAD = """\
clients:
  - {name: vpn, address: 10.0.0.0/8, secret: a-long-random-secret-0001}
  - {name: pam, address: 127.0.0.0/8, secret: a-long-random-secret-0002}
ldap:
  servers: [ldap://127.0.0.1]
  base_dn: "dc=example,dc=org"
  bind_dn: "cn=radmfa,dc=example,dc=org"
  bind_password: "service-secret"
"""

POLICY = """\
trusted_devices: {days: 30}
policy:
  default: required
  rules:
    - {name: service, users: ["svc-*"], clients: [pam], mfa: exempt}
    - {name: gone, users: [mallory], deny: true}
    - name: admins
      groups: ["cn=admins,ou=groups,dc=example,dc=org"]
      allow_from: [10.1.0.0/16]
      deny_from: [10.1.66.0/24]
      trusted_device_days: 0
    - {name: guests, groups: [guests], mfa: optional}
"""

NO_LIMITS = RateLimitsConfig(UserLimitConfig(delay=0), SourceLimitConfig(max_failures=0))


class World:
    def __init__(
        self,
        policy_yaml: str = POLICY,
        *,
        limits: RateLimitsConfig = NO_LIMITS,
        mode: str = "auto",
        max_failures: int = 10,
        factors: FactorRegistry | None = None,
    ) -> None:
        self.limits, self.mode, self.max_failures = limits, mode, max_failures
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore()
        self.directory = FakeDirectory(
            users={u: f"{u}-pw" for u in ("alice", "bob", "carol", "svc-backup", "mallory")},
            groups={"carol": ["cn=admins,ou=groups,dc=example,dc=org"], "bob": ["guests"]},
        )
        self.states = iter(bytes([i]) * 16 for i in range(1, 250))
        self.factors = factors or FactorRegistry([TotpFactor(skew=1)])
        self.reload(policy_yaml)
        for user in ("alice", "carol", "bob"):
            self.enroll(user)

    def reload(self, policy_yaml: str) -> None:
        """A new pipeline on the same store and directory, as a SIGHUP builds one."""
        config = parse_config(HEAD + policy_yaml, base_dir=Path("/tmp"))
        self.auth = Authenticator(
            settings=PipelineSettings(
                otp=OtpConfig(mode=self.mode),  # type: ignore[arg-type]
                lockout=LockoutConfig(max_failures=self.max_failures, duration=300),
                policy=Policy(config.policy, config.trusted_devices.ttl),
                rate_limits=self.limits,
            ),
            directory=self.directory,
            store=AsyncStore(self.store, InlineRunner()),
            factors=self.factors,
            clock=self.clock,
            random_bytes=lambda n: next(self.states),
        )

    def enroll(self, user: str) -> None:
        self.store.add_token(TokenRecord(f"t-{user}", user, "totp", SECRET, 6, "SHA1", 30, T0))

    def code(self) -> str:
        return OTP.at(self.clock.seconds())

    def next_code(self) -> None:
        self.clock.advance(30)

    def send(
        self,
        user: str,
        password: str,
        *,
        station: str | None = None,
        client: str = "vpn",
        source: str = "10.9.9.9",
        state: bytes | None = None,
        nas: str | None = None,
    ) -> Decision:
        request = AccessRequest(
            user_name=user.encode(),
            password=password.encode(),
            method=AuthMethod.PAP,
            state=state,
            client_name=client,
            client_address=source,
            calling_station_id=station,
            nas_identifier=nas,
        )
        results: list[Decision] = []
        self.auth.handle(request).addCallback(results.append)
        assert results
        return results[0]

    def mfa(self, user: str, **kw: object) -> Decision:
        """Password and a fresh code appended."""
        self.next_code()
        return self.send(user, f"{user}-pw{self.code()}", **kw)  # type: ignore[arg-type]


def summary(d: Decision) -> tuple[str, str, str | None]:
    return d.outcome.value, d.reason.value, d.rule


# -- policy outcomes ----------------------------------------------------------------------


def test_exempt_service_account_passes_on_its_password_with_one_bind():
    w = World()
    d = w.send("svc-backup", "svc-backup-pw", client="pam", source="127.0.0.5")
    assert summary(d) == ("accept", "exempt", "service")
    assert w.directory.binds == [("svc-backup", "svc-backup-pw")]
    assert w.directory.group_lookups == []  # decided by name before the group rules


def test_the_same_account_from_another_client_needs_a_code():
    w = World()
    w.enroll("svc-backup")
    d = w.send("svc-backup", "svc-backup-pw", client="vpn")
    assert (d.outcome, d.rule) == (Outcome.CHALLENGE, "default")


def test_deny_rule_refuses_without_any_directory_traffic():
    w = World()
    d = w.send("mallory", "mallory-pw")
    assert summary(d) == ("reject", "policy_deny", "gone")
    assert w.directory.binds == [] and w.directory.group_lookups == []


def test_group_rule_looks_groups_up_once_and_reuses_the_entry_for_the_bind():
    w = World()
    d = w.mfa("carol", station="10.1.2.3")
    assert summary(d) == ("accept", "ok", "admins")
    assert w.directory.group_lookups == ["carol"]
    assert w.directory.entries == [w.directory.entries[0]] and w.directory.entries[0] is not None
    assert len(w.directory.binds) == 1


def test_address_lists_refuse_before_the_bind():
    w = World()
    d = w.mfa("carol", station="10.2.0.1")
    assert summary(d) == ("reject", "ip_not_allowed", "admins")
    d = w.mfa("carol", station="10.1.66.7")  # in both lists: the deny wins
    assert summary(d) == ("reject", "ip_denied", "admins")
    d = w.mfa("carol", station="10.1.2.3:4500", source="10.66.0.1")  # the station, its port
    assert summary(d) == ("accept", "ok", "admins")
    assert len(w.directory.binds) == 1


@pytest.mark.parametrize("station", ["10.1.66.007", "0x0A.1.66.7", "aa:bb:cc:dd:ee:ff", "pc-7"])
def test_a_station_that_is_no_address_is_refused_by_address_lists_before_the_bind(station):
    # the NAS (10.1.0.1) is allowed and not denied: before, every one of these took its place
    w = World()
    d = w.mfa("carol", station=station, source="10.1.0.1")
    assert summary(d) == ("reject", "ip_denied", "admins")
    assert w.directory.binds == []


def test_group_lookup_outage_rejects_without_counting():
    w = World()
    w.directory.unavailable = True
    d = w.send("carol", "carol-pw")
    assert d.reason is Reason.DIRECTORY_UNAVAILABLE
    assert w.store.lock_state("carol").failures == 0


def test_optional_rule_lets_users_without_a_factor_in_and_asks_the_others():
    w = World()
    d = w.send("bob", "bob-pw")
    assert (d.outcome, d.rule) == (Outcome.CHALLENGE, "guests")  # bob has a token: must use it
    w.store.remove_tokens("bob")
    assert summary(w.send("bob", "bob-pw")) == ("accept", "password_only", "guests")


def test_required_without_a_factor_is_rejected_without_a_bind():
    w = World()
    w.store.remove_tokens("alice")
    d = w.send("alice", "alice-pw")
    assert summary(d) == ("reject", "no_token", "default")
    assert w.directory.binds == []


def test_allow_password_only_still_means_optional_for_everyone():
    clock = Clock()
    store = MemoryStore()
    auth = Authenticator(
        settings=PipelineSettings(OtpConfig(allow_password_only=True), LockoutConfig()),
        directory=FakeDirectory(users={"dave": "pw"}),
        store=AsyncStore(store, InlineRunner()),
        factors=FactorRegistry([TotpFactor(skew=1)]),
        clock=clock,
    )
    results: list[Decision] = []
    auth.handle(AccessRequest(b"dave", b"pw", AuthMethod.PAP, None, "vpn", "10.0.0.1")).addCallback(
        results.append
    )
    assert (results[0].outcome, results[0].reason) == (Outcome.ACCEPT, Reason.PASSWORD_ONLY)


# -- admin state ----------------------------------------------------------------------------


def test_disabled_user_is_refused_without_a_bind_and_enable_restores():
    w = World()
    w.store.set_status("alice", "disabled", None, "left")
    d = w.mfa("alice")
    assert summary(d) == ("reject", "user_disabled", None)
    assert w.directory.binds == []
    w.store.set_status("alice", "enabled", None, None)
    assert w.mfa("alice").outcome is Outcome.ACCEPT


def test_suspended_user_passes_without_a_code_until_the_time_given():
    w = World()
    w.store.set_status("alice", "suspended", T0 + 3600, "lost phone")
    d = w.send("alice", "alice-pw")
    assert summary(d) == ("accept", "mfa_suspended", "default")
    w.clock.advance(3600)
    d = w.send("alice", "alice-pw")
    assert d.outcome is Outcome.CHALLENGE  # the suspension is over


def test_disabled_user_cannot_answer_a_pending_challenge():
    w = World()
    first = w.send("alice", "alice-pw")
    assert first.outcome is Outcome.CHALLENGE
    w.store.set_status("alice", "disabled", None, None)
    d = w.send("alice", w.code(), state=first.state)
    assert d.reason is Reason.USER_DISABLED


# -- a reload between round one and the answer --------------------------------------------


def test_a_reload_that_denies_the_user_refuses_the_answer_to_a_pending_challenge():
    w = World()
    first = w.send("alice", "alice-pw")
    assert first.outcome is Outcome.CHALLENGE
    w.reload(POLICY.replace("users: [mallory]", "users: [mallory, alice]"))
    d = w.send("alice", w.code(), state=first.state)
    assert summary(d) == ("reject", "policy_deny", "gone")
    assert w.store.lock_state("alice").failures == 0  # the policy's no is not a guess


def test_a_reload_that_bars_the_address_refuses_the_answer():
    w = World()
    first = w.send("alice", "alice-pw", station="10.9.1.1")
    w.reload(
        POLICY.replace("default: required", "default: {mfa: required, deny_from: [10.9.0.0/16]}")
    )
    d = w.send("alice", w.code(), station="10.9.1.1", state=first.state)
    assert summary(d) == ("reject", "ip_denied", "default")


def test_a_reload_with_a_denying_group_rule_looks_the_groups_up_for_the_answer():
    w = World()
    first = w.send("bob", "bob-pw")
    assert summary(first)[0] == "challenge" and first.rule == "guests"
    w.reload(
        POLICY.replace(
            "{name: guests, groups: [guests], mfa: optional}",
            "{name: guests, groups: [guests], deny: true}",
        )
    )
    d = w.send("bob", w.code(), state=first.state)
    assert summary(d) == ("reject", "policy_deny", "guests")


def test_the_rule_that_decides_the_answer_is_todays_not_the_one_in_the_state():
    """A rule renamed by a reload used to fall back to the default's 30 trusted days."""
    w = World()
    first = w.send("carol", "carol-pw", source="10.1.2.3", station="10.1.2.3")
    assert first.rule == "admins"
    w.reload(POLICY.replace("name: admins", "name: admins-2024"))
    d = w.send("carol", w.code(), source="10.1.2.3", station="10.1.2.3", state=first.state)
    assert summary(d) == ("accept", "ok", "admins-2024")
    assert w.store.list_devices("carol", T0 + DAY) == []  # the rule still trusts no device


# -- trusted devices ------------------------------------------------------------------------


def test_trusted_device_skips_the_code_until_it_expires():
    w = World()
    assert w.mfa("alice", station="10.5.0.1").reason is Reason.OK
    d = w.send("alice", "alice-pw", station="10.5.0.1")
    assert summary(d) == ("accept", "trusted_device", "default") and d.trusted_device
    assert w.send("alice", "alice-pw", station="10.5.0.2").outcome is Outcome.CHALLENGE
    assert w.send("alice", "alice-pw").outcome is Outcome.CHALLENGE  # no station: no device
    w.clock.advance(30 * DAY)
    assert w.send("alice", "alice-pw", station="10.5.0.1").outcome is Outcome.CHALLENGE


def test_a_code_typed_out_of_habit_on_a_trusted_device_is_taken_off():
    w = World()
    w.mfa("alice", station="10.5.0.1")
    code = w.code()  # just used: a replay, dropped, the rest is the password
    d = w.send("alice", f"alice-pw{code}", station="10.5.0.1")
    assert d.reason is Reason.TRUSTED_DEVICE
    w.next_code()
    d = w.send("alice", f"alice-pw{w.code()}", station="10.5.0.1")  # fresh: a full login
    assert (d.reason, d.factor) == (Reason.OK, "totp")


def test_two_users_on_one_device_have_their_own_timers():
    w = World()
    w.mfa("alice", station="kiosk-1")
    w.clock.advance(10 * DAY)
    w.mfa("bob", station="kiosk-1")
    w.clock.advance(21 * DAY)  # alice's 30 days are over, bob's are not
    assert w.send("alice", "alice-pw", station="kiosk-1").outcome is Outcome.CHALLENGE
    assert w.send("bob", "bob-pw", station="kiosk-1").reason is Reason.TRUSTED_DEVICE


def test_a_challenge_login_remembers_the_device_too():
    w = World(mode="challenge")
    first = w.send("alice", "alice-pw", station="10.5.0.9")
    assert first.outcome is Outcome.CHALLENGE
    second = w.send("alice", w.code(), station="10.5.0.9", state=first.state)
    assert (second.outcome, second.rule) == (Outcome.ACCEPT, "default")
    assert w.send("alice", "alice-pw", station="10.5.0.9").reason is Reason.TRUSTED_DEVICE


def test_a_remembered_device_counts_only_through_the_client_and_nas_that_remembered_it():
    w = World()
    mac = "02-00-5E-10-00-01"
    assert w.mfa("alice", station=mac, nas="ap-1").reason is Reason.OK
    assert w.send("alice", "alice-pw", station=mac, nas="ap-1").reason is Reason.TRUSTED_DEVICE
    # the same station reported by another client entry, another NAS of this one, or a NAS
    # that sends no NAS-Identifier: a spoofed MAC or a shared address, not this device
    other = w.send("alice", "alice-pw", station=mac, nas="ap-1", client="pam", source="127.0.0.5")
    assert other.outcome is Outcome.CHALLENGE
    assert w.send("alice", "alice-pw", station=mac, nas="ap-2").outcome is Outcome.CHALLENGE
    assert w.send("alice", "alice-pw", station=mac).outcome is Outcome.CHALLENGE
    [device] = w.store.list_devices("alice", T0 + DAY)
    assert (device.device, device.client, device.nas_id) == ("02:00:5e:10:00:01", "vpn", "ap-1")


def test_a_challenge_login_remembers_the_client_and_nas_of_its_answer():
    w = World()
    first = w.send("alice", "alice-pw", station="10.5.0.9", nas="gw-1")
    assert first.outcome is Outcome.CHALLENGE
    w.next_code()
    second = w.send("alice", w.code(), station="10.5.0.9", nas="gw-1", state=first.state)
    assert second.reason is Reason.OK
    [device] = w.store.list_devices("alice", T0 + DAY)
    assert (device.client, device.nas_id) == ("vpn", "gw-1")
    assert w.send("alice", "alice-pw", station="10.5.0.9", nas="gw-2").outcome is Outcome.CHALLENGE
    trusted = w.send("alice", "alice-pw", station="10.5.0.9", nas="gw-1")
    assert trusted.reason is Reason.TRUSTED_DEVICE


def test_revoked_device_needs_the_code_again():
    w = World()
    w.mfa("alice", station="10.5.0.1")
    w.store.revoke_devices("alice")
    assert w.send("alice", "alice-pw", station="10.5.0.1").outcome is Outcome.CHALLENGE


def test_a_rule_without_trust_never_remembers():
    w = World()
    w.mfa("carol", station="10.1.2.3")
    assert w.store.list_devices("carol", T0 + DAY) == []
    assert w.send("carol", "carol-pw", station="10.1.2.3").outcome is Outcome.CHALLENGE


def test_a_new_address_from_the_directory_forgets_the_devices():
    from radmfa.config import CodeDelivery, EmailConfig, SmtpConfig
    from radmfa.factors.email import EmailFactor
    from radmfa.factors.outofband import SOURCE_DIRECTORY, address_token
    from radmfa.testing import RecordingMailer

    email = EmailConfig(SmtpConfig("localhost"), "mfa@x", delivery=CodeDelivery("email"))
    mailer = RecordingMailer()
    w = World(
        factors=FactorRegistry(
            [TotpFactor(skew=1), EmailFactor(email, mailer, "mail")]  # type: ignore[arg-type]
        )
    )
    w.store.add_token(address_token("email", "alice", "a@x.org", SOURCE_DIRECTORY, T0))
    w.mfa("alice", station="10.5.0.1")
    assert w.store.list_devices("alice", T0 + DAY)
    w.directory.attributes["alice"] = {"mail": ["new@x.org"]}
    w.send("alice", "alice-pw", station="10.5.0.2")  # the bind brings the new address
    assert w.store.list_devices("alice", T0 + DAY) == []


# -- enrolment grace ------------------------------------------------------------------------

GRACE = POLICY.replace(
    "  default: required\n", "  default: required\n  unenrolled: {grace_days: 7, grace_logins: 3}\n"
)


def test_grace_period_lets_unenrolled_users_in_and_says_how_long():
    w = World(GRACE)
    w.store.remove_tokens("alice")
    d = w.send("alice", "alice-pw")
    assert summary(d) == ("accept", "grace_period", "default")
    assert d.reply_message == (
        "Please set up two-factor authentication now: 7 days or 2 logins left."
    )
    w.clock.advance(6.5 * DAY)
    d = w.send("alice", "alice-pw")
    assert d.reply_message is not None and "12 hours or 1 login left" in d.reply_message
    d = w.send("alice", "alice-pw")
    assert d.reply_message is not None and "0 logins" in d.reply_message
    d = w.send("alice", "alice-pw")
    assert summary(d) == ("reject", "grace_expired", "default")


def test_grace_days_run_from_the_first_login():
    w = World(GRACE.replace("grace_logins: 3", "grace_logins: 0"))
    w.store.remove_tokens("alice")
    assert w.send("alice", "alice-pw").reason is Reason.GRACE_PERIOD
    w.clock.advance(7 * DAY)
    assert w.send("alice", "alice-pw").reason is Reason.GRACE_EXPIRED
    assert len(w.directory.binds) == 1  # an expired grace costs no bind


def test_a_wrong_password_does_not_start_the_grace_clock():
    w = World(GRACE)
    w.store.remove_tokens("alice")
    assert w.send("alice", "wrong").reason is Reason.BAD_PASSWORD
    assert w.store.user_settings("alice").first_seen_at is None


def test_reset_restarts_enrolment_with_a_fresh_grace():
    w = World(GRACE)
    w.mfa("alice", station="10.5.0.1")
    w.store.reset_user("alice")
    d = w.send("alice", "alice-pw", station="10.5.0.1")  # no token, no device
    assert d.reason is Reason.GRACE_PERIOD


# -- throttles ------------------------------------------------------------------------------

USER_LIMIT = RateLimitsConfig(
    UserLimitConfig(window=900, free_failures=2, delay=10, max_delay=40),
    SourceLimitConfig(max_failures=0),
)


def test_user_throttle_delays_grow_and_cost_no_bind():
    w = World(limits=USER_LIMIT)
    for _ in range(2):
        assert w.send("alice", "wrong").reason is Reason.BAD_PASSWORD
    binds = len(w.directory.binds)
    assert w.send("alice", "alice-pw").reason is Reason.THROTTLED  # 10 s after the 2nd
    assert len(w.directory.binds) == binds
    w.clock.advance(10)
    assert w.send("alice", "wrong").reason is Reason.BAD_PASSWORD  # 3rd: now 20 s
    w.clock.advance(19)
    assert w.send("alice", "alice-pw").reason is Reason.THROTTLED
    w.clock.advance(1)
    assert w.send("alice", "alice-pw").outcome is Outcome.CHALLENGE
    assert w.store.lock_state("alice").failures == 3  # throttled attempts are not counted


def test_user_throttle_is_capped_and_forgets_old_failures():
    w = World(limits=USER_LIMIT)
    for _ in range(6):
        w.send("alice", "wrong")
        w.clock.advance(40)  # the cap: never more than 40 s
    assert w.send("alice", "alice-pw").outcome is Outcome.CHALLENGE
    w.send("alice", "wrong")
    w.clock.advance(901)  # the window has forgotten them all
    w.send("alice", "wrong")
    assert w.send("alice", "alice-pw").outcome is Outcome.CHALLENGE


def test_a_success_clears_the_user_throttle():
    w = World(limits=USER_LIMIT)
    w.send("alice", "wrong")
    w.send("alice", "wrong")
    w.clock.advance(10)
    assert w.mfa("alice").outcome is Outcome.ACCEPT
    w.send("alice", "wrong")
    assert w.send("alice", "alice-pw").outcome is Outcome.CHALLENGE  # one failure: free


def test_source_throttle_stops_password_spraying_across_users():
    limits = RateLimitsConfig(UserLimitConfig(delay=0), SourceLimitConfig(300, 3))
    w = World(limits=limits)
    for user in ("alice", "bob", "nobody"):
        assert w.send(user, "Summer2030!", station="203.0.113.9").outcome is Outcome.REJECT
    binds = len(w.directory.binds)
    d = w.send("svc-backup", "Summer2030!", station="203.0.113.9", client="pam")
    assert d.reason is Reason.SOURCE_THROTTLED
    assert len(w.directory.binds) == binds
    assert w.send("alice", "alice-pw", station="198.51.100.1").outcome is Outcome.CHALLENGE
    w.clock.advance(301)
    assert w.send("alice", "alice-pw", station="203.0.113.9").outcome is Outcome.CHALLENGE


def test_without_a_station_the_nas_is_never_throttled_as_a_source():
    # The packet source is then the NAS: throttling it would lock out everyone behind it.
    limits = RateLimitsConfig(UserLimitConfig(delay=0), SourceLimitConfig(300, 2))
    w = World(limits=limits)
    for name in ("alice", "bob", "dave", "erin"):
        assert w.send(name, "x", source="10.7.0.1").reason is not Reason.SOURCE_THROTTLED
    assert w.send("carol", "carol-pw", source="10.7.0.1").reason is not Reason.SOURCE_THROTTLED


# -- the directory's account state --------------------------------------------------------


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ("password_expired", Reason.PASSWORD_EXPIRED),
        ("account_disabled", Reason.ACCOUNT_DISABLED),
        ("account_locked", Reason.ACCOUNT_LOCKED),
        ("account_expired", Reason.ACCOUNT_EXPIRED),
        ("password_must_change", Reason.PASSWORD_MUST_CHANGE),
        ("logon_hours_restricted", Reason.ACCOUNT_RESTRICTED),
    ],
)
def test_account_refusals_reject_with_their_reason_and_do_not_count(detail, reason):
    w = World()
    w.directory.refusals["alice"] = detail
    d = w.mfa("alice")
    assert (d.outcome, d.reason) == (Outcome.REJECT, reason)
    assert w.store.lock_state("alice").failures == 0


# -- reply attributes -----------------------------------------------------------------------

VLAN = b"\x51\x05120"
REPLIES = POLICY.replace(
    "      trusted_device_days: 0\n",
    "      trusted_device_days: 0\n      reply: {Tunnel-Private-Group-Id: '120'}\n",
).replace("default: required", "default: {mfa: required, reply: {Filter-Id: all}}")


def test_the_deciding_rules_attributes_go_on_its_accepts_only():
    w = World(REPLIES)
    d = w.mfa("carol", station="10.1.2.3")
    assert summary(d) == ("accept", "ok", "admins") and d.attributes == (VLAN,)
    d = w.mfa("alice")
    assert summary(d) == ("accept", "ok", "default") and d.attributes == (b"\x0b\x05all",)
    d = w.send("carol", "carol-pw" + "000000", station="10.1.2.3")
    assert d.outcome is Outcome.REJECT and d.attributes == ()
    d = w.mfa("carol", station="10.2.0.1")  # the rule decides, and its address list refuses
    assert summary(d) == ("reject", "ip_not_allowed", "admins") and d.attributes == ()
    d = w.send("svc-backup", "svc-backup-pw", client="pam", source="127.0.0.5")
    assert summary(d) == ("accept", "exempt", "service") and d.attributes == ()


def test_a_challenge_carries_none_and_the_accept_after_it_carries_the_rules():
    w = World(REPLIES)
    first = w.send("carol", "carol-pw", station="10.1.2.3")
    assert first.outcome is Outcome.CHALLENGE and first.attributes == ()
    d = w.send("carol", w.code(), station="10.1.2.3", state=first.state)
    assert summary(d) == ("accept", "ok", "admins") and d.attributes == (VLAN,)


def test_the_answer_gets_the_attributes_of_the_policy_in_force_when_it_comes():
    w = World(REPLIES)
    first = w.send("carol", "carol-pw", station="10.1.2.3")
    w.reload(REPLIES.replace("'120'", "'130'"))
    d = w.send("carol", w.code(), station="10.1.2.3", state=first.state)
    assert d.attributes == (b"\x51\x05130",)


def test_a_trusted_device_accept_carries_the_rules_attributes_too():
    w = World(REPLIES)
    w.mfa("alice", station="10.5.0.2")  # remembered under the default (30 days)
    d = w.send("alice", "alice-pw", station="10.5.0.2")
    assert d.reason is Reason.TRUSTED_DEVICE and d.attributes == (b"\x0b\x05all",)


def test_accepted_codes_tell_the_drift_watch_their_offset_from_the_servers_clock():
    from radmfa.clocktrust import DriftWatch

    w = World()
    w.auth.ledger.drift = watch = DriftWatch(min_users=2)
    w.next_code()
    ahead = OTP.at(w.clock.seconds() + 30)  # the phones run a step ahead
    assert w.send("alice", f"alice-pw{ahead}").outcome is Outcome.ACCEPT
    assert w.send("bob", f"bob-pw{ahead}").outcome is Outcome.ACCEPT
    assert watch.users == 2 and watch.leaning == 1
    w.send("bob", f"bob-pw{ahead}")  # a replay is refused and tells nothing
    assert watch.users == 2


def test_a_client_with_a_mode_of_its_own_overrides_otp_mode():
    w = World(mode="challenge")
    w.auth.settings = PipelineSettings(
        otp=w.auth.settings.otp,
        lockout=w.auth.settings.lockout,
        policy=w.auth.settings.policy,
        rate_limits=w.auth.settings.rate_limits,
        client_modes={"pam": "append"},
    )
    w.next_code()
    appended = f"alice-pw{w.code()}"
    assert w.send("alice", "alice-pw", client="vpn").outcome is Outcome.CHALLENGE  # otp.mode
    d = w.send("alice", appended, client="pam", source="127.0.0.9")
    assert d.outcome is Outcome.ACCEPT and d.method == "append"
    d = w.send("alice", "alice-pw", client="pam", source="127.0.0.9")  # append: no challenge
    assert summary(d) == ("reject", "bad_otp", "default")


CONTINUE = """\
trusted_devices: {days: 30}
policy:
  default: {mfa: optional, reply: {Filter-Id: all}}
  rules:
    - {name: guest-vlan, groups: [guests], continue: true, reply: {Tunnel-Private-Group-Id: '130'}}
    - {name: gone, users: [mallory], deny: true}
"""


def test_a_continue_rule_adds_its_attributes_and_changes_nobodys_mfa():
    w = World(CONTINUE)
    w.store.remove_tokens("bob")
    d = w.send("bob", "bob-pw")  # a guest without a factor: optional still decides
    assert summary(d) == ("accept", "password_only", "default")
    assert d.attributes == (b"\x51\x05130", b"\x0b\x05all")
    d = w.mfa("alice")  # not a guest: the default's attributes only
    assert summary(d) == ("accept", "ok", "default") and d.attributes == (b"\x0b\x05all",)
    assert w.send("mallory", "mallory-pw").outcome is Outcome.REJECT
