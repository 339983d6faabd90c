"""Two radmfa daemons on one PostgreSQL database behave as one server.

Nodes A and B share the key file and the database (and the directory: one slapd); the admin
"host" is only the CLI with the same store settings. Everything a user could play one node
against the other with is tried here: one code at both at once, a State issued by one and
answered at the other (also through pam_radius_auth, the nodes behind one address), failures
split between them, an admin change made elsewhere, and the database going away under load.

The nodes live for the whole module (starting them is the expensive part); each test enrolls
its own users. The database restart comes last but leaves both nodes serving.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyrad import packet as rp

from tests.integration.test_daemon import LEGACY_SECRET, STRICT_SECRET, Enrolled, base_config
from tests.integration.test_pam_radius import PAM_DIR
from tests.support.daemon import READY_LINE, RadmfaDaemon, deadline_poll
from tests.support.postgres import Postgres
from tests.support.radius_client import (
    ACCEPT,
    CHALLENGE,
    DICTIONARY,
    REJECT,
    RadiusTestClient,
    build_request,
)
from tests.support.slapd import PEOPLE_DN, Slapd
from tests.support.udprelay import UdpRelay

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MAX_FAILURES = 4
#: The source the raw test clients send from (the "strict" client entry: signed requests).
SOURCE = "127.0.0.3"
#: The start of every line the daemon writes in its text format.
TIMESTAMPED = re.compile(r"\d{4}-\d\d-\d\dT[\d:]{8}\.\d{3}Z (debug|info|warn|error|critical) ")


@dataclass
class Nodes:
    a: RadmfaDaemon
    b: RadmfaDaemon
    #: Never started: its ``cli`` is an admin on another host with the same store settings.
    admin: RadmfaDaemon
    cluster: Postgres
    slapd: Slapd

    @property
    def both(self) -> tuple[RadmfaDaemon, RadmfaDaemon]:
        return self.a, self.b


def node_config(slapd: Slapd, cluster: Postgres, workdir: Path) -> dict:
    password_file = workdir / "pg-password"
    password_file.write_text(cluster.password + "\n")
    password_file.chmod(0o600)
    return base_config(
        slapd,
        store={
            "engine": "postgresql",
            "dsn": cluster.dsn_without_password(),
            "password_file": str(password_file),
            "pool_size": 4,
            "key_file": str(workdir / "secret.key"),
        },
        lockout={"max_failures": MAX_FAILURES, "duration": "5m"},
        # The per-user throttle would refuse the fourth try of a quick series on its own;
        # these tests are about the lockout counted across nodes.
        rate_limits={"user": {"free_failures": 10}},
    )


def copy_key(source: RadmfaDaemon, target: Path) -> None:
    """The key file A created, copied into ``target`` as an admin would (mode 600 kept)."""
    shutil.copy2(source.config["store"]["key_file"], target / "secret.key")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Postgres]:
    """A database server of this module's own: the outage test stops and starts it."""
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def nodes(
    slapd: Slapd, cluster: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nodes]:
    dirs = [tmp_path_factory.mktemp(name) for name in ("node-a", "node-b", "admin-host")]
    a, b, admin = (RadmfaDaemon(d, node_config(slapd, cluster, d)) for d in dirs)
    started: list[RadmfaDaemon] = []
    try:
        a.start()  # creates the key file and the schema
        started.append(a)
        copy_key(a, dirs[1])
        copy_key(a, dirs[2])
        b.start()
        started.append(b)
        yield Nodes(a, b, admin, cluster, slapd)
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def clients(nodes: Nodes) -> Iterator[tuple[RadiusTestClient, RadiusTestClient]]:
    made = [RadiusTestClient(n.port, STRICT_SECRET.encode(), source=SOURCE) for n in nodes.both]
    yield made[0], made[1]
    for client in made:
        client.close()


def user_binds(slapd: Slapd, name: str) -> int:
    """Binds slapd logged for this user's entry (waits briefly for late log lines)."""
    time.sleep(0.2)
    dn = f"uid={name},{PEOPLE_DN}".lower()
    return sum(1 for bound in slapd.binds() if bound.lower() == dn)


def user_record(nodes: Nodes, name: str) -> dict:
    done = nodes.admin.cli("user", "show", name, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- one code, two nodes ------------------------------------------------------------------------


def test_one_code_sent_to_both_nodes_at_once_is_accepted_exactly_once(nodes, clients):
    client_a, client_b = clients
    for round_no in range(6):
        user = Enrolled(nodes.admin, nodes.slapd)
        code = user.code()
        packets = [
            build_request(STRICT_SECRET.encode(), user.name, user.password + code) for _ in clients
        ]
        order = [(client_a, packets[0]), (client_b, packets[1])]
        if round_no % 2:
            order.reverse()
        for client, pkt in order:  # both on their way before either answer is read
            client.send_raw(pkt.RequestPacket())
        replies = [client.read_reply(pkt) for client, pkt in order]
        codes = sorted(r.code for r in replies if r is not None)
        assert codes == sorted([ACCEPT, REJECT]), (round_no, codes)


def test_a_token_enrolled_by_the_cli_elsewhere_works_on_both_nodes(nodes, clients):
    user = Enrolled(nodes.admin, nodes.slapd)
    client_a, client_b = clients
    reply = client_a.auth(user.name, user.password + user.code())
    assert reply is not None and reply.code == ACCEPT
    reply = client_b.auth(user.name, user.password + user.code(1))  # the next step's code
    assert reply is not None and reply.code == ACCEPT
    # ... and the first code stays used at B too.
    reply = client_b.auth(user.name, user.password + user.code())
    assert reply is not None and reply.code == REJECT


# -- a challenge issued by one node, answered at the other ---------------------------------------


def test_a_challenge_issued_by_a_is_answered_at_b_once(nodes, clients):
    user = Enrolled(nodes.admin, nodes.slapd)
    client_a, client_b = clients
    challenge = client_a.auth(user.name, user.password)
    assert challenge is not None and challenge.code == CHALLENGE and challenge.state
    reply = client_b.auth(user.name, user.code(), state=challenge.state)
    assert reply is not None and reply.code == ACCEPT
    nodes.b.wait_for_log(f'decision=accept reason=ok user="{user.name}"')
    # The State is used up on both: answering it again at A with a fresh code fails.
    again = client_a.auth(user.name, user.code(1), state=challenge.state)
    assert again is not None and again.code == REJECT


def pam_service_for(ports: list[int], tmp_path: Path) -> Iterator[str]:
    """A PAM service whose pam_radius_auth lists these servers, tried in order (1 s each)."""
    if os.geteuid() != 0:
        pytest.fail("pam_radius tests need root to write a service file into /etc/pam.d")
    conf = tmp_path / f"pam_radius_{len(ports)}.conf"
    conf.write_text("".join(f"127.0.0.1:{port} {LEGACY_SECRET} 1\n" for port in ports))
    conf.chmod(0o600)
    service = f"radmfa-test-two-{secrets.token_hex(4)}"
    (PAM_DIR / service).write_text(
        f"auth required pam_radius_auth.so conf={conf}\naccount required pam_permit.so\n"
    )
    try:
        yield service
    finally:
        (PAM_DIR / service).unlink(missing_ok=True)


def pamtester(service: str, user: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["pamtester", "-v", service, user, "authenticate"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def pam_login(
    nodes: Nodes, service: str, user: Enrolled, between: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """pamtester types the password; once A has issued the challenge, ``between`` runs (it
    stops A), then the code is typed."""
    pam = pamtester(service, user.name)
    try:
        assert pam.stdin is not None
        pam.stdin.write(user.password + "\n")
        pam.stdin.flush()
        if between is not None:
            nodes.a.wait_for_log(f'decision=challenge reason=challenge_issued user="{user.name}"')
            between()
        out, _ = pam.communicate(user.code() + "\n", timeout=30)
    finally:
        if pam.poll() is None:
            pam.kill()
            pam.wait()
    return subprocess.CompletedProcess(pam.args, pam.returncode, out)


@pytest.fixture
def a_restarted(nodes: Nodes) -> Iterator[None]:
    """For tests that stop A: it serves again for the next test."""
    yield
    if nodes.a.process is None:
        nodes.a.start()


def test_pam_radius_answers_a_challenge_of_a_stopped_node_at_the_other(
    nodes, tmp_path, a_restarted
):
    """Both nodes behind one service address (a virtual IP that moves): the challenge comes
    from A, A stops (SIGTERM) while the user reads the prompt, the address moves to B, and B
    takes the answer."""
    user = Enrolled(nodes.admin, nodes.slapd)

    def a_dies() -> None:
        assert nodes.a.stop() == 0
        address.move_to(nodes.b.port)

    with UdpRelay(nodes.a.port) as address:
        for service in pam_service_for([address.port], tmp_path):
            done = pam_login(nodes, service, user, a_dies)
    assert done.returncode == 0, done.stdout
    assert "Enter your verification code" in done.stdout
    assert "successfully authenticated" in done.stdout
    nodes.b.wait_for_log(f'decision=accept reason=ok user="{user.name}" client=legacy')
    assert f'decision=challenge reason=challenge_issued user="{user.name}"' not in nodes.b.log()


def test_pam_radius_listing_both_nodes_logs_in_at_b_once_a_stopped_mid_challenge(
    nodes, tmp_path, a_restarted
):
    """With both nodes in its server list, pam_radius_auth sends a challenge's answer only
    to the node that asked (it forgets the other servers once one answered): that login
    fails and nothing is accepted; the user's next login is served by B from the start."""
    user = Enrolled(nodes.admin, nodes.slapd)
    for service in pam_service_for([nodes.a.port, nodes.b.port], tmp_path):
        done = pam_login(nodes, service, user, lambda: nodes.a.stop())
        assert done.returncode != 0, done.stdout
        assert "successfully authenticated" not in done.stdout
        assert f'user="{user.name}"' not in nodes.b.log()
        done = pam_login(nodes, service, user)  # A is still down
        assert done.returncode == 0, done.stdout
    nodes.b.wait_for_log(f'decision=accept reason=ok user="{user.name}" client=legacy')


# -- the lockout, counted across nodes ----------------------------------------------------------


def test_failures_split_over_both_nodes_lock_the_user_on_both(nodes, clients):
    user = Enrolled(nodes.admin, nodes.slapd)
    client_a, client_b = clients
    for client in (client_a, client_a, client_b, client_b):
        reply = client.auth(user.name, "not-" + user.password)
        assert reply is not None and reply.code == REJECT
    binds = user_binds(nodes.slapd, user.name)
    assert binds == MAX_FAILURES
    record = user_record(nodes, user.name)
    assert (record["failures"], record["locked"]) == (MAX_FAILURES, True)
    for client in (client_a, client_b):  # the right password and code, no bind
        reply = client.auth(user.name, user.password + user.code())
        assert reply is not None and reply.code == REJECT
    for node in nodes.both:
        node.wait_for_log(f'decision=reject reason=locked user="{user.name}"')
    assert user_binds(nodes.slapd, user.name) == binds


# -- an admin on another host ---------------------------------------------------------------------


def test_a_user_disabled_from_another_host_is_refused_by_both_nodes_at_once(nodes, clients):
    user = Enrolled(nodes.admin, nodes.slapd)
    client_a, client_b = clients
    done = nodes.admin.cli("user", "disable", user.name, "--reason", "left the company")
    assert done.returncode == 0, done.stderr
    binds = user_binds(nodes.slapd, user.name)
    code = user.code()
    for client in (client_a, client_b):
        reply = client.auth(user.name, user.password + code)
        assert reply is not None and reply.code == REJECT
    for node in nodes.both:
        node.wait_for_log(f'decision=reject reason=user_disabled user="{user.name}"')
    assert user_binds(nodes.slapd, user.name) == binds  # refused before the directory
    done = nodes.admin.cli("user", "enable", user.name)
    assert done.returncode == 0, done.stderr
    reply = client_b.auth(user.name, user.password + code)  # the code was never spent
    assert reply is not None and reply.code == ACCEPT


# -- a node with another key file ---------------------------------------------------------------


def test_a_node_with_another_key_file_refuses_to_start(nodes, tmp_path):
    stranger = RadmfaDaemon(tmp_path, node_config(nodes.slapd, nodes.cluster, tmp_path))
    with pytest.raises(RuntimeError, match="radmfa exited"):
        stranger.start()
    assert "different key file" in stranger.log()
    assert READY_LINE not in stranger.log()
    assert nodes.cluster.password not in stranger.log()


# -- the database restarted under load ---------------------------------------------------------


#: What :class:`Load` records for a reply that failed verification.
FORGED = -1


@dataclass
class Exchange:
    node: str
    user: str
    sent_at: float
    reply: int | None


@dataclass
class Load:
    """Threads sending logins whose right answer is known, to both nodes, without pause."""

    nodes: Nodes
    #: user name -> (password field, the one right answer)
    logins: dict[str, tuple[str, int]]
    timeout: float = 1.0
    #: Between a reply (or its timeout) and the next request of a thread.
    pause: float = 0.005
    seen: list[Exchange] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for label, node in zip("ab", self.nodes.both, strict=True):
            for user in self.logins:
                thread = threading.Thread(target=self._run, args=(label, node.port, user))
                thread.start()
                self.threads.append(thread)

    def _run(self, label: str, port: int, user: str) -> None:
        password, _ = self.logins[user]
        client = RadiusTestClient(port, STRICT_SECRET.encode(), source=SOURCE)
        try:
            packet_id = 0
            while not self.stop.is_set():
                packet_id = (packet_id + 1) % 256
                pkt = build_request(client.secret, user, password, identifier=packet_id)
                sent_at = time.monotonic()
                client.send_raw(pkt.RequestPacket())
                self.seen.append(Exchange(label, user, sent_at, self._reply(client, pkt)))
                time.sleep(self.pause)
        finally:
            client.close()

    def _reply(self, client: RadiusTestClient, pkt: rp.AuthPacket) -> int | None:
        """The reply to ``pkt``; late replies to earlier requests (other Identifiers) are
        skipped, so an answer is never credited to the wrong request. A reply that fails
        verification is :data:`FORGED` (a wrong answer, whatever the test expects)."""
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            data = client.receive_raw(left)
            if data is None:
                return None
            if data[1] != pkt.id:
                continue
            reply = rp.Packet(packet=data, secret=client.secret, dict=DICTIONARY)
            if not pkt.VerifyReply(reply, data, enforce_ma=True) or data[20] != 80:
                return FORGED
            return reply.code
        return None

    def answered_since(self, since: float) -> set[tuple[str, str]]:
        return {
            (e.node, e.user)
            for e in list(self.seen)
            if e.sent_at >= since and e.reply == self.logins[e.user][1]
        }

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def test_a_database_restart_under_load_drops_requests_counts_nothing_and_heals(nodes, clients):
    locked = Enrolled(nodes.admin, nodes.slapd)
    disabled = Enrolled(nodes.admin, nodes.slapd)
    pending = Enrolled(nodes.admin, nodes.slapd)  # gets a challenge: its password alone
    client_a, client_b = clients
    for _ in range(MAX_FAILURES):
        assert client_a.auth(locked.name, "wrong").code == REJECT  # type: ignore[union-attr]
    for client in (client_a, client_b, client_a):  # one failure short of the lock: a try
        # the outage left pending against it would throttle it (it counts as a failure
        # that may still happen)
        assert client.auth(pending.name, "wrong").code == REJECT  # type: ignore[union-attr]
    assert nodes.admin.cli("user", "disable", disabled.name).returncode == 0
    users = (locked, disabled, pending)
    before = {u.name: user_record(nodes, u.name) for u in users}
    assert before[locked.name]["locked"] and before[pending.name]["failures"] == MAX_FAILURES - 1

    load = Load(
        nodes,
        {
            locked.name: (locked.password + locked.code(), REJECT),
            disabled.name: (disabled.password + disabled.code(), REJECT),
            pending.name: (pending.password, CHALLENGE),
        },
    )
    everyone = {(label, u.name) for label in "ab" for u in users}
    load.start()
    try:
        started = time.monotonic()
        deadline_poll(lambda: load.answered_since(started) == everyone, 15, what="warm-up")
        offsets = [n.log_path.stat().st_size for n in nodes.both]
        nodes.cluster.stop()
        down_at = time.monotonic()
        for node in nodes.both:  # every node has met the outage (calls wait up to 5 s)
            node.wait_for_log("the store unavailable:", timeout=20)
        time.sleep(1.0)
        nodes.cluster.start()
        up_at = time.monotonic()
        # Both nodes heal by themselves: every login of every user answered right again.
        try:
            deadline_poll(lambda: load.answered_since(up_at) == everyone, 30, what="recovery")
        except TimeoutError:
            late = [e for e in load.seen if e.sent_at >= up_at][-12:]
            raise AssertionError(f"not answered right since the restart: {late}") from None
    finally:
        load.finish()

    wrong = [e for e in load.seen if e.reply is not None and e.reply != load.logins[e.user][1]]
    assert wrong == [], wrong  # no Accept, no Reject for a challenge: no answer or the right one
    dropped = [e for e in load.seen if e.reply is None and down_at <= e.sent_at <= up_at]
    assert dropped, "no request met the outage"
    assert {u.name: user_record(nodes, u.name) for u in users} == before
    for node, offset in zip(nodes.both, offsets, strict=True):
        node.wait_for_log("the store available again")
        log = node.log()
        assert log.count("the store unavailable:") == 1, log
        assert log.count("the store available again") == 1, log
        # Every line since is the daemon's own (a time, a level), none a library's raw text.
        since = log.encode()[offset:].decode(errors="replace").splitlines()
        raw = [line for line in since if not TIMESTAMPED.match(line)]
        assert raw == [], raw
    # ... and a login with a second factor goes through on both.
    fresh = Enrolled(nodes.admin, nodes.slapd)
    for client, steps in ((client_a, 0), (client_b, 1)):
        reply = client.auth(fresh.name, fresh.password + fresh.code(steps))
        assert reply is not None and reply.code == ACCEPT
