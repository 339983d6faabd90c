"""How the libldap engine reads answers off a real slapd: every message handed over, one call
into libldap per message while nothing else is pending, all of them when several are."""

from __future__ import annotations

from typing import Any

import ldap
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from radmfa.directory.ldap_libldap import LibldapConnection
from tests.support.slapd import ALICE, BOB, PEOPLE_DN, SERVICE_DN, SERVICE_PASSWORD, Slapd

pytestmark = pytest.mark.integration


class CountingLd:
    """An ``LDAPObject`` whose ``result3`` calls are counted (each is a trip into libldap:
    a poll and often a read)."""

    def __init__(self, ld: Any) -> None:
        self._ld = ld
        #: What each call returned: a message type, None (nothing complete yet) or "error"
        #: (python-ldap raises every final result but success).
        self.reads: list[int | str | None] = []

    def result3(self, *args: Any) -> Any:
        try:
            answer = self._ld.result3(*args)
        except ldap.LDAPError:
            self.reads.append("error")
            raise
        self.reads.append(answer[0])
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ld, name)


@pytest.fixture
def connection(slapd: Slapd) -> Any:
    ld = ldap.initialize(slapd.url)
    ld.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    ld.simple_bind_s(SERVICE_DN, SERVICE_PASSWORD)
    counting = CountingLd(ld)
    conn = LibldapConnection(ldap, counting, reactor, 5.0, name="test")
    yield conn, counting
    conn.close()


async def settled() -> None:
    """Let the reactor finish the read that delivered the answer (its callbacks ran inside
    it) and whatever else it has to do."""
    await deferLater(reactor, 0.05, lambda: None)


def search_for(conn: LibldapConnection, uid: str) -> Any:
    return conn.search(PEOPLE_DN, f"(uid={uid})", ["uid"], size_limit=2, time_limit=5)


@pytest_twisted.ensureDeferred
async def test_no_trip_into_libldap_once_nothing_is_pending(connection):
    """The last call of each answer is the one that returned it: no further call only to
    learn that nothing is left (an empty call happens only while an answer is still due)."""
    conn, ld = connection
    found = await search_for(conn, ALICE.uid)
    await settled()
    assert [entry.dn for entry in found.entries] == [ALICE.dn] and found.done.code == 0
    assert ld.reads[-1] == ldap.RES_SEARCH_RESULT
    assert ld.reads.count(ldap.RES_SEARCH_ENTRY) == 1 and len(ld.reads) <= 3
    ld.reads.clear()
    answer = await conn.bind(ALICE.dn, ALICE.password.encode())
    await settled()
    assert answer.code == 0 and ld.reads[-1] == ldap.RES_BIND and len(ld.reads) <= 2
    ld.reads.clear()
    refused = await conn.bind(BOB.dn, b"wrong")
    await settled()
    assert refused.code == 49 and ld.reads[-1] == "error" and len(ld.reads) <= 2
    assert conn.alive and conn.outstanding == 0


@pytest_twisted.ensureDeferred
async def test_pipelined_answers_are_all_read(connection):
    conn, _ = connection
    uids = [ALICE.uid, BOB.uid, "nobody-by-this-name"] * 5
    results = await gatherResults([search_for(conn, uid) for uid in uids])
    assert [[entry.dn for entry in r.entries] for r in results] == [
        [ALICE.dn],
        [BOB.dn],
        [],
    ] * 5
    assert conn.outstanding == 0 and conn.alive
