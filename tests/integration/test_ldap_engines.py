"""Every LDAP engine, one behaviour: every test runs against the libldap engine and the ldap3
engine (threads), with a real slapd, closed ports, a blackhole and scripted fake servers on
loopback.

The few tests at the end named ``test_pooled_*`` check what only the libldap engine has (its
pooled check, :mod:`radmfa.directory.pooled`): persistent connections, pipelining, and
close() ending checks in flight.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import ldap3.core.tls
import pytest
import pytest_twisted
from ldap3.protocol import rfc4511 as asn
from ldap3.utils import tls_backport
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.ber import encoder as ber_encoder
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from radmfa.config import LdapConfig, LdapGroupsConfig
from radmfa.directory.base import DirectoryOutcome, DirectoryResult, PasswordChecker
from radmfa.directory.ldap import LdapPasswordChecker
from radmfa.directory.ldap_libldap import LibldapPasswordChecker
from radmfa.threads import ThreadPoolRunner
from tests.support.certs import make_ca, make_server_cert
from tests.support.daemon import deadline_poll
from tests.support.netfaults import StartTlsInjector
from tests.support.ports import free_port
from tests.support.processes import frozen
from tests.support.slapd import (
    ADMINISTRATOR,
    ALICE,
    BOB,
    DAVE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SMITH_JR,
    SUFFIX,
    TWIN_PEOPLE,
    TWIN_STAFF,
    URSULA,
    USER_DN_TEMPLATE,
    USER_FILTER,
    USERS_BY_UID,
    Slapd,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OK = DirectoryOutcome.OK
INVALID = DirectoryOutcome.INVALID_CREDENTIALS
NO_SUCH_USER = DirectoryOutcome.NO_SUCH_USER
AMBIGUOUS = DirectoryOutcome.AMBIGUOUS_USER
UNAVAILABLE = DirectoryOutcome.UNAVAILABLE

ALL_PASSWORDS = sorted({user.password for user in USERS_BY_UID.values()})
ENGINES = ["libldap", "ldap3"]


def direct(*servers: str, **options: Any) -> LdapConfig:
    options.setdefault("timeout", 2.0)
    return LdapConfig(servers=servers, user_dn=USER_DN_TEMPLATE, **options)


def search(*servers: str, **options: Any) -> LdapConfig:
    options.setdefault("timeout", 2.0)
    return LdapConfig(
        servers=servers,
        base_dn=SUFFIX,
        user_filter=USER_FILTER,
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
        **options,
    )


BOTH_MODES = pytest.mark.parametrize("mode", [direct, search], ids=["direct", "search"])


def closed_url() -> str:
    return f"ldap://127.0.0.1:{free_port()}"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_checker(engine: str, ldap_runner: ThreadPoolRunner) -> Iterator[Callable[..., Any]]:
    """``make_checker(config, **options)``: a checker of the engine under test, closed after."""
    made: list[Any] = []

    def make(config: LdapConfig, **options: Any) -> Any:
        checker: Any
        if engine == "libldap":
            checker = LibldapPasswordChecker(config, reactor, ldap_runner, **options)
        else:
            checker = LdapPasswordChecker(config, ldap_runner, reactor, **options)
        made.append(checker)
        return checker

    yield make
    for checker in made:
        checker.close()


async def check(checker: PasswordChecker, username: str, password: str) -> DirectoryResult:
    return await checker.check_password(username, password)


async def pause(seconds: float) -> None:
    """Let the reactor run (unlike time.sleep, which would freeze the libldap engine too)."""
    await deferLater(reactor, seconds, lambda: None)


def same_dn(a: str | None, b: str) -> bool:
    r"""Equal after undoing hex escapes (slapd returns ``smith\2C jr`` for ``smith\, jr``)."""

    def norm(dn: str) -> str:
        return re.sub(r"\\([0-9a-fA-F]{2})", lambda m: "\\" + chr(int(m[1], 16)), dn).lower()

    return a is not None and norm(a) == norm(b)


def binds_as(server: Slapd, dn: str) -> int:
    return sum(1 for bound in server.binds() if bound.lower() == dn.lower())


async def settled_binds(server: Slapd, dn: str, expected: int) -> int:
    """Binds as ``dn`` once ``expected`` are logged (or after 2 s), plus a 0.1 s grace period in
    which any extra bind would show up too."""
    deadline = time.monotonic() + 2.0
    while binds_as(server, dn) < expected and time.monotonic() < deadline:
        await pause(0.02)
    await pause(0.1)
    return binds_as(server, dn)


# -- scripted fake servers ----------------------------------------------------------------------


def _frame(buffer: bytes) -> int | None:
    """Length of the first complete BER element in ``buffer``, or None (tests only)."""
    if len(buffer) < 2:
        return None
    n = buffer[1]
    header = 2
    if n & 0x80:
        count = n & 0x7F
        if len(buffer) < 2 + count:
            return None
        n = int.from_bytes(buffer[2 : 2 + count], "big")
        header += count
    return header + n if len(buffer) >= header + n else None


def pyasn1_message(message_id: int, name: str, op: Any) -> bytes:
    message = asn.LDAPMessage()
    message["messageID"] = asn.MessageID(message_id)
    protocol_op = asn.ProtocolOp()
    protocol_op.setComponentByName(name, op)
    message["protocolOp"] = protocol_op
    return ber_encoder.encode(message)


def result(name: str, message_id: int, code: int, diagnostic: str = "", **extra: Any) -> bytes:
    cls = {
        "bindResponse": asn.BindResponse,
        "searchResDone": asn.SearchResultDone,
        "extendedResp": asn.ExtendedResponse,
    }[name]
    op = cls()
    op["resultCode"] = asn.ResultCode(code)
    op["matchedDN"] = asn.LDAPDN("")
    op["diagnosticMessage"] = asn.LDAPString(diagnostic)
    for key, value in extra.items():
        op[key] = value
    return pyasn1_message(message_id, name, op)


def entry(message_id: int, dn: str) -> bytes:
    op = asn.SearchResultEntry()
    op["object"] = asn.LDAPDN(dn)
    op["attributes"] = asn.PartialAttributeList()
    return pyasn1_message(message_id, "searchResEntry", op)


def reference(message_id: int, *uris: str) -> bytes:
    op = asn.SearchResultReference()
    for i, uri in enumerate(uris):
        op[i] = asn.URI(uri)
    return pyasn1_message(message_id, "searchResRef", op)


#: ``handler(kind, message_id, op) -> bytes | None | "close"``: the answer to one request.
Handler = Callable[[str, int, Any], Any]


class FakeLdap:
    """An LDAP server on loopback that answers from a script (pyasn1 both ways).

    Records every request as ``(kind, detail)``: bind DN for binds, the operation name otherwise.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        fake = self

        class Server(Protocol):
            buffer = b""

            def connectionMade(self) -> None:
                fake.connections += 1

            def dataReceived(self, data: bytes) -> None:
                self.buffer += data
                while (size := _frame(self.buffer)) is not None:
                    raw, self.buffer = self.buffer[:size], self.buffer[size:]
                    message, _ = ber_decoder.decode(raw, asn1Spec=asn.LDAPMessage())
                    op = message["protocolOp"]
                    kind = op.getName()
                    detail = str(op[kind]["name"]) if kind == "bindRequest" else kind
                    fake.requests.append((kind, detail))
                    answer = fake.handler(kind, int(message["messageID"]), op[kind])
                    if answer == "close":
                        self.transport.loseConnection()
                        return
                    if answer:
                        self.transport.write(answer)

        self.port = reactor.listenTCP(0, Factory.forProtocol(Server), interface="127.0.0.1")
        self.url = f"ldap://127.0.0.1:{self.port.getHost().port}"

    def binds(self) -> list[str]:
        return [detail for kind, detail in self.requests if kind == "bindRequest"]


@pytest.fixture
def fake_ldap() -> Iterator[Callable[[Handler], FakeLdap]]:
    made: list[FakeLdap] = []

    def make(handler: Handler) -> FakeLdap:
        server = FakeLdap(handler)
        made.append(server)
        return server

    yield make
    for server in made:
        server.port.stopListening()


def accept_everything(kind: str, message_id: int, op: Any) -> Any:
    """Like Active Directory for an empty password: a bind always succeeds (L-01)."""
    if kind == "bindRequest":
        return result("bindResponse", message_id, 0)
    return None


# -- direct bind --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_direct_bind_good_bad_and_unknown(slapd, make_checker):
    checker = make_checker(direct(slapd.url))
    good = await check(checker, ALICE.uid, ALICE.password)
    assert (good.outcome, good.dn, good.server) == (OK, ALICE.dn, slapd.url)
    bad = await check(checker, ALICE.uid, BOB.password)
    assert (bad.outcome, bad.detail) == (INVALID, "bad_password")
    assert (await check(checker, "nobody", ALICE.password)).outcome is INVALID


@pytest_twisted.ensureDeferred
async def test_direct_bind_escapes_the_user_name_into_the_dn(slapd, make_checker):
    checker = make_checker(direct(slapd.url))
    jr = await check(checker, SMITH_JR.uid, SMITH_JR.password)  # uid=smith\, jr,...
    dave = await check(checker, DAVE.uid, DAVE.password)
    assert (jr.outcome, dave.outcome) == (OK, OK)


# -- search then bind ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_search_then_bind_good_bad_and_unknown(slapd, make_checker):
    checker = make_checker(search(slapd.url))
    good = await check(checker, BOB.uid, BOB.password)
    assert (good.outcome, good.dn, good.server) == (OK, BOB.dn, slapd.url)
    bad = await check(checker, BOB.uid, ALICE.password)
    assert (bad.outcome, bad.dn, bad.detail) == (INVALID, BOB.dn, "bad_password")
    unknown = await check(checker, "nobody", ALICE.password)
    assert (unknown.outcome, unknown.detail) == (NO_SUCH_USER, "no_such_user")


@pytest_twisted.ensureDeferred
async def test_duplicate_uid_is_ambiguous_and_binds_neither(slapd, make_checker):
    checker = make_checker(search(slapd.url))
    before = binds_as(slapd, TWIN_PEOPLE.dn) + binds_as(slapd, TWIN_STAFF.dn)
    for twin in (TWIN_PEOPLE, TWIN_STAFF):
        result = await check(checker, twin.uid, twin.password)
        assert result.outcome is AMBIGUOUS
        assert result.detail == "2 entries match"
    await pause(0.1)
    assert binds_as(slapd, TWIN_PEOPLE.dn) + binds_as(slapd, TWIN_STAFF.dn) == before


@pytest_twisted.ensureDeferred
async def test_search_returns_requested_attributes(slapd, make_checker):
    checker = make_checker(search(slapd.url), attributes=("mail", "cn", "description"))
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is OK
    assert result.attributes == {"mail": [ALICE.mail], "cn": [ALICE.uid]}


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_exactly_one_user_bind_per_check(fresh_slapd, make_checker, engine, mode):
    """Each check binds as the user once; the service account binds once per pooled
    connection, not once per check."""
    checker = make_checker(mode(fresh_slapd.url))
    for password in (ALICE.password, "wrong", ALICE.password):
        await check(checker, ALICE.uid, password)
    assert await settled_binds(fresh_slapd, ALICE.dn, 3) == 3
    burst = [checker.check_password(ALICE.uid, p) for p in [ALICE.password, "x"] * 25]
    outcomes = [r.outcome for r in await gatherResults(burst)]
    assert outcomes == [OK, INVALID] * 25
    assert await settled_binds(fresh_slapd, ALICE.dn, 53) == 53
    service_binds = binds_as(fresh_slapd, SERVICE_DN)
    if mode is direct:
        assert service_binds == 0
    else:
        # libldap: two search connections; ldap3: one per worker thread at most.
        assert 1 <= service_binds <= (2 if engine == "libldap" else 16)


# -- passwords and user names -------------------------------------------------------------------


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_utf8_password(slapd, make_checker, mode):
    checker = make_checker(mode(slapd.url))
    assert (await check(checker, URSULA.uid, URSULA.password)).outcome is OK
    # The same text decomposed (NFD) is other bytes: no SASLprep/normalisation is applied.
    decomposed = "pa\u0308sswo\u0308rd€"
    assert (await check(checker, URSULA.uid, decomposed)).outcome is INVALID
    assert (await check(checker, URSULA.uid, "passwörd€")).outcome is INVALID


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_empty_password_never_reaches_ldap(fake_ldap, slapd, make_checker, mode):
    """Even a server that would accept it (AD does, L-01) sees no connection at all."""
    fake = fake_ldap(accept_everything)
    before = len(slapd.binds())
    for servers in ((fake.url,), (slapd.url,)):
        checker = make_checker(mode(*servers))
        result = await check(checker, ALICE.uid, "")
        assert (result.outcome, result.detail) == (INVALID, "empty_password")
    await pause(0.1)
    assert fake.connections == 0
    assert len(slapd.binds()) == before


@pytest.mark.parametrize("name", ["*", "adm*", "a)(uid=*", "x\\", "*)(|(uid=*", "alice)(uid=*"])
@pytest_twisted.ensureDeferred
async def test_filter_injection_finds_nobody(slapd, make_checker, name):
    checker = make_checker(search(slapd.url))
    for password in ALL_PASSWORDS:
        result = await check(checker, name, password)
        assert result.outcome is NO_SUCH_USER, (name, password, result)


@pytest_twisted.ensureDeferred
async def test_filter_characters_in_direct_bind_are_rejected(slapd, make_checker):
    checker = make_checker(direct(slapd.url))
    for name in ("*", "adm*", "a)(uid=*", "x\\"):
        for password in (ALICE.password, ADMINISTRATOR.password):
            assert (await check(checker, name, password)).outcome is INVALID


DN_TRICKS = [
    ",",
    "+",
    '"',
    "\\",
    "<",
    ">",
    ";",
    "=",
    "alice,ou=people",
    "bob,ou=staff",
    "alice+uid=bob",
    "uid=alice",
    f"alice,{SUFFIX}",
    '"alice"',
    "alice\\",
    "alice;bob",
    "#alice",
    "<alice>",
    "alice\\,ou=people",
    " alice",
    "alice ",
    "  bob",
]


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_dn_special_user_names_never_bind_as_someone_else(slapd, make_checker, mode):
    """Only a name the directory itself equates with a user (``" alice"`` is uid alice under
    caseIgnoreIA5Match's space rules) may get in, and only with that user's password."""
    checker = make_checker(mode(slapd.url))
    cases = [(name, user) for name in DN_TRICKS for user in USERS_BY_UID.values()]
    results = await gatherResults([checker.check_password(n, u.password) for n, u in cases])
    for (name, user), result in zip(cases, results, strict=True):
        if result.outcome is OK:
            assert name.strip() == user.uid, (name, user.uid, result)
        else:
            assert result.outcome in (INVALID, NO_SUCH_USER), (name, user.uid, result)


@pytest_twisted.ensureDeferred
async def test_control_characters_in_user_name_are_refused_without_ldap(blackhole, make_checker):
    checker = make_checker(search(blackhole.url))
    for name in ("a\x00b", "alice\n", "al\rice", "\x7f", "a\u2028b"):
        assert (await check(checker, name, ALICE.password)).outcome is INVALID
    assert blackhole.connections == 0


# -- failover and recovery ----------------------------------------------------------------------


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_fails_over_from_a_closed_port(slapd, make_checker, mode):
    dead = closed_url()
    checker = make_checker(mode(dead, slapd.url))
    result = await check(checker, ALICE.uid, ALICE.password)
    assert (result.outcome, result.server) == (OK, slapd.url)
    assert checker.servers_down() == [dead]
    # While it is marked down the dead server is tried last, and the answer does not change.
    assert (await check(checker, ALICE.uid, ALICE.password)).outcome is OK
    assert (await check(checker, ALICE.uid, "wrong")).outcome is INVALID


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_all_servers_down_is_unavailable_quickly(make_checker, mode):
    first, second = closed_url(), closed_url()
    checker = make_checker(mode(first, second))
    started = time.monotonic()
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is UNAVAILABLE
    assert first in result.detail and second in result.detail
    assert time.monotonic() - started < 2.0


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_recovers_after_slapd_crash_and_restart(fresh_slapd, make_checker, mode):
    checker = make_checker(mode(fresh_slapd.url))  # retry_after keeps its 10 s default
    assert (await check(checker, ALICE.uid, ALICE.password)).outcome is OK
    fresh_slapd.kill()
    assert (await check(checker, ALICE.uid, ALICE.password)).outcome is UNAVAILABLE
    fresh_slapd.start()
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is OK, result
    assert (await check(checker, ALICE.uid, "wrong")).outcome is INVALID


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_pooled_connections_survive_a_restart(fresh_slapd, make_checker, mode):
    """Every pooled connection is dead after a restart (done while the reactor is blocked, so
    nobody has read the EOFs yet); none of that reaches the user."""
    checker = make_checker(mode(fresh_slapd.url))
    warm = [checker.check_password(u.uid, u.password) for u in USERS_BY_UID.values()] * 3
    assert {r.outcome for r in await gatherResults(warm)} == {OK}
    fresh_slapd.restart()
    again = [checker.check_password(u.uid, u.password) for u in USERS_BY_UID.values()] * 3
    assert {r.outcome for r in await gatherResults(again)} == {OK}


@pytest_twisted.ensureDeferred
async def test_blackhole_server_gives_unavailable_within_the_deadline(blackhole, make_checker):
    checkers = [make_checker(mode(blackhole.url, timeout=1.0)) for mode in (direct, search)]
    started = time.monotonic()
    results = await gatherResults([c.check_password(ALICE.uid, ALICE.password) for c in checkers])
    elapsed = time.monotonic() - started
    assert [r.outcome for r in results] == [UNAVAILABLE, UNAVAILABLE]
    assert blackhole.connections >= 2
    assert elapsed < checkers[0].deadline + 0.5


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_frozen_server_times_out_then_recovers(fresh_slapd, make_checker, mode):
    """slapd stopped (SIGSTOP) with warm pooled connections: requests are unanswered, the
    checks end UNAVAILABLE within the deadline, and after SIGCONT checks work again. Every
    slapd thread has stopped before the first request leaves (``frozen``): a thread still
    running would answer it, by chance, on a loaded machine."""
    checker = make_checker(mode(fresh_slapd.url, timeout=1.0))
    assert (await check(checker, ALICE.uid, ALICE.password)).outcome is OK
    assert fresh_slapd.pid is not None
    with frozen(fresh_slapd.pid):
        started = time.monotonic()
        answers = await gatherResults([checker.check_password(ALICE.uid, ALICE.password)] * 3)
        assert {r.outcome for r in answers} == {UNAVAILABLE}
        assert time.monotonic() - started < checker.deadline + 0.5
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is OK, result
    assert (await check(checker, ALICE.uid, "wrong")).outcome is INVALID


@pytest_twisted.ensureDeferred
async def test_fails_over_from_a_blackhole_after_the_search_timeout(blackhole, slapd, make_checker):
    checker = make_checker(search(blackhole.url, slapd.url, timeout=1.0))
    result = await check(checker, ALICE.uid, ALICE.password)
    assert (result.outcome, result.server) == (OK, slapd.url)


@pytest_twisted.ensureDeferred
async def test_no_second_server_after_an_unanswered_bind(blackhole, slapd, make_checker):
    """The blackhole may have checked the password: trying slapd too would be two attempts."""
    checker = make_checker(direct(blackhole.url, slapd.url, timeout=1.0))
    before = binds_as(slapd, ALICE.dn)
    started = time.monotonic()
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is UNAVAILABLE
    assert "bind got no answer" in result.detail
    assert time.monotonic() - started < checker.deadline + 0.5
    await pause(0.1)
    assert binds_as(slapd, ALICE.dn) == before


@pytest_twisted.ensureDeferred
async def test_connection_dropped_after_the_bind_is_one_attempt_only(
    fake_ldap, slapd, make_checker
):
    """L-06: the server hangs up after reading the bind: one bind, no resend, no failover."""
    fake = fake_ldap(lambda kind, mid, op: "close" if kind == "bindRequest" else None)
    checker = make_checker(direct(fake.url, slapd.url))
    before = binds_as(slapd, ALICE.dn)
    started = time.monotonic()
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is UNAVAILABLE
    assert time.monotonic() - started < 1.0
    await pause(0.1)
    assert fake.binds() == [ALICE.dn]
    assert binds_as(slapd, ALICE.dn) == before


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_invalid_credentials_do_not_fail_over(slapd, blackhole, make_checker, mode):
    checker = make_checker(mode(slapd.url, blackhole.url))
    before = binds_as(slapd, ALICE.dn)
    result = await check(checker, ALICE.uid, "not-alices-password")
    assert (result.outcome, result.server) == (INVALID, slapd.url)
    assert await settled_binds(slapd, ALICE.dn, before + 1) == before + 1
    assert blackhole.connections == 0


@pytest_twisted.ensureDeferred
async def test_busy_server_fails_over_and_ad_reasons_are_final(
    fake_ldap, slapd, blackhole, make_checker
):
    """busy (51) is not a judgement: next server. 49 with AD's ``data 532``: final."""
    busy = fake_ldap(lambda kind, mid, op: result("bindResponse", mid, 51, "busy") or None)
    checker = make_checker(direct(busy.url, slapd.url))
    answer = await check(checker, ALICE.uid, ALICE.password)
    assert (answer.outcome, answer.server) == (OK, slapd.url)
    assert busy.binds() == [ALICE.dn]

    ad_message = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 532"
    expired = fake_ldap(lambda kind, mid, op: result("bindResponse", mid, 49, ad_message))
    checker = make_checker(direct(expired.url, blackhole.url))
    answer = await check(checker, ALICE.uid, ALICE.password)
    assert (answer.outcome, answer.detail) == (INVALID, "password_expired")
    assert blackhole.connections == 0


@pytest_twisted.ensureDeferred
async def test_search_references_are_ignored_and_never_followed(fake_ldap, blackhole, make_checker):
    """L-09: one entry among continuation references is one user; nobody contacts the host."""
    user_dn = "uid=alice,ou=people,dc=example,dc=org"

    def directory(kind: str, mid: int, op: Any) -> Any:
        if kind == "bindRequest":
            ok = str(op["name"]) == SERVICE_DN or bytes(op["authentication"]["simple"]) == b"pw"
            return result("bindResponse", mid, 0 if ok else 49)
        if kind == "searchRequest":
            refs = b"".join(reference(mid, f"{blackhole.url}/dc=example,dc=org") for _ in range(3))
            return refs + entry(mid, user_dn) + result("searchResDone", mid, 0)
        return None

    fake = fake_ldap(directory)
    checker = make_checker(search(fake.url))
    answer = await check(checker, "alice", "pw")
    assert (answer.outcome, answer.dn) == (OK, user_dn)
    assert (await check(checker, "alice", "wrong")).outcome is INVALID
    assert blackhole.connections == 0
    assert fake.binds().count(user_dn) == 2


@pytest_twisted.ensureDeferred
async def test_wrong_service_password_is_unavailable_not_invalid(slapd, make_checker):
    config = replace(search(slapd.url), bind_password="wrong")
    result = await check(make_checker(config), ALICE.uid, ALICE.password)
    assert result.outcome is UNAVAILABLE
    assert "service account" in result.detail


@pytest_twisted.ensureDeferred
async def test_queue_full_is_unavailable_at_once(blackhole, make_checker):
    checker = make_checker(direct(blackhole.url, timeout=1.0, pool_size=1), max_pending=3)
    checks = [checker.check_password(ALICE.uid, ALICE.password)]
    await pause(0.2)  # connected, its bind in flight
    checks += [checker.check_password(ALICE.uid, ALICE.password) for _ in range(7)]
    assert [d.called for d in checks] == [False] * 4 + [True] * 4  # three wait, four refused
    results = await gatherResults(checks)
    assert [r.outcome for r in results] == [UNAVAILABLE] * 8
    assert [r.detail for r in results].count("LDAP queue full") == 4


# -- concurrency --------------------------------------------------------------------------------


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_200_concurrent_checks_each_get_their_own_answer(slapd, make_checker, mode):
    checker = make_checker(mode(slapd.url))
    users = list(USERS_BY_UID.values())
    cases = [(users[i % len(users)], i % 2 == 0) for i in range(200)]
    results = await gatherResults(
        [
            checker.check_password(u.uid, u.password if good else u.password + "x")
            for u, good in cases
        ]
    )
    for (user, good), result in zip(cases, results, strict=True):
        assert result.outcome is (OK if good else INVALID), (user.uid, good, result)
        assert same_dn(result.dn, user.dn)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base: Path = tmp_path_factory.mktemp("pki")
    ca = make_ca(base / "ca")
    other_ca = make_ca(base / "other", name="someone else")
    return {
        "ca": ca,
        "other_ca": other_ca,
        "good": make_server_cert(base / "good", ca),
        "wrong_name": make_server_cert(base / "wrong", ca, ["ldap.elsewhere.example"]),
        "expired": make_server_cert(base / "expired", ca, expired=True),
        "dns_san": make_server_cert(base / "dns", ca, ["localhost"]),
        "ip_san": make_server_cert(base / "ip", ca, ["127.0.0.1"]),
        "ip_san_wrong": make_server_cert(base / "ip-wrong", ca, ["127.0.0.2"]),
        "ip_san_wrong_cn_right": make_server_cert(
            base / "ip-wrong-cn", ca, ["127.0.0.2"], common_name="127.0.0.1"
        ),
        "cn_only": make_server_cert(base / "cn", ca, ["localhost"], subject_alt_names=False),
        "cn_only_wrong": make_server_cert(
            base / "cn-wrong", ca, ["ldap.elsewhere.example"], subject_alt_names=False
        ),
        "cn_only_ip": make_server_cert(base / "cn-ip", ca, ["127.0.0.1"], subject_alt_names=False),
    }


def tls_slapd(factory: Callable[..., Slapd], cert: Any) -> Slapd:
    return factory(tls_cert=cert.cert_path, tls_key=cert.key_path, ldaps=True)


@pytest_twisted.ensureDeferred
async def test_starttls_and_ldaps_with_a_trusted_certificate(slapd_factory, pki, make_checker):
    server = tls_slapd(slapd_factory, pki["good"])
    ca_file = str(pki["ca"].cert_path)
    for checker in (
        make_checker(search(server.url, start_tls=True, ca_file=ca_file)),
        make_checker(direct(server.url, start_tls=True, ca_file=ca_file)),
        make_checker(search(server.ldaps_url, ca_file=ca_file)),
        make_checker(direct(server.ldaps_url, ca_file=ca_file)),
    ):
        assert (await check(checker, ALICE.uid, ALICE.password)).outcome is OK
        assert (await check(checker, ALICE.uid, "wrong")).outcome is INVALID
    # Every bind went over TLS: slapd logs the TLS session before the first operation.
    assert "TLS established" in server.log_text()


@pytest.mark.parametrize("problem", ["untrusted", "wrong_name", "expired", "no_starttls"])
@pytest_twisted.ensureDeferred
async def test_tls_problems_are_unavailable_and_never_bind_in_clear(
    slapd_factory, pki, make_checker, problem
):
    cert = {"untrusted": "good", "no_starttls": None}.get(problem, problem)
    ca = pki["other_ca"] if problem == "untrusted" else pki["ca"]
    server = slapd_factory() if cert is None else tls_slapd(slapd_factory, pki[cert])
    ca_file = str(ca.cert_path)
    for mode in (direct, search):
        checker = make_checker(mode(server.url, start_tls=True, ca_file=ca_file))
        result = await check(checker, ALICE.uid, ALICE.password)
        assert result.outcome is UNAVAILABLE
        assert "StartTLS" in result.detail
        if cert is not None:
            ldaps = make_checker(mode(server.ldaps_url, ca_file=ca_file))
            assert (await check(ldaps, ALICE.uid, ALICE.password)).outcome is UNAVAILABLE
    await pause(0.1)
    assert [dn for dn in server.binds() if dn] == []  # "" is the readiness probe


@pytest_twisted.ensureDeferred
async def test_tls_failure_on_the_first_server_fails_over(slapd_factory, slapd, pki, make_checker):
    """A certificate problem is a server problem: the next server is tried (no bind was sent)."""
    bad = tls_slapd(slapd_factory, pki["wrong_name"])
    ok = tls_slapd(slapd_factory, pki["good"])
    checker = make_checker(direct(bad.ldaps_url, ok.ldaps_url, ca_file=str(pki["ca"].cert_path)))
    result = await check(checker, ALICE.uid, ALICE.password)
    assert (result.outcome, result.server) == (OK, ok.ldaps_url)
    assert [dn for dn in bad.binds() if dn] == []


@pytest_twisted.ensureDeferred
async def test_frozen_tls_server_times_out_then_recovers(slapd_factory, pki, make_checker):
    """The same over LDAPS and StartTLS: a timed-out TLS connection is dropped cleanly."""
    server = tls_slapd(slapd_factory, pki["good"])
    ca_file = str(pki["ca"].cert_path)
    checkers = [
        make_checker(search(server.ldaps_url, timeout=1.0, ca_file=ca_file)),
        make_checker(direct(server.url, start_tls=True, timeout=1.0, ca_file=ca_file)),
    ]
    for checker in checkers:
        assert (await check(checker, ALICE.uid, ALICE.password)).outcome is OK
    assert server.pid is not None
    with frozen(server.pid):
        answers = await gatherResults(
            [c.check_password(ALICE.uid, ALICE.password) for c in checkers]
        )
        assert [r.outcome for r in answers] == [UNAVAILABLE, UNAVAILABLE]
    for checker in checkers:
        assert (await check(checker, ALICE.uid, ALICE.password)).outcome is OK


#: (certificate, host radmfa connects to, None if accepted or what the warning line says).
CERTIFICATE_CASES = {
    "san-dns-right": ("dns_san", "localhost", None),
    "san-dns-wrong": ("wrong_name", "localhost", "names DNS ldap.elsewhere.example, not localhost"),
    "san-ip-right": ("ip_san", "127.0.0.1", None),
    "san-ip-wrong": ("ip_san_wrong", "127.0.0.1", "names IP 127.0.0.2, not 127.0.0.1"),
    "san-ip-wrong-cn-right": (
        "ip_san_wrong_cn_right",
        "127.0.0.1",
        "names IP 127.0.0.2, not 127.0.0.1",
    ),
    "san-dns-for-an-ip": ("dns_san", "127.0.0.1", "names DNS localhost, not 127.0.0.1"),
    "no-san-cn-right": ("cn_only", "localhost", None),
    "no-san-cn-wrong": (
        "cn_only_wrong",
        "localhost",
        "names CN ldap.elsewhere.example, not localhost",
    ),
    "no-san-cn-is-the-ip": ("cn_only_ip", "127.0.0.1", "must be an IP subjectAltName"),
    "expired": ("expired", "127.0.0.1", "certificate has expired"),
    "unknown-ca": ("untrusted", "127.0.0.1", "unable to get local issuer certificate"),
}


@pytest.fixture
def tls_warnings() -> Iterator[list[str]]:
    """The "TLS handshake failed" warning lines logged meanwhile; a traceback fails the test
    anyway (tests/conftest.py)."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_level") is LogLevel.warn and "TLS handshake" in event.get(
            "log_format", ""
        ):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.mark.parametrize("case", list(CERTIFICATE_CASES))
@pytest_twisted.ensureDeferred
async def test_certificate_and_host_name_checks(
    slapd_factory, pki, make_checker, engine, tls_warnings, monkeypatch, case
):
    """LDAPS and StartTLS, direct and search-then-bind: a certificate that does not name the
    server (subjectAltName, else the CN), or does not chain to ca_file, or has expired, ends
    the handshake before any bind, with one warning line saying why.

    ldap3 is given the host-name matcher it uses on Python 3.12 and later (its backport, which
    ignores IP subjectAltNames and falls back to the CN): radmfa must not depend on it.
    """
    if engine == "ldap3":
        monkeypatch.setattr(ldap3.core.tls, "match_hostname", tls_backport.match_hostname)
    name, host, refusal = CERTIFICATE_CASES[case]
    if engine == "libldap" and host == "localhost" and refusal is None:
        # libldap checks the name "localhost" as this machine's own host name
        # (ldap_pvt_tls_check_hostname): no certificate for localhost passes it. The one
        # disagreement with radmfa's rule, refused (never accepted), and said so in the log.
        refusal = "libldap checks the name localhost as this machine's own host name"
    server = tls_slapd(slapd_factory, pki["good" if name == "untrusted" else name])
    ca = pki["other_ca" if name == "untrusted" else "ca"]
    urls = [f"ldaps://{host}:{server.ldaps_port}", f"ldap://{host}:{server.port}"]
    for url in urls:
        for mode in (direct, search):
            config = mode(url, start_tls=url.startswith("ldap:"), ca_file=str(ca.cert_path))
            checker = make_checker(config)
            right = await check(checker, ALICE.uid, ALICE.password)
            if refusal is None:
                assert right.outcome is OK, right.detail
                assert (await check(checker, ALICE.uid, "wrong")).outcome is INVALID
            else:
                assert right.outcome is UNAVAILABLE
                assert refusal in (right.detail or ""), right.detail
    if refusal is not None:
        await pause(0.1)
        assert [dn for dn in server.binds() if dn] == []  # no credentials ever left radmfa
        assert tls_warnings and all(refusal in line for line in tls_warnings), tls_warnings
        assert all(host in line for line in tls_warnings)
    else:
        assert tls_warnings == []


#: The first 14 octets of a BindResponse "success" to messageID 2 whose length promises 14 more:
#: slapd's "invalid credentials" answer to the user bind (14 octets, through TLS) completes it.
FORGED_BIND_PREFIX = bytes.fromhex("30 1a 02 01 02 61 15 0a 01 00 04 00 04 00")


@pytest_twisted.ensureDeferred
async def test_bytes_injected_after_the_starttls_answer_never_make_a_bind_succeed(
    slapd_factory, pki, make_checker, engine
):
    """Someone on the path appends a forged bind success to the StartTLS answer, in clear."""
    server = tls_slapd(slapd_factory, pki["good"])
    with StartTlsInjector((server.host, server.port), FORGED_BIND_PREFIX) as proxy:
        config = direct(proxy.url, start_tls=True, ca_file=str(pki["ca"].cert_path))
        checker = make_checker(config)
        wrong = await check(checker, ALICE.uid, "not alice's password")
        right = await check(checker, ALICE.uid, ALICE.password)
        assert proxy.injections >= 1
    assert wrong.outcome is not OK
    if engine != "ldap3":
        # The connection is dropped before the handshake: fail closed, nothing sent in TLS.
        assert wrong.outcome is UNAVAILABLE and right.outcome is UNAVAILABLE
        await pause(0.1)
        assert [dn for dn in server.binds() if dn] == []
    if engine == "libldap":  # GnuTLS reads the forged bytes as the server's first TLS record
        assert "unexpected TLS packet" in (wrong.detail or "")


@pytest.mark.parametrize("answer", ["searchResDone", "extendedResp"])
@pytest.mark.parametrize("code", [0, 49], ids=["success", "invalid-credentials"])
@pytest.mark.parametrize("bind", ["user", "service"])
@pytest_twisted.ensureDeferred
async def test_a_bind_is_judged_by_its_bind_response_only(
    fake_ldap, make_checker, bind, code, answer
):
    """A server answering a bind with another operation's result under the bind's message ID
    (a forgery, or a broken server): never a success nor a wrong password, whatever its code;
    the check is UNAVAILABLE."""
    wrong_bind = ALICE.dn if bind == "user" else SERVICE_DN

    def handler(kind: str, mid: int, op: Any) -> Any:
        if kind == "bindRequest":
            if str(op["name"]) == wrong_bind:
                return result(answer, mid, code)
            return result("bindResponse", mid, 0)
        if kind == "searchRequest":
            return entry(mid, ALICE.dn) + result("searchResDone", mid, 0)
        return None

    fake = fake_ldap(handler)
    config = direct(fake.url) if bind == "user" else search(fake.url)
    checker = make_checker(replace(config, timeout=1.0))
    got = await check(checker, ALICE.uid, ALICE.password)
    assert got.outcome is UNAVAILABLE, got
    assert wrong_bind in fake.binds()


# -- the pooled engine (libldap) only ------------------------------------------------------------


def accepted_connections(server: Slapd) -> int:
    return len(re.findall(r" ACCEPT from ", server.log_text()))


def accepted_so_far(server: Slapd) -> int:
    """The count before a test's own connections: once every earlier connection (the
    fixture's probe and user set-up) shows as closed in slapd's log, which a loaded machine
    can write late."""

    def settled() -> bool:
        text = server.log_text()
        return len(re.findall(r" ACCEPT from ", text)) == len(re.findall(r" closed", text))

    deadline_poll(settled, 10, what="slapd's log to show the set-up connections closed")
    return accepted_connections(server)


@pytest.fixture
def pooled(ldap_runner: ThreadPoolRunner) -> Callable[..., Any]:
    """``pooled(config, **options)``: a checker of the engine with persistent, pipelined
    connections (closing it is the test's job)."""

    def make(config: LdapConfig, **options: Any) -> Any:
        return LibldapPasswordChecker(config, reactor, ldap_runner, **options)

    return make


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_pooled_connections_are_persistent(fresh_slapd, pooled, mode):
    # A generous operation timeout: on a loaded machine (the suite with CPU hogs beside it)
    # the default one can drop a slow connection and open a replacement, which is right but
    # is not what this test counts.
    checker = pooled(mode(fresh_slapd.url, timeout=10.0))
    try:
        before = accepted_so_far(fresh_slapd)
        for i in range(30):
            user = list(USERS_BY_UID.values())[i % len(USERS_BY_UID)]
            assert (await check(checker, user.uid, user.password)).outcome is OK
        # Sequential checks: one bind connection, plus one search connection in search mode.
        opened = accepted_connections(fresh_slapd) - before
        assert opened == (1 if mode is direct else 2), (
            f"{opened} connections:\n{fresh_slapd.log_tail(60)}"
        )
    finally:
        checker.close()
    await pause(0.2)
    assert "UNBIND" in fresh_slapd.log_text()


@pytest_twisted.ensureDeferred
async def test_pooled_close_ends_checks_in_flight(blackhole, pooled):
    checker = pooled(direct(blackhole.url, timeout=5.0))
    pending = [checker.check_password(ALICE.uid, ALICE.password) for _ in range(3)]
    await pause(0.2)
    started = time.monotonic()
    checker.close()
    results = await gatherResults(pending)
    assert time.monotonic() - started < 0.5
    assert {r.outcome for r in results} == {UNAVAILABLE}
    assert (await check(checker, ALICE.uid, ALICE.password)).detail == "LDAP checker is closed"


@pytest_twisted.ensureDeferred
async def test_pooled_garbage_from_the_server_is_unavailable(fake_ldap, slapd, pooled):
    """An undecodable answer drops the connection; a bind sent there counts as unanswered."""
    garbage = fake_ldap(
        lambda kind, mid, op: b"\x30\x03\x02\x01" if kind == "bindRequest" else None
    )
    rude = fake_ldap(lambda kind, mid, op: b"\x31\x00")
    for fake in (garbage, rude):
        checker = pooled(direct(fake.url, slapd.url))
        try:
            result = await check(checker, ALICE.uid, ALICE.password)
        finally:
            checker.close()
        assert result.outcome is UNAVAILABLE
        assert "bind got no answer" in result.detail
        assert fake.binds() == [ALICE.dn]


@pytest_twisted.ensureDeferred
async def test_pooled_notice_of_disconnection(fake_ldap, slapd, pooled):
    """An unsolicited notice (messageID 0) ends the connection: searches go elsewhere."""

    def notice(kind: str, mid: int, op: Any) -> Any:
        if kind == "bindRequest":
            return result("bindResponse", mid, 0)
        oid = asn.ResponseName("1.3.6.1.4.1.1466.20036")
        return result("extendedResp", 0, 52, "shutting down", responseName=oid)

    fake = fake_ldap(notice)
    checker = pooled(search(fake.url, slapd.url))
    try:
        answer = await check(checker, ALICE.uid, ALICE.password)
    finally:
        checker.close()
    assert (answer.outcome, answer.server) == (OK, slapd.url)
    assert [kind for kind, _ in fake.requests].count("searchRequest") == 2  # retried once


@pytest_twisted.ensureDeferred
async def test_pooled_pipelines_searches_on_few_connections(fresh_slapd, pooled):
    # A generous operation timeout: on a loaded machine a 2 s timeout can drop a busy
    # connection and open a replacement, which is correct but not what this test counts.
    config = search(fresh_slapd.url, pool_size=4, timeout=10.0)
    checker = pooled(config)
    try:
        before = accepted_so_far(fresh_slapd)
        users = list(USERS_BY_UID.values())
        results = await gatherResults(
            [checker.check_password(u.uid, u.password) for u in users * 20]
        )
        assert {r.outcome for r in results} == {OK}
        # At most 2 search connections and pool_size bind connections.
        opened = accepted_connections(fresh_slapd) - before
        assert opened <= 2 + 4, f"{opened} connections:\n{fresh_slapd.log_tail(60)}"
    finally:
        checker.close()


def test_pooled_refuses_bad_configuration(tmp_path, pooled):
    with pytest.raises(ValueError, match="user_filter"):
        pooled(replace(search("ldap://x"), user_filter="(uid={username}"))
    with pytest.raises(ValueError, match=r"user_filter: Bad search filter"):
        pooled(replace(search("ldap://x"), user_filter="(&(uid={username})(objectClass~=*))"))
    with pytest.raises(ValueError, match=r"groups\.filter: Bad search filter"):
        pooled(search("ldap://x"), groups=LdapGroupsConfig(filter="(objectClass=group)(x=y)"))
    with pytest.raises(ValueError, match="exactly one"):
        pooled(LdapConfig(servers=("ldap://x",)))
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        pooled(direct("ldaps://x", ca_file=str(empty)))


@pytest_twisted.ensureDeferred
async def test_pooled_a_filter_libldap_refuses_ends_the_check_with_nothing_sent(slapd, pooled):
    """A template that puts the name outside a value: a name that breaks the filter is
    refused by libldap's own parser, the check ends UNAVAILABLE without a bind, and the
    search connection stays usable."""
    checker = pooled(replace(search(slapd.url), user_filter="({username}=alice)"))
    before = binds_as(slapd, ALICE.dn)
    try:
        refused = await check(checker, "u id", ALICE.password)  # "(u id=alice)"
        assert refused.outcome is UNAVAILABLE
        assert "bad search filter: Bad search filter" in (refused.detail or "")
        assert await settled_binds(slapd, ALICE.dn, before) == before
        found = await check(checker, "uid", ALICE.password)  # "(uid=alice)"
        assert found.outcome is OK, found
    finally:
        checker.close()


def test_deferred_type_is_returned_even_for_refusals(pooled):
    checker = pooled(direct("ldap://127.0.0.1:1"))
    try:
        for username, password in (("alice", ""), ("", "x"), ("a\x00", "x")):
            answer = checker.check_password(username, password)
            assert isinstance(answer, Deferred) and answer.called
    finally:
        checker.close()


# -- Active Directory: nested groups in one search, account state without a bind ----------------


def entry_with(message_id: int, dn: str, attributes: dict[str, list[bytes]]) -> bytes:
    op = asn.SearchResultEntry()
    op["object"] = asn.LDAPDN(dn)
    attribute_list = asn.PartialAttributeList()
    for i, (name, values) in enumerate(attributes.items()):
        attribute = asn.PartialAttribute()
        attribute["type"] = asn.AttributeDescription(name)
        vals = asn.Vals()
        for j, value in enumerate(values):
            vals[j] = asn.AttributeValue(value)
        attribute["vals"] = vals
        attribute_list[i] = attribute
    op["attributes"] = attribute_list
    return pyasn1_message(message_id, "searchResEntry", op)


IN_CHAIN = b"1.2.840.113556.1.4.1941"
AD_USER_DN = "CN=Alice,OU=Staff,DC=example,DC=org"
AD_GROUPS = ("CN=VPN,OU=Groups,DC=example,DC=org", "CN=All,OU=Groups,DC=example,DC=org")


def _tlv_at(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the BER element at ``pos``."""
    tag, n, pos = data[pos], data[pos + 1], pos + 2
    if n & 0x80:
        count = n & 0x7F
        n, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    return tag, pos, pos + n


class RawAd:
    """A scripted Active Directory on loopback that reads requests as raw BER.

    pyasn1 with ldap3's ASN.1 module cannot decode an AND holding an extensible match (it
    fails with "Read 13 bytes instead of expected 20" on bytes ldap3 itself encodes), so this
    server only looks at what it needs: the message ID, the operation, a bind's DN, and
    whether a search carries the in-chain rule and the user's DN. ``seen`` records
    ("bind", dn) and ("search", "user" | "in-chain").
    """

    def __init__(self, user_attributes: dict[str, list[bytes]]) -> None:
        self.seen: list[tuple[str, str]] = []
        fake = self

        class Server(Protocol):
            buffer = b""

            def dataReceived(self, data: bytes) -> None:
                self.buffer += data
                while (size := _frame(self.buffer)) is not None:
                    raw, self.buffer = self.buffer[:size], self.buffer[size:]
                    answer = fake.answer(raw, user_attributes)
                    if answer:
                        self.transport.write(answer)

        self.port = reactor.listenTCP(0, Factory.forProtocol(Server), interface="127.0.0.1")
        self.url = f"ldap://127.0.0.1:{self.port.getHost().port}"

    def answer(self, raw: bytes, user_attributes: dict[str, list[bytes]]) -> bytes | None:
        _, body, _ = _tlv_at(raw, 0)
        _, id_start, id_end = _tlv_at(raw, body)
        mid = int.from_bytes(raw[id_start:id_end], "big")
        op, op_start, _ = _tlv_at(raw, id_end)
        if op == 0x60:  # bindRequest: version, then the name
            _, _, version_end = _tlv_at(raw, op_start)
            _, name_start, name_end = _tlv_at(raw, version_end)
            name = raw[name_start:name_end].decode()
            self.seen.append(("bind", name))
            ok = name == SERVICE_DN or raw.endswith(b"\x80\x02pw")
            return result("bindResponse", mid, 0 if ok else 49)
        if op != 0x63:
            return None
        if IN_CHAIN in raw:
            assert AD_USER_DN.encode() in raw
            self.seen.append(("search", "in-chain"))
            found = b"".join(entry(mid, g) for g in AD_GROUPS)
            return found + result("searchResDone", mid, 0)
        self.seen.append(("search", "user"))
        # The entry carries the name it was searched by, as a real directory's does.
        named = {"uid": [b"alice"], **user_attributes}
        return entry_with(mid, AD_USER_DN, named) + result("searchResDone", mid, 0)


@pytest.fixture
def raw_ad() -> Iterator[Callable[[dict[str, list[bytes]]], RawAd]]:
    made: list[RawAd] = []

    def make(user_attributes: dict[str, list[bytes]]) -> RawAd:
        made.append(RawAd(user_attributes))
        return made[-1]

    yield make
    for server in made:
        server.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_ad_in_chain_finds_nested_groups_in_one_search(raw_ad, make_checker):
    from radmfa.config import LdapGroupsConfig

    fake = raw_ad({})
    settings = LdapGroupsConfig(membership="ad_chain", filter="(objectClass=group)")
    checker = make_checker(search(fake.url), groups=settings)
    found = await checker.user_groups("alice")
    assert found.outcome is OK
    assert found.groups == AD_GROUPS
    checked = await checker.check_password("alice", "pw", entry=found.entry)
    assert checked.outcome is OK
    searches = [what for kind, what in fake.seen if kind == "search"]
    assert searches == ["user", "in-chain"]  # the bind reused the user search
    assert [dn for kind, dn in fake.seen if kind == "bind"][-1] == AD_USER_DN


@pytest.mark.parametrize(
    ("flags", "reason"), [(b"514", "account_disabled"), (b"8389120", "password_expired")]
)
@pytest_twisted.ensureDeferred
async def test_ad_account_flags_refuse_without_a_user_bind(raw_ad, make_checker, flags, reason):
    fake = raw_ad({"userAccountControl": [flags]})
    checker = make_checker(search(fake.url))
    answer = await check(checker, "alice", "pw")
    assert (answer.outcome, answer.detail) == (INVALID, reason)
    assert [dn for kind, dn in fake.seen if kind == "bind"] == [SERVICE_DN]
