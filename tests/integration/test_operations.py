"""Operations end to end: reload under load, metrics over HTTP, JSON logs, systemd credentials."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_daemon import STRICT_SECRET, Enrolled, base_config
from tests.support.daemon import RadmfaDaemon, deadline_poll
from tests.support.ports import free_port
from tests.support.radius_client import ACCEPT, REJECT, RadiusTestClient, build_request
from tests.support.slapd import LdapUser, Slapd

pytestmark = pytest.mark.integration

STEADY_SECRET = "steady-client-secret-0123456"


def two_clients(slapd: Slapd, rotating_secret: str, **overrides: object) -> dict:
    config = base_config(slapd, **overrides)
    config["clients"] = [
        {"name": "steady", "address": "127.0.0.2", "secret": STEADY_SECRET},
        {"name": "rotating", "address": "127.0.0.4", "secret": rotating_secret},
    ]
    config["otp"] = {"mode": "auto", "allow_password_only": True}
    return config


def new_directory_user(slapd: Slapd, prefix: str) -> LdapUser:
    user = LdapUser(f"{prefix}{random.randrange(10**9)}", f"pw-{prefix}-Secret")
    slapd.add_users([user])
    return user


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- reload under load ------------------------------------------------------------------------


def test_reload_under_load_loses_no_reply_of_the_unchanged_client(slapd: Slapd, tmp_path):
    d = RadmfaDaemon(tmp_path / "radmfa", two_clients(slapd, "rotating-secret-0-abcdefgh"))
    d.start()
    steady_user = new_directory_user(slapd, "steady")
    rotating_user = new_directory_user(slapd, "rotating")
    tokened = Enrolled(d, slapd)  # gets an Access-Challenge: shows the OTP prompt in force
    stop = threading.Event()
    results: list[int | None] = []
    errors: list[BaseException] = []

    def send_continuously() -> None:
        client = RadiusTestClient(d.port, STEADY_SECRET.encode(), source="127.0.0.2")
        try:
            while not stop.is_set():
                reply = client.auth(steady_user.uid, steady_user.password, timeout=5)
                results.append(None if reply is None else reply.code)
        except BaseException as e:  # a reply that fails verification is a wrong reply
            errors.append(e)
        finally:
            client.close()

    senders = [threading.Thread(target=send_continuously) for _ in range(4)]
    for sender in senders:
        sender.start()
    try:
        for round_ in range(1, 5):
            deadline_poll(lambda r=round_: len(results) >= 10 * r, 20, what="steady traffic")
            secret = f"rotating-secret-{round_}-abcdefgh"
            config = two_clients(slapd, secret)
            config["listen"], config["store"] = d.config["listen"], d.config["store"]
            config["otp"]["challenge_prompt"] = f"Code, round {round_}: "
            d.write_config(config)
            d.signal(signal.SIGHUP)
            d.wait_for_log("configuration reloaded", count=round_)
            rotating = RadiusTestClient(d.port, secret.encode(), source="127.0.0.4")
            stale = RadiusTestClient(
                d.port, f"rotating-secret-{round_ - 1}-abcdefgh".encode(), source="127.0.0.4"
            )
            try:
                reply = rotating.auth(rotating_user.uid, rotating_user.password)
                assert reply is not None and reply.code == ACCEPT
                challenge = rotating.auth(tokened.name, tokened.password)
                assert challenge.messages == [f"Code, round {round_}: "]  # new OTP settings
                assert stale.auth(rotating_user.uid, rotating_user.password, timeout=0.5) is None
            finally:
                rotating.close()
                stale.close()
    finally:
        stop.set()
        for sender in senders:
            sender.join(30)
        assert d.stop() == 0
    assert not errors, errors
    assert len(results) >= 40
    wrong = [code for code in results if code != ACCEPT]
    rejected = [line for line in d.log().splitlines() if "reject" in line.lower()]
    assert not wrong, (wrong, len(results), rejected[-10:])


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_after_known_traffic(slapd: Slapd, tmp_path):
    http_port = free_port("tcp")
    config = base_config(slapd, metrics={"listen": f"127.0.0.1:{http_port}"})
    d = RadmfaDaemon(tmp_path / "radmfa", config)
    d.start()
    client = RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        user = Enrolled(d, slapd)
        assert client.auth(user.name, user.password + user.code()).code == ACCEPT
        wrong = f"{(int(user.code()) + 5) % 10**6:06d}"
        assert client.auth(user.name, user.password + wrong).code == REJECT
        assert client.auth("nobody-here", "some-password").code == REJECT  # no token
        client.send_raw(b"\x01\x02\x00\x05garbage")  # malformed: the length is a lie
        # A retransmission: the same packet twice.
        packet = build_request(STRICT_SECRET.encode(), user.name, "x" * 10).RequestPacket()
        client.send_raw(packet)
        assert client.receive_raw(5) is not None
        client.send_raw(packet)
        assert client.receive_raw(5) is not None

        samples = deadline_poll(
            lambda: (
                (s := scrape(http_port))
                and value(s, "radmfa_radius_packets_total", kind="duplicates") >= 1
                and s
            ),
            10,
            what="the duplicate in the metrics",
        )
        assert value(samples, "radmfa_requests_total", client="strict", outcome="accept") == 1
        assert value(samples, "radmfa_requests_total", client="strict", outcome="reject") == 3
        # auto mode: a tail that is no valid code makes the whole field the password.
        assert value(samples, "radmfa_rejects_total", reason="bad_password") == 2
        assert value(samples, "radmfa_rejects_total", reason="no_token") == 1
        assert value(samples, "radmfa_factor_uses_total", factor="totp", method="append") == 1
        assert value(samples, "radmfa_radius_packets_total", kind="malformed") == 1
        assert value(samples, "radmfa_radius_packets_total", kind="duplicates") == 1
        assert value(samples, "radmfa_radius_packets_total", kind="accepts") == 1
        assert value(samples, "radmfa_request_duration_seconds_count") == 4
        checks = "radmfa_directory_checks_total"
        assert value(samples, checks, server=slapd.url, outcome="ok") == 1
        assert value(samples, checks, server=slapd.url, outcome="invalid_credentials") == 2
        binds = "radmfa_directory_request_duration_seconds_count"
        assert value(samples, binds, server=slapd.url) == 3  # no token: no bind
        assert value(samples, "radmfa_locked_users") == 0
        assert value(samples, "radmfa_store_errors_total", operation="advance_step") == 0
    finally:
        client.close()
        assert d.stop() == 0


def test_metrics_with_workers_are_the_sum_over_workers(slapd: Slapd, tmp_path):
    http_port = free_port("tcp")
    config = base_config(slapd, metrics={"listen": f"127.0.0.1:{http_port}"})
    config["radius"] = {"reject_delay": 0, "workers": 2}
    d = RadmfaDaemon(tmp_path / "radmfa", config)
    d.start()
    try:
        clients = [
            RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3") for _ in range(24)
        ]
        for client in clients:
            assert client.auth("no-token-user", "password").code == REJECT
            client.close()
        samples = deadline_poll(
            lambda: (
                (s := scrape(http_port))
                and value(s, "radmfa_radius_packets_total", kind="rejects") >= 24
                and s
            ),
            15,
            what="both workers' counts in the supervisor's metrics",
        )
        assert value(samples, "radmfa_requests_total", client="strict", outcome="reject") == 24
        assert value(samples, "radmfa_radius_packets_total", kind="received") == 24
        assert value(samples, "radmfa_rejects_total", reason="no_token") == 24
        deciders = set(re.findall(r"\[(w\d)\] info radmfa.decision: .*no-token-user", d.log()))
        assert deciders == {"w0", "w1"}  # 24 source ports on one worker: odds of 2**-23
    finally:
        assert d.stop() == 0


# -- JSON logs and credentials ----------------------------------------------------------------


def test_json_logs_carry_decision_fields_and_no_secret(slapd: Slapd, tmp_path):
    d = RadmfaDaemon(tmp_path / "radmfa", base_config(slapd))
    d.serve_args = ["--log-format", "json"]
    d.start()
    client = RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        user = Enrolled(d, slapd)
        code = user.code()
        assert client.auth(user.name, user.password + code).code == ACCEPT
        d.wait_for_log(f'"user": "{user.name}"')
    finally:
        client.close()
        assert d.stop() == 0
    records = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "namespace", "message"} <= r.keys() for r in records)
    decision = next(r for r in records if r.get("user") == user.name)
    assert decision["namespace"] == "radmfa.decision"
    assert decision["decision"] == "accept" and decision["reason"] == "ok"
    assert decision["client"] == "strict" and decision["factor"] == "totp"
    assert decision["method"] == "append" and isinstance(decision["ms"], float)
    text = d.log()
    for needle in (user.password, user.secret, STRICT_SECRET, code):
        assert needle not in text


def test_systemd_credentials_directory_is_honoured(slapd: Slapd, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "strict-secret").write_text(STRICT_SECRET + "\n")
    config = base_config(slapd)
    config["clients"] = [
        {"name": "strict", "address": "127.0.0.0/8", "secret_credential": "strict-secret"}
    ]
    d = RadmfaDaemon(tmp_path / "radmfa", config)

    # Outside systemd (no $CREDENTIALS_DIRECTORY) the config names the line and the fix.
    done = d.cli("check-config")
    assert done.returncode == 2
    assert "radmfa.yaml:4: clients[0].secret_credential:" in done.stderr
    assert "$CREDENTIALS_DIRECTORY is not set" in done.stderr
    assert "LoadCredential=strict-secret:" in done.stderr

    d.extra_env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    d.start()
    client = RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        user = Enrolled(d, slapd)
        assert client.auth(user.name, user.password + user.code()).code == ACCEPT
    finally:
        client.close()
        assert d.stop() == 0
    os.unlink(credentials / "strict-secret")
    done = d.cli("check-config")
    assert done.returncode == 2
    assert "credential 'strict-secret' is not in $CREDENTIALS_DIRECTORY" in done.stderr
