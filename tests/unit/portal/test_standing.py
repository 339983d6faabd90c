"""A portal session never outlives the rights it was given: help-desk pages end with the
group membership, every session with its user's standing (disabled, locked) and with a
reset. Each test fails on a portal without the rule it names."""

from __future__ import annotations

from radmfa.admin.actor import cli_actor
from radmfa.admin.users import change_status, reset_user
from tests.unit.portal.test_helpdesk import act, member
from tests.unit.portal.test_selfservice import signed_in
from tests.unit.portal.world import World

# -- help-desk rights are the directory's, now -----------------------------------------------


def test_a_member_who_left_the_helpdesk_group_loses_the_pages_at_the_next_request():
    world = World()
    hank = member(world)
    assert hank.get("/helpdesk").status == 200
    world.directory.groups["hank"] = []  # moved to another team, session still open
    assert hank.get("/helpdesk").status == 403
    hank.get("/")
    refused = hank.post(
        "/helpdesk/act", {"user": "alice", "action": "disable", "reason": "ticket 7"}
    )
    assert refused.status == 403
    assert world.store.user_settings("alice").status == "enabled"
    assert b'href="/helpdesk"' not in hank.get("/").body


def test_a_failed_group_lookup_mid_session_refuses_the_helpdesk_pages():
    world = World()
    hank = member(world)
    world.directory.unavailable = True
    assert hank.get("/helpdesk").status == 403
    world.directory.unavailable = False
    assert hank.get("/helpdesk").status == 200


# -- a session ends with its user's standing -------------------------------------------------


def test_a_session_ends_when_the_help_desk_disables_its_user():
    world = World()
    alice = signed_in(world)  # or a thief's browser holding alice's session
    act(member(world), "alice", "disable", "compromised")
    page = alice.get("/")
    assert page.status == 303 and page.headers["Location"] == "/signin"
    assert world.store.user_settings("alice").status == "disabled"


def test_a_session_ends_when_an_admin_disables_its_user_on_the_command_line():
    world = World()
    alice = signed_in(world)
    change_status(world.store, cli_actor("left"), "alice", "disable", now=world.clock.seconds())
    assert alice.get("/backup").headers["Location"] == "/signin"
    assert not [s for s in world.portal_sessions().values() if s.user == "alice"]


def test_a_session_ends_when_its_user_is_reset_so_it_cannot_enroll_a_new_app():
    """The user reports a stolen phone; the help desk resets them. The thief's session (taken
    with that phone) must not go on to enroll the thief's own app in the clean account."""
    world = World()
    thief = signed_in(world)
    act(member(world), "alice", "reset", "phone stolen")
    assert world.store.list_tokens("alice") == []
    page = thief.get("/enroll/app")
    assert page.status == 303 and page.headers["Location"] == "/signin"
    assert world.store.list_tokens("alice") == []


def test_reset_on_the_command_line_ends_the_users_sessions_too():
    world = World()
    alice = signed_in(world)
    reset_user(world.store, cli_actor("phone stolen"), "alice", now=world.clock.seconds())
    assert alice.get("/").headers["Location"] == "/signin"


def test_a_session_of_a_user_locked_meanwhile_is_refused():
    """Failures over RADIUS lock the user (the same counters): their portal session is
    refused like a new login would be, and stays refused while the lock holds."""
    world = World()
    alice = signed_in(world)
    for _ in range(3):  # lockout.max_failures: 3
        world.radius("alice", "wrong-pw")
    assert world.store.lock_state("alice").is_locked(world.clock.seconds())
    page = alice.get("/")
    assert page.status == 303 and page.headers["Location"] == "/signin"


def test_a_session_of_another_user_lives_on():
    world = World()
    alice = signed_in(world)
    hank = member(world)
    act(hank, "bob", "disable", "left")
    assert alice.get("/").status == 200
    assert hank.get("/helpdesk").status == 200
