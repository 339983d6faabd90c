"""Wi-Fi (802.1X) through FreeRADIUS in front of radmfa, end to end: eapol_test (the
supplicant of wpa_supplicant) does EAP-TTLS with PAP inside against FreeRADIUS 3.2, whose
inner-tunnel proxies the PAP request to radmfa (contrib/freeradius-eap, as documented).

radmfa runs in append mode for that client: a supplicant cannot answer an Access-Challenge
inside the tunnel, so the code goes after the password."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_daemon import Enrolled, base_config, quoted, radclient
from tests.support.daemon import RadmfaDaemon
from tests.support.freeradius import FreeRadiusFront
from tests.support.slapd import (
    PEOPLE_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    Slapd,
    group_ldif,
    ou_ldif,
)

FRONT_SECRET = "freeradius-front-secret-0042"
GROUPS_DN = f"ou=wifi-groups,{SUFFIX}"


@pytest.fixture(scope="module")
def daemon(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadmfaDaemon]:
    slapd.add_ldif(
        ou_ldif(GROUPS_DN) + group_ldif("wifi-staff", [f"uid=nobody,{PEOPLE_DN}"], GROUPS_DN)
    )
    config = base_config(slapd)
    config["clients"] = [
        {"name": "freeradius", "address": "127.0.0.1/32", "secret": FRONT_SECRET, "mode": "append"}
    ]
    config["otp"] = {"mode": "challenge"}  # the VPNs: append is this client's own
    config["lockout"] = {"max_failures": 10, "duration": "5m"}
    config["ldap"] = {
        "servers": [slapd.url],
        "base_dn": SUFFIX,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "timeout": 2,
        "groups": {"membership": "member", "base_dn": GROUPS_DN},
    }
    config["policy"] = {
        "rules": [
            {
                "name": "wifi-staff",
                "groups": ["wifi-staff"],
                "reply": {
                    "Tunnel-Type": "VLAN",
                    "Tunnel-Medium-Type": "IEEE-802",
                    "Tunnel-Private-Group-Id": "120",
                },
            }
        ]
    }
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-eap"), config)
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def front(
    daemon: RadmfaDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FreeRadiusFront]:
    f = FreeRadiusFront(
        tmp_path_factory.mktemp("freeradius"), radmfa_port=daemon.port, radmfa_secret=FRONT_SECRET
    )
    f.start()
    try:
        yield f
    finally:
        f.stop()


def staff(daemon: RadmfaDaemon, slapd: Slapd) -> Enrolled:
    user = Enrolled(daemon, slapd)
    slapd.modify(
        f"dn: cn=wifi-staff,{GROUPS_DN}\nchangetype: modify\nadd: member\n"
        f"member: uid={user.name},{PEOPLE_DN}\n"
    )
    return user


def test_a_laptop_with_the_code_appended_gets_eap_success_and_its_vlan(daemon, slapd, front):
    user = staff(daemon, slapd)
    ok, out = front.eapol_test(user.name, user.password + user.code())
    assert ok, out[-3000:]
    # radmfa saw the inner identity (not "anonymous"), the access point's NAS-Identifier and
    # the laptop's MAC address (copy_request_to_tunnel), and gave the rule's VLAN back through
    # the tunnel to the access point (use_tunneled_reply).
    daemon.wait_for_log(f'reason=ok user="{user.name}"')
    line = next(x for x in daemon.log().splitlines() if f'reason=ok user="{user.name}"' in x)
    assert 'nas_id="ap-lobby"' in line and 'station="02-00-00-00-00-01"' in line, line
    assert "rule=wifi-staff" in line and "method=append" in line, line
    assert "anonymous" not in daemon.log()
    accept = out[out.index("(Access-Accept)") :]
    assert "Attribute 64 (Tunnel-Type) length=6\n      Value: 0000000d" in accept, accept
    assert "Attribute 81 (Tunnel-Private-Group-Id) length=5\n      Value: 313230" in accept, accept


def test_a_wrong_or_replayed_code_is_eap_failure(daemon, slapd, front):
    user = staff(daemon, slapd)
    ok, out = front.eapol_test(user.name, user.password + "000000")
    assert not ok, out[-2000:]
    code = user.code()
    assert front.eapol_test(user.name, user.password + code)[0]
    ok, out = front.eapol_test(user.name, user.password + code)  # the same code again
    assert not ok, out[-2000:]
    daemon.wait_for_log(f'reason=bad_otp user="{user.name}"')


def test_plain_pap_through_the_proxy_gets_the_vlan_by_group(daemon, slapd, front):
    """A switch or VPN that uses the same FreeRADIUS: its PAP request goes straight to
    radmfa, and the rule's attributes come back through the proxy."""
    member, other = staff(daemon, slapd), Enrolled(daemon, slapd)

    def send(user: Enrolled) -> tuple[str | None, str]:
        attrs = {
            "User-Name": quoted(user.name),
            "User-Password": quoted(user.password + user.code()),
            "Message-Authenticator": "0x00",
        }
        return radclient(front.port, front.secret, attrs)

    reply, out = send(member)
    assert reply == "Access-Accept", out
    assert 'Tunnel-Private-Group-Id:0 = "120"' in out and "Tunnel-Type:0 = VLAN" in out, out
    reply, out = send(other)
    assert reply == "Access-Accept" and "Tunnel" not in out.split("Received", 1)[1], out
