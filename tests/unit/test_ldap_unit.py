"""LDAP checker logic without a server: pure helpers, then the checker over a scripted fake
directory, an inline runner and a fake clock (deterministic, no threads, no reactor)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ldap3
import pytest
from ldap3.core.exceptions import (
    LDAPSocketOpenError,
    LDAPSocketReceiveError,
    LDAPStartTLSError,
)
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from radmfa.config import DEFAULT_GROUP_FILTER, LdapConfig, LdapGroupsConfig
from radmfa.directory.answers import (
    AD_DIAGNOSTICS,
    Verdict,
    ad_diagnostic,
    interpret_bind,
    interpret_search,
)
from radmfa.directory.base import DirectoryOutcome, DirectoryResult, GroupResult
from radmfa.directory.groupwalk import GroupWalk, group_probe_filter
from radmfa.directory.ldap import Ldap3Connector, LdapPasswordChecker, make_tls
from radmfa.directory.rules import (
    ACCOUNT_STATE_ATTRIBUTES,
    LdapServer,
    build_user_dn,
    build_user_filter,
    parse_server,
    username_problem,
)

OK = DirectoryOutcome.OK
INVALID = DirectoryOutcome.INVALID_CREDENTIALS
NO_SUCH_USER = DirectoryOutcome.NO_SUCH_USER
AMBIGUOUS = DirectoryOutcome.AMBIGUOUS_USER
UNAVAILABLE = DirectoryOutcome.UNAVAILABLE


def ldap_result(code: int, description: str = "", message: str = "") -> dict[str, Any]:
    return {
        "result": code,
        "description": description,
        "message": message,
        "dn": "",
        "referrals": None,
        "type": "bindResponse",
    }


def safe_sync(status: object, code: int | None, message: str = "", response: Any = None) -> tuple:
    """What an ldap3 SAFE_SYNC operation returns: (status, result, response, request)."""
    result = None if code is None else ldap_result(code, f"code{code}", message)
    return (status, result, response, {"type": "request"})


# -- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url", "host", "port", "use_ssl"),
    [
        (
            "ldap://ldap1.example.org",
            "ldap://ldap1.example.org:389",
            "ldap1.example.org",
            389,
            False,
        ),
        (
            "ldaps://ldap1.example.org/",
            "ldaps://ldap1.example.org:636",
            "ldap1.example.org",
            636,
            True,
        ),
        ("LDAP://10.0.0.1:3389", "ldap://10.0.0.1:3389", "10.0.0.1", 3389, False),
        ("ldap.example.org", "ldap://ldap.example.org:389", "ldap.example.org", 389, False),
        ("127.0.0.1:1389", "ldap://127.0.0.1:1389", "127.0.0.1", 1389, False),
        ("ldaps://[::1]:1636", "ldaps://[::1]:1636", "::1", 1636, True),
    ],
)
def test_parse_server_accepts_urls_and_host_port(text, url, host, port, use_ssl):
    assert parse_server(text) == LdapServer(url, host, port, use_ssl)


@pytest.mark.parametrize(
    "text",
    [
        "ldapi:///var/run/slapd.sock",
        "http://ldap.example.org",
        "ldap://ldap.example.org/dc=example,dc=org",
        "ldap://ldap.example.org/??sub",
        "ldap://user:pw@ldap.example.org",
        "ldap://ldap.example.org:99999",
        "ldap://",
    ],
)
def test_parse_server_rejects_what_it_cannot_honour(text):
    with pytest.raises(ValueError):
        parse_server(text)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("alice", None),
        ("dave smith", None),
        ("Zoë", None),
        ("a)(uid=*", None),  # escaped later, not refused
        ("", "empty_username"),
        ("   ", "empty_username"),
        ("a\x00b", "bad_username_characters"),
        ("alice\n", "bad_username_characters"),
        ("\x1b[31malice", "bad_username_characters"),
        ("al\x7fice", "bad_username_characters"),
        ("al\x85ice", "bad_username_characters"),  # C1 NEL
        ("a\u2028b", "bad_username_characters"),
        ("a\udcffb", "bad_username_characters"),  # lone surrogate (surrogateescape)
        ("x" * 257, "username_too_long"),
    ],
)
def test_username_problem(name, problem):
    assert username_problem(name) == problem


def test_user_dn_escapes_rfc4514_specials():
    template = "uid={username},ou=people,dc=example,dc=org"
    assert build_user_dn(template, "alice") == "uid=alice,ou=people,dc=example,dc=org"
    assert build_user_dn(template, "smith, jr") == r"uid=smith\, jr,ou=people,dc=example,dc=org"
    assert build_user_dn(template, "a+cn=b") == r"uid=a\+cn\=b,ou=people,dc=example,dc=org"
    assert build_user_dn(template, '"<x>;\\') == r"uid=\"\<x\>\;\\,ou=people,dc=example,dc=org"
    assert build_user_dn(template, " alice ") == r"uid=\ alice\ ,ou=people,dc=example,dc=org"
    assert build_user_dn(template, "#x") == r"uid=\#x,ou=people,dc=example,dc=org"
    assert build_user_dn("{username}@corp.example.com", "alice") == "alice@corp.example.com"


def test_user_dn_refuses_an_empty_name():
    with pytest.raises(ValueError):
        build_user_dn("uid={username},dc=x", "")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice", "(uid=alice)"),
        ("*", r"(uid=\2a)"),
        ("adm*", r"(uid=adm\2a)"),
        ("a)(uid=*", r"(uid=a\29\28uid=\2a)"),
        ("x\\", r"(uid=x\5c)"),
        ("a\x00b", r"(uid=a\00b)"),
        ("pässwörd", "(uid=pässwörd)"),
    ],
)
def test_user_filter_escapes_rfc4515_specials(name, expected):
    assert build_user_filter("(uid={username})", name) == expected


def test_user_filter_in_a_compound_template():
    template = "(&(objectClass=person)(|(uid={username})(mail={username})))"
    assert build_user_filter(template, "*") == r"(&(objectClass=person)(|(uid=\2a)(mail=\2a)))"


def test_a_failed_safe_sync_bind_is_a_truthy_tuple_but_not_a_success():
    failed = safe_sync(False, 49)
    assert bool(failed) is True  # the trap: `if conn.bind():` would let everybody in
    answer = interpret_bind(failed)
    assert answer.verdict is Verdict.REJECTED
    assert answer.detail == "bad_password"


def test_bind_success_needs_status_true_and_result_zero():
    assert interpret_bind(safe_sync(True, 0)).verdict is Verdict.OK
    assert interpret_bind(safe_sync(False, 0)).verdict is Verdict.ERROR
    assert interpret_bind(safe_sync(True, 49)).verdict is Verdict.REJECTED
    assert interpret_bind(safe_sync("yes", 0)).verdict is Verdict.ERROR  # truthy is not True


@pytest.mark.parametrize("kind", ["searchResDone", "extendedResp", None])
@pytest.mark.parametrize("code", [0, 49, 52])
def test_only_a_bind_response_judges_a_bind(kind, code):
    """ldap3 hands back any result with the bind's message ID: another operation's result is
    an error, never a success, a wrong password or a reason to try the next server."""
    status, result, response, request = safe_sync(code == 0, code)
    if kind is None:
        del result["type"]
    else:
        result["type"] = kind
    assert interpret_bind((status, result, response, request)).verdict is Verdict.ERROR


@pytest.mark.parametrize("code", [51, 52, 80])
def test_busy_unavailable_other_mean_try_the_next_server(code):
    assert interpret_bind(safe_sync(False, code)).verdict is Verdict.TRANSIENT


def test_no_result_means_try_the_next_server():
    assert interpret_bind(safe_sync(False, None)).verdict is Verdict.TRANSIENT


@pytest.mark.parametrize("code", [32, 34, 48, 50, 53])
def test_refusals_other_than_49_are_rejections(code):
    answer = interpret_bind(safe_sync(False, code))
    assert answer.verdict is Verdict.REJECTED
    assert answer.detail.startswith("bind_refused_")


@pytest.mark.parametrize("code", [1, 2, 3, 8, 13, 54, 64])
def test_other_answers_are_errors_not_rejections(code):
    assert interpret_bind(safe_sync(False, code)).verdict is Verdict.ERROR


@pytest.mark.parametrize("ret", [True, False, (True, None), None, "ok"])
def test_a_bare_bool_or_odd_value_is_refused_loudly(ret):
    with pytest.raises(TypeError):
        interpret_bind(ret)


AD_MESSAGE = (
    "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {}, v4563\x00"
)


@pytest.mark.parametrize(("code", "reason"), sorted(AD_DIAGNOSTICS.items()))
def test_ad_diagnostics_map_to_reasons(code, reason):
    assert ad_diagnostic(AD_MESSAGE.format(code)) == reason
    answer = interpret_bind(safe_sync(False, 49, AD_MESSAGE.format(code)))
    assert answer.verdict is Verdict.REJECTED
    assert answer.detail == reason


def test_ad_diagnostic_edge_cases():
    assert ad_diagnostic(AD_MESSAGE.format("52E")) == "bad_password"
    assert ad_diagnostic(AD_MESSAGE.format("569")) == "ad_data_569"
    assert ad_diagnostic("") is None
    assert ad_diagnostic(None) is None
    assert ad_diagnostic("invalid credentials") is None


def entry(dn: str, **attributes: list[bytes]) -> dict[str, Any]:
    return {"type": "searchResEntry", "dn": dn, "raw_attributes": attributes, "attributes": {}}


def reference(uri: str) -> dict[str, Any]:
    return {"type": "searchResRef", "uri": [uri]}


def test_search_counts_only_entries_not_referrals():
    response = [entry("uid=a,dc=x"), reference("ldap://evil/"), reference("ldap://other/")]
    answer = interpret_search(safe_sync(True, 0, response=response))
    assert answer.verdict is Verdict.OK
    assert [e["dn"] for e in answer.entries] == ["uid=a,dc=x"]


def test_search_with_no_entries_is_a_successful_empty_answer():
    # ldap3 reports status False when a search found nothing; the result code says success.
    answer = interpret_search(safe_sync(False, 0, response=[]))
    assert answer.verdict is Verdict.OK
    assert answer.entries == ()


def test_search_size_limit_exceeded_is_truncated():
    response = [entry("uid=a,ou=1,dc=x"), entry("uid=a,ou=2,dc=x")]
    answer = interpret_search(safe_sync(False, 4, response=response))
    assert answer.verdict is Verdict.OK
    assert answer.truncated
    assert len(answer.entries) == 2


def test_search_failures():
    assert interpret_search(safe_sync(False, 52)).verdict is Verdict.TRANSIENT
    assert interpret_search(safe_sync(False, None)).verdict is Verdict.TRANSIENT
    assert interpret_search(safe_sync(False, 32)).verdict is Verdict.ERROR  # noSuchObject


def test_tls_requires_a_valid_certificate_and_tls_1_2():
    tls = make_tls(None)
    assert tls.validate == ssl.CERT_REQUIRED
    assert ssl.create_default_context().minimum_version >= ssl.TLSVersion.TLSv1_2


def test_connector_builds_a_safe_connection():
    config = LdapConfig(
        servers=("ldaps://ldap.example.org",), user_dn="uid={username},dc=x", timeout=2.5
    )
    connector = Ldap3Connector(config)
    conn: Any = connector(parse_server("ldaps://ldap.example.org"), "uid=a,dc=x", b"pw")
    assert conn.strategy_type == ldap3.SAFE_SYNC
    assert conn.strategy.thread_safe
    assert conn.authentication == ldap3.SIMPLE
    assert conn.auto_bind == ldap3.AUTO_BIND_NONE
    assert conn.read_only is True
    assert conn.auto_referrals is False
    assert conn.raise_exceptions is False
    assert conn.receive_timeout == 3 and isinstance(conn.receive_timeout, int)
    assert conn.closed  # nothing opened yet
    server = conn.server
    assert (server.host, server.port, server.ssl) == ("ldap.example.org", 636, True)
    assert server.get_info == ldap3.NONE
    assert server.connect_timeout == 2.5
    assert server.tls.validate == ssl.CERT_REQUIRED
    assert server.allowed_referral_hosts == []
    anonymous: Any = connector(parse_server("ldaps://ldap.example.org"), None, None)
    assert anonymous.authentication == ldap3.ANONYMOUS


def test_connector_uses_no_tls_for_plain_ldap():
    config = LdapConfig(servers=("ldap://ldap.example.org",), user_dn="uid={username},dc=x")
    conn: Any = Ldap3Connector(config)(parse_server("ldap://h"), "uid=a,dc=x", b"pw")
    assert conn.server.tls is None


@pytest.mark.parametrize(
    "options",
    [
        {},  # neither user_dn nor base_dn
        {"user_dn": "uid={username},dc=x", "base_dn": "dc=x"},
        {"user_dn": "uid=alice,dc=x"},  # no placeholder
        {"base_dn": "dc=x", "user_filter": "(uid=alice)"},
        {"base_dn": "dc=x", "bind_dn": "cn=svc,dc=x"},  # no bind password
    ],
)
def test_checker_refuses_unsafe_configs(options):
    with pytest.raises(ValueError):
        LdapPasswordChecker(LdapConfig(servers=("ldap://h",), **options), InlineRunner(), Clock())


def test_checker_refuses_no_servers_and_bad_urls():
    for servers in [(), ("ldapi:///x",)]:
        with pytest.raises(ValueError):
            LdapPasswordChecker(
                LdapConfig(servers=servers, user_dn="uid={username},dc=x"), InlineRunner(), Clock()
            )


# -- the checker over a fake directory ----------------------------------------------------------


class InlineRunner:
    """Runs the blocking call at once on the calling thread (what radmfa.testing will offer)."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.calls += 1
        try:
            return succeed(fn(*args, **kwargs))
        except Exception:
            return fail()


class HeldRunner:
    """Keeps every call pending until the test releases it (a stuck worker thread)."""

    def __init__(self) -> None:
        self.held: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.held.append((d, lambda: fn(*args, **kwargs)))
        return d

    def release(self, index: int = 0) -> None:
        d, work = self.held.pop(index)
        d.callback(work())


@dataclass
class FakeServer:
    """One scripted LDAP server. ``behaviour`` decides how it fails, if at all."""

    url: str
    #: "ok", "refused" (connect fails), "silent" (answers nothing after connect),
    #: "busy" (answers 51 to everything), "no_starttls", "starttls_false"
    behaviour: str = "ok"
    passwords: dict[str, bytes] = field(default_factory=dict)
    #: search filter -> response items (entries, references); default: nothing found
    search_results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    search_code: int = 0
    bind_message: str = ""
    #: make the next N searches on an already-used connection fail as a dead socket would
    break_pooled_connections: bool = False


class FakeDirectory:
    """Hands out FakeConnections and records every operation as (url, op, detail)."""

    def __init__(self, *servers: FakeServer) -> None:
        self.servers = {s.url: s for s in servers}
        self.events: list[tuple[str, str, Any]] = []

    def connect(self, server: LdapServer, user: str | None, password: bytes | str | None) -> Any:
        return FakeConnection(self, self.servers[server.url], user, password)

    def ops(self, op: str, url: str | None = None) -> list[Any]:
        return [d for u, o, d in self.events if o == op and (url is None or u == url)]


class FakeConnection:
    def __init__(self, directory: FakeDirectory, server: FakeServer, user: Any, password: Any):
        self.directory = directory
        self.server = server
        self.user = user
        self.password = password
        self.tls_started = False
        self.opened = False
        self.unbound = False
        self.searches = 0

    def _event(self, op: str, detail: Any = None) -> None:
        self.directory.events.append((self.server.url, op, detail))

    def open(self, read_server_info: bool = True) -> None:
        self._event("open", self.user)
        if self.server.behaviour == "refused":
            raise LDAPSocketOpenError("socket connection error while opening: [Errno 111]")
        self.opened = True

    def start_tls(self, read_server_info: bool = True) -> tuple:
        self._event("start_tls")
        if self.server.behaviour == "no_starttls":
            raise LDAPStartTLSError("startTLS failed - protocolError")
        if self.server.behaviour == "starttls_false":
            return safe_sync(False, 0)
        self.tls_started = True
        return safe_sync(True, 0)

    def bind(self, read_server_info: bool = True, controls: Any = None) -> tuple:
        self._event("bind", (self.user, self.password))
        if self.server.behaviour == "silent":
            raise LDAPSocketReceiveError("error receiving data: timed out")
        if self.server.behaviour == "busy":
            return safe_sync(False, 51)
        if self.server.passwords.get(self.user) == self.password:
            return safe_sync(True, 0)
        return safe_sync(False, 49, self.server.bind_message)

    def search(self, search_base: str, search_filter: str, **kwargs: Any) -> tuple:
        self._event("search", (search_filter, kwargs.get("attributes"), self.user))
        self.searches += 1
        if self.server.break_pooled_connections and self.searches > 1:
            raise LDAPSocketReceiveError("connection reset by peer")
        if self.server.behaviour == "busy":
            return safe_sync(False, 51)
        response = self.server.search_results.get(search_filter, [])
        return safe_sync(bool(response), self.server.search_code, response=response)

    def unbind(self, controls: Any = None) -> tuple:
        self._event("unbind")
        self.unbound = True
        return safe_sync(True, 0)


DN_TEMPLATE = "uid={username},ou=people,dc=x"
ALICE_DN = "uid=alice,ou=people,dc=x"
ALICE_PW = "alice-pw"
SVC_DN = "cn=svc,dc=x"
SVC_PW = "svc-pw"


def server(url: str, behaviour: str = "ok", **options: Any) -> FakeServer:
    passwords = {ALICE_DN: ALICE_PW.encode(), SVC_DN: SVC_PW.encode()}
    passwords.update(options.pop("passwords", {}))
    results = {"(uid=alice)": [entry(ALICE_DN, mail=[b"alice@x"], CN=[b"Alice"])]}
    results.update(options.pop("search_results", {}))
    return FakeServer(url, behaviour, passwords=passwords, search_results=results, **options)


def direct_config(*urls: str, **options: Any) -> LdapConfig:
    return LdapConfig(servers=urls, user_dn=DN_TEMPLATE, **options)


def search_config(*urls: str, **options: Any) -> LdapConfig:
    return LdapConfig(servers=urls, base_dn="dc=x", bind_dn=SVC_DN, bind_password=SVC_PW, **options)


def make(
    config: LdapConfig, *servers: FakeServer, runner: Any = None, **options: Any
) -> tuple[LdapPasswordChecker, FakeDirectory, Clock]:
    directory = FakeDirectory(*servers)
    clock = Clock()
    checker = LdapPasswordChecker(
        config, runner or InlineRunner(), clock, connect=directory.connect, **options
    )
    return checker, directory, clock


def result_of(d: Deferred[DirectoryResult]) -> DirectoryResult:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the check has not finished"
    assert isinstance(results[0], DirectoryResult), results[0]
    return results[0]


A, B, C = "ldap://a:389", "ldap://b:389", "ldap://c:389"


def test_direct_bind_ok_and_wrong_password():
    checker, directory, _ = make(direct_config(A), server(A))
    ok = result_of(checker.check_password("alice", ALICE_PW))
    assert (ok.outcome, ok.dn, ok.server) == (OK, ALICE_DN, A)
    bad = result_of(checker.check_password("alice", "nope"))
    assert (bad.outcome, bad.detail) == (INVALID, "bad_password")
    assert len(directory.ops("bind")) == 2
    assert len(directory.ops("unbind")) == 2  # every user connection is closed


def test_password_goes_to_ldap_as_utf8_bytes_without_saslprep():
    checker, directory, _ = make(direct_config(A), server(A))
    result_of(checker.check_password("alice", "pä\u00adss\u00a0wörd€"))
    ((_dn, password),) = directory.ops("bind")
    assert password == "pä\u00adss\u00a0wörd€".encode()


def test_empty_password_touches_nothing():
    runner = InlineRunner()
    checker, directory, _ = make(direct_config(A), server(A), runner=runner)
    result = result_of(checker.check_password("alice", ""))
    assert (result.outcome, result.detail) == (INVALID, "empty_password")
    assert runner.calls == 0
    assert directory.events == []


def test_bad_user_names_touch_nothing():
    runner = InlineRunner()
    checker, directory, _ = make(search_config(A), server(A), runner=runner)
    for name in ["", " ", "a\x00b", "alice\r\n"]:
        assert result_of(checker.check_password(name, ALICE_PW)).outcome is INVALID
    assert runner.calls == 0
    assert directory.events == []


def test_ad_reason_is_reported_with_invalid_credentials():
    expired = server(A, bind_message=AD_MESSAGE.format("532"))
    checker, _, _ = make(direct_config(A), expired)
    result = result_of(checker.check_password("alice", "whatever"))
    assert (result.outcome, result.detail) == (INVALID, "password_expired")


def test_fails_over_on_refused_connection_and_marks_the_server_down():
    checker, directory, clock = make(
        direct_config(A, B, retry_after=10), server(A, "refused"), server(B)
    )
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert (result.outcome, result.server) == (OK, B)
    assert checker.servers_down() == [A]
    # While A is down, B is asked first and A is not touched.
    directory.events.clear()
    assert result_of(checker.check_password("alice", ALICE_PW)).server == B
    assert directory.ops("open", A) == []
    # After retry_after, A is first again.
    clock.advance(10)
    assert checker.servers_down() == []
    directory.servers[A].behaviour = "ok"
    directory.events.clear()
    assert result_of(checker.check_password("alice", ALICE_PW)).server == A
    assert directory.ops("open", B) == []


def test_a_down_server_is_still_tried_last():
    checker, directory, _ = make(direct_config(A, B), server(A, "refused"), server(B))
    result_of(checker.check_password("alice", ALICE_PW))  # marks A down
    directory.servers[A].behaviour = "ok"
    directory.servers[B].behaviour = "refused"
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert (result.outcome, result.server) == (OK, A)
    assert checker.servers_down() == [B]


def test_invalid_credentials_on_the_first_server_are_final():
    checker, directory, _ = make(direct_config(A, B), server(A), server(B))
    result = result_of(checker.check_password("alice", "wrong"))
    assert (result.outcome, result.server) == (INVALID, A)
    assert directory.ops("open", B) == []
    assert len(directory.ops("bind")) == 1


def test_busy_server_fails_over():
    checker, _, _ = make(direct_config(A, B), server(A, "busy"), server(B))
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert (result.outcome, result.server) == (OK, B)
    assert checker.servers_down() == [A]


def test_unanswered_bind_does_not_fail_over_but_the_next_request_avoids_that_server():
    # The silent server may have checked the password: a second bind elsewhere would be a
    # second attempt against the account, so this request fails closed.
    checker, _, _ = make(direct_config(A, B), server(A, "silent"), server(B))
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert result.outcome is UNAVAILABLE and A in result.detail
    assert checker.servers_down() == [A]
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert (result.outcome, result.server) == (OK, B)


def test_all_servers_down_is_unavailable_with_reasons():
    checker, _, _ = make(direct_config(A, B), server(A, "refused"), server(B, "refused"))
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert result.outcome is UNAVAILABLE
    assert A in result.detail and B in result.detail
    assert sorted(checker.servers_down()) == [A, B]


def test_recovers_when_every_server_was_marked_down():
    checker, directory, _ = make(direct_config(A), server(A, "refused"))
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is UNAVAILABLE
    directory.servers[A].behaviour = "ok"
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert checker.servers_down() == []


@pytest.mark.logs_errors
def test_unexpected_exception_becomes_unavailable():
    def broken(*_args: Any) -> Any:
        raise RuntimeError("bug")

    checker = LdapPasswordChecker(direct_config(A), InlineRunner(), Clock(), connect=broken)
    with capturedLogs() as events:
        result = result_of(checker.check_password("alice", ALICE_PW))
    assert result.outcome is UNAVAILABLE
    assert "bug" in result.detail
    # ...and it is logged as an error with its traceback, so it does not go unnoticed.
    (failure,) = [e["log_failure"] for e in events if "log_failure" in e]
    assert failure.check(RuntimeError)


def test_search_then_bind_binds_as_the_returned_dn_with_attributes():
    checker, directory, _ = make(search_config(A), server(A), attributes=["mail", "cn", "phone"])
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert (result.outcome, result.dn) == (OK, ALICE_DN)
    assert result.attributes == {"mail": ["alice@x"], "cn": ["Alice"]}
    ((flt, attributes, as_user),) = directory.ops("search")
    assert (flt, attributes, as_user) == (
        "(uid=alice)",
        ["mail", "cn", "phone", *ACCOUNT_STATE_ATTRIBUTES, "uid"],  # uid: the naming check
        SVC_DN,
    )
    assert [b[0] for b in directory.ops("bind")] == [SVC_DN, ALICE_DN]


def test_search_asks_for_the_account_state_attributes_by_default():
    checker, directory, _ = make(search_config(A), server(A))
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert result.attributes == {}  # they are for the check, not the caller
    ((_, attributes, _),) = directory.ops("search")
    assert attributes == [*ACCOUNT_STATE_ATTRIBUTES, "uid"]  # uid: the entry's own name


def test_search_asks_only_for_the_naming_attribute_without_account_state():
    checker, directory, _ = make(search_config(A, account_state=False), server(A))
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert result.attributes == {}
    ((_, attributes, _),) = directory.ops("search")
    assert attributes == ["uid"]


NOW = 1_800_000_000.0
FILETIME_NOW = int((NOW + 11644473600) * 10_000_000)


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"userAccountControl": [b"514"]}, "account_disabled"),  # 512 | ACCOUNTDISABLE
        ({"userAccountControl": [b"528"]}, "account_locked"),  # 512 | LOCKOUT
        ({"msDS-User-Account-Control-Computed": [b"8388608"]}, "password_expired"),
        ({"accountExpires": [str(FILETIME_NOW - 1).encode()]}, "account_expired"),
        ({"pwdAccountLockedTime": [b"000001010000Z"]}, "account_locked"),
        ({"pwdReset": [b"TRUE"]}, "password_must_change"),
    ],
)
def test_unusable_accounts_are_refused_without_a_user_bind(attributes, reason):
    found = {"(uid=alice)": [entry(ALICE_DN, **attributes)]}
    checker, directory, clock = make(search_config(A), server(A, search_results=found))
    clock.advance(NOW)
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert (result.outcome, result.detail) == (INVALID, reason)
    assert [b[0] for b in directory.ops("bind")] == [SVC_DN]  # the service account only


@pytest.mark.parametrize(
    "attributes",
    [
        {"userAccountControl": [b"512"]},
        {"accountExpires": [b"0"]},
        {"accountExpires": [b"9223372036854775807"]},
        {"accountExpires": [str(FILETIME_NOW + 10**9).encode()]},
        {"pwdReset": [b"FALSE"]},
        {"pwdAccountLockedTime": [b"20300101000000Z"]},  # timed: the bind decides
    ],
)
def test_usable_accounts_bind(attributes):
    found = {"(uid=alice)": [entry(ALICE_DN, **attributes)]}
    checker, _directory, clock = make(search_config(A), server(A, search_results=found))
    clock.advance(NOW)
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK


def test_a_refused_bind_of_a_ppolicy_locked_account_says_locked():
    found = {"(uid=alice)": [entry(ALICE_DN, pwdAccountLockedTime=[b"20300101000000Z"])]}
    checker, _, _ = make(search_config(A), server(A, search_results=found))
    result = result_of(checker.check_password("alice", "whatever"))
    assert (result.outcome, result.detail) == (INVALID, "account_locked")


def test_account_state_is_ignored_when_switched_off():
    found = {"(uid=alice)": [entry(ALICE_DN, userAccountControl=[b"514"])]}
    config = search_config(A, account_state=False)
    checker, _, _ = make(config, server(A, search_results=found))
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK


# -- group lookups ----------------------------------------------------------------------------

STAFF = "cn=staff,ou=groups,dc=x"
VPN = "cn=vpn,ou=groups,dc=x"
ALL = "cn=all,ou=groups,dc=x"


def groups_of(d: Deferred[GroupResult]) -> GroupResult:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results and isinstance(results[0], GroupResult), results
    return results[0]


def member_filter(*dns: str) -> str:
    terms = "".join(f"(member={dn})" for dn in dns)
    return f"(&{DEFAULT_GROUP_FILTER}(|{terms}))"


def test_member_groups_are_expanded_level_by_level():
    found = {
        member_filter(ALICE_DN): [entry(STAFF)],
        member_filter(STAFF): [entry(VPN)],
        member_filter(VPN): [entry(ALL), entry(STAFF)],  # a loop back to staff
        member_filter(ALL): [],
    }
    checker, directory, _ = make(
        search_config(A), server(A, search_results=found), groups=LdapGroupsConfig()
    )
    result = groups_of(checker.user_groups("alice"))
    assert (result.outcome, result.groups) == (OK, (STAFF, VPN, ALL))
    assert result.entry is not None and result.entry.dn == ALICE_DN
    searches = [flt for flt, _attrs, _user in directory.ops("search")]
    assert searches == [
        "(uid=alice)",
        member_filter(ALICE_DN),
        member_filter(STAFF),
        member_filter(VPN),
        member_filter(ALL),
    ]
    assert [b[0] for b in directory.ops("bind")] == [SVC_DN]  # never as the user


def test_nesting_stops_at_max_depth_or_when_off():
    found = {member_filter(ALICE_DN): [entry(STAFF)], member_filter(STAFF): [entry(VPN)]}
    for settings, expected in (
        (LdapGroupsConfig(max_depth=1), (STAFF,)),
        (LdapGroupsConfig(nested=False), (STAFF,)),
        (LdapGroupsConfig(max_depth=2), (STAFF, VPN)),
    ):
        checker, _, _ = make(search_config(A), server(A, search_results=found), groups=settings)
        assert groups_of(checker.user_groups("alice")).groups == expected


def test_memberof_groups_come_with_the_user_search():
    found = {
        "(uid=alice)": [entry(ALICE_DN, memberOf=[STAFF.encode()])],
        member_filter(STAFF): [entry(VPN)],
        member_filter(VPN): [],
    }
    settings = LdapGroupsConfig(membership="memberof")
    checker, directory, _ = make(search_config(A), server(A, search_results=found), groups=settings)
    result = groups_of(checker.user_groups("alice"))
    assert result.groups == (STAFF, VPN)
    user_search = directory.ops("search")[0]
    assert "memberOf" in user_search[1]
    # The entry goes to the password check: one user bind, no second user search.
    assert result.entry is not None
    checked = result_of(checker.check_password("alice", ALICE_PW, entry=result.entry))
    assert checked.outcome is OK
    assert [flt for flt, _a, _u in directory.ops("search")].count("(uid=alice)") == 1
    assert [b[0] for b in directory.ops("bind")] == [SVC_DN, ALICE_DN]


def test_ad_in_chain_is_one_search():
    chain = f"(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={ALICE_DN}))"
    found = {chain: [entry(STAFF), entry(ALL)]}
    settings = LdapGroupsConfig(membership="ad_chain", filter="(objectClass=group)")
    checker, directory, _ = make(search_config(A), server(A, search_results=found), groups=settings)
    assert groups_of(checker.user_groups("alice")).groups == (STAFF, ALL)
    assert [flt for flt, _a, _u in directory.ops("search")] == ["(uid=alice)", chain]


def test_group_lookup_of_an_unknown_user_and_an_unavailable_server():
    checker, _, _ = make(search_config(A), server(A), groups=LdapGroupsConfig())
    assert groups_of(checker.user_groups("nobody")).outcome is NO_SUCH_USER
    checker, _, _ = make(search_config(A), server(A, "refused"), groups=LdapGroupsConfig())
    result = groups_of(checker.user_groups("alice"))
    assert result.outcome is UNAVAILABLE and A in result.detail


def test_group_dns_are_escaped_in_filters():
    walk = GroupWalk(LdapGroupsConfig(), "uid=a*(b),dc=x", ())
    assert walk.filters() == [rf"(&{DEFAULT_GROUP_FILTER}(|(member=uid=a\2a\28b\29,dc=x)))"]


def test_the_default_group_filter_admits_openldap_and_active_directory_groups():
    """A nested AD group (objectClass=group) must be found without a filter of one's own."""
    for membership in ("member", "memberof"):
        walk = GroupWalk(LdapGroupsConfig(membership=membership), ALICE_DN, (STAFF,))
        (search,) = walk.filters()
        assert "(objectClass=groupOfNames)" in search and "(objectClass=group)" in search


def test_the_probe_for_named_groups_uses_the_group_filter_and_escapes_names():
    settings = LdapGroupsConfig(filter="(objectClass=group)")
    assert group_probe_filter(settings, ["staff", "a*(b)", r"ou=x\,y,dc=x", "9x=1,dc=x"]) == (
        r"(&(objectClass=group)(|(cn=staff)(cn=a\2a\28b\29)(ou=x,y)(cn=9x=1,dc=x)))"
    )


def test_group_lookups_need_search_then_bind():
    with pytest.raises(ValueError, match="search-then-bind"):
        LdapPasswordChecker(direct_config(A), InlineRunner(), Clock(), groups=LdapGroupsConfig())


def test_search_escapes_the_filter():
    checker, directory, _ = make(search_config(A), server(A))
    result = result_of(checker.check_password("a)(uid=*", ALICE_PW))
    assert result.outcome is NO_SUCH_USER
    ((flt, _, _),) = directory.ops("search")
    assert flt == r"(uid=a\29\28uid=\2a)"


def test_no_entry_is_no_such_user_and_nobody_binds_as_the_user():
    checker, directory, _ = make(search_config(A), server(A))
    assert result_of(checker.check_password("bob", "pw")).outcome is NO_SUCH_USER
    assert [b[0] for b in directory.ops("bind")] == [SVC_DN]


@pytest.mark.parametrize(
    ("response", "code"),
    [
        ([entry("uid=twin,ou=1,dc=x"), entry("uid=twin,ou=2,dc=x")], 0),
        ([entry("uid=twin,ou=1,dc=x"), entry("uid=twin,ou=2,dc=x")], 4),
        ([entry("uid=twin,ou=1,dc=x")], 4),  # the server's own size limit cut it short
    ],
)
def test_more_than_one_entry_is_ambiguous_and_nobody_binds(response, code):
    twin = server(A, search_results={"(uid=twin)": response}, search_code=code)
    checker, directory, _ = make(search_config(A), twin)
    assert result_of(checker.check_password("twin", "pw")).outcome is AMBIGUOUS
    assert [b[0] for b in directory.ops("bind")] == [SVC_DN]


def test_referrals_are_ignored_and_never_followed():
    response = [reference("ldap://evil.example/"), entry(ALICE_DN), reference("ldap://x/")]
    checker, directory, _ = make(
        search_config(A), server(A, search_results={"(uid=alice)": response})
    )
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert set(directory.servers) == {A}  # FakeDirectory would KeyError on any other host


def test_search_error_is_final_and_unavailable():
    checker, directory, _ = make(search_config(A, B), server(A, search_code=32), server(B))
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert (result.outcome, result.server) == (UNAVAILABLE, A)
    assert directory.ops("open", B) == []


def test_rejected_service_account_is_unavailable_and_final():
    config = LdapConfig(servers=(A, B), base_dn="dc=x", bind_dn=SVC_DN, bind_password="wrong")
    checker, directory, _ = make(config, server(A), server(B))
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert result.outcome is UNAVAILABLE
    assert "service account" in result.detail
    assert directory.ops("open", B) == []
    assert directory.ops("search") == []


def test_anonymous_search_when_no_service_account():
    config = LdapConfig(servers=(A,), base_dn="dc=x")
    checker, directory, _ = make(config, server(A))
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert [b[0] for b in directory.ops("bind")] == [ALICE_DN]  # no service bind at all
    assert directory.ops("search")[0][2] is None


def test_service_connection_is_reused_and_user_binds_are_not():
    checker, directory, _ = make(search_config(A), server(A))
    for _ in range(3):
        assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    opened_as = directory.ops("open")
    assert opened_as.count(SVC_DN) == 1
    assert opened_as.count(ALICE_DN) == 3
    # Searches always run on the service connection, never on a user's.
    assert {as_user for _, _, as_user in directory.ops("search")} == {SVC_DN}


def test_dead_pooled_service_connection_is_replaced_without_marking_the_server_down():
    fake = server(A, break_pooled_connections=True)
    checker, directory, _ = make(search_config(A), fake)
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert directory.ops("open").count(SVC_DN) == 2
    assert checker.servers_down() == []


def test_starttls_comes_before_every_bind():
    checker, directory, _ = make(direct_config(A, start_tls=True), server(A))
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    ops = [op for _, op, _ in directory.events]
    assert ops == ["open", "start_tls", "bind", "unbind"]


@pytest.mark.parametrize("behaviour", ["no_starttls", "starttls_false"])
def test_starttls_failure_never_binds_in_clear(behaviour):
    checker, directory, _ = make(search_config(A, start_tls=True), server(A, behaviour))
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert result.outcome is UNAVAILABLE
    assert "StartTLS" in result.detail
    assert directory.ops("bind") == []
    assert directory.ops("search") == []


def test_starttls_is_not_attempted_on_ldaps():
    url = "ldaps://a:636"
    checker, directory, _ = make(direct_config(url, start_tls=True), server(url))
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert directory.ops("start_tls") == []


def test_deadline_answers_unavailable_and_the_late_result_still_updates_health():
    runner = HeldRunner()
    checker, _, clock = make(
        direct_config(A, B, timeout=2), server(A, "refused"), server(B), runner=runner
    )
    d = checker.check_password("alice", ALICE_PW)
    assert not d.called
    clock.advance(checker.deadline)  # 2 * 2 + 1 = 5 s
    result = result_of(d)
    assert result.outcome is UNAVAILABLE
    assert "5s" in result.detail
    runner.release()  # the thread finishes later; nobody is waiting, but A is now known down
    assert checker.servers_down() == [A]


def test_pool_bound_queue_and_tokens_released_only_when_the_thread_ends():
    runner = HeldRunner()
    config = direct_config(A, timeout=1, pool_size=1)
    checker, _, clock = make(config, server(A), runner=runner, max_pending=1)
    first = checker.check_password("alice", ALICE_PW)
    second = checker.check_password("alice", ALICE_PW)  # waits for the single token
    third = checker.check_password("alice", ALICE_PW)  # queue full
    assert len(runner.held) == 1
    assert result_of(third).detail == "LDAP queue full"
    clock.advance(checker.deadline)
    assert result_of(first).outcome is UNAVAILABLE
    assert result_of(second).outcome is UNAVAILABLE  # gave up its place in the queue
    assert len(runner.held) == 1  # the stuck thread still holds the token
    fourth = checker.check_password("alice", ALICE_PW)
    assert len(runner.held) == 1
    runner.release()  # the stuck call ends: its token goes to the fourth check
    assert len(runner.held) == 1
    runner.release()
    assert result_of(fourth).outcome is OK


def test_close_unbinds_idle_service_connections_and_refuses_new_checks():
    checker, directory, _ = make(search_config(A), server(A))
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    unbinds = len(directory.ops("unbind"))
    checker.close()
    assert len(directory.ops("unbind")) == unbinds + 1
    result = result_of(checker.check_password("alice", ALICE_PW))
    assert result.outcome is UNAVAILABLE
