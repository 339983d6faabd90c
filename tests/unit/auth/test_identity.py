"""One identity per person: the canonical user name and its realm-stripping option."""

from __future__ import annotations

import pytest

from radmfa.auth.identity import NameProblem, canonical_user, check_user, name_key, store_key
from radmfa.config import ConfigError, parse_config


@pytest.mark.parametrize(
    ("raw", "plain", "stripped"),
    [
        (b"alice", "alice", "alice"),
        (b"  Alice ", "Alice", "Alice"),
        (b"CORP\\alice", "CORP\\alice", "alice"),
        (b"alice@corp.example", "alice@corp.example", "alice"),
        (b"CORP\\alice@corp.example", "CORP\\alice@corp.example", "alice"),
        (b"a@b@c", "a@b@c", "a@b"),
        (b"@corp", "@corp", None),
        (b"CORP\\", "CORP\\", None),
        (b"alice\x00@x", None, None),
        (b"\xffalice", None, None),
    ],
)
def test_canonical_user(raw: bytes, plain: str | None, stripped: str | None):
    assert canonical_user(raw) == plain
    assert canonical_user(raw, strip_realm=True) == stripped


def test_every_ad_name_form_shares_one_store_key_when_stripping():
    forms = [b"Alice", b"CORP\\alice", b"alice@CORP.EXAMPLE", b" ALICE "]
    keys = {store_key(canonical_user(f, strip_realm=True) or "") for f in forms}
    assert keys == {"alice"}


HEAD = "clients:\n  - {name: a, address: 10.0.0.0/8, secret: 'long-enough-secret-1'}\n"
HEAD += "local_users: {path: users}\n"


def test_usernames_section_parses_and_defaults_off():
    assert parse_config(HEAD).usernames.strip_realm is False
    assert parse_config(HEAD + "usernames: {strip_realm: true}\n").usernames.strip_realm is True


def test_usernames_section_rejects_non_booleans_and_unknown_keys():
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + "usernames:\n  strip_realm: 'yes'\n  lowercase: true\n")
    problems = "\n".join(caught.value.problems)
    assert "usernames.strip_realm" in problems
    assert "usernames.lowercase: unknown key" in problems


# -- one identity per account: the spellings a directory binds as one account -----------------

FULLWIDTH_ALICE = "\uff41\uff4c\uff49\uff43\uff45"


@pytest.mark.parametrize(
    "spelling",
    [
        "alice",
        "ALICE",
        FULLWIDTH_ALICE,
        "a\uff4cice",  # one fullwidth letter
        "\u00a0alice\u3000",  # no-break space, ideographic space
        "\u212blice".replace("\u212b", "a"),
    ],
)
def test_spellings_of_one_account_share_one_store_key(spelling: str):
    user = check_user(spelling.encode())
    assert isinstance(user, str)
    assert store_key(user) == "alice"


def test_inner_white_space_collapses_to_one_space():
    for raw in ("dave  smith", "dave\u00a0smith", "dave \u2003 smith", " dave smith "):
        user = check_user(raw.encode())
        assert user == "dave smith" and store_key(user) == "dave smith"


@pytest.mark.parametrize("raw", ["AL\u0130CE", "stra\u00dfe", "\u0390x", "\u01f0"])
def test_names_without_a_one_to_one_case_folding_are_unsafe(raw: str):
    assert check_user(raw.encode()) is NameProblem.UNSAFE
    assert canonical_user(raw.encode()) is None


@pytest.mark.parametrize("raw", [b"ali\tce", b"ali\x00ce", "ali\u200bce".encode(), b"", b"\xff"])
def test_control_format_and_undecodable_names_are_invalid(raw: bytes):
    assert check_user(raw) is NameProblem.INVALID


def test_the_key_is_stable_under_the_rule_itself():
    for raw in ("Alice", FULLWIDTH_ALICE, "\u01c4ok", "\ufb01le", "\u2160x"):
        user = check_user(raw.encode())
        assert isinstance(user, str)
        key = store_key(user)
        again = check_user(key.encode())
        assert isinstance(again, str) and store_key(again) == key


def test_name_key_folds_policy_names_like_user_names():
    assert name_key(" " + FULLWIDTH_ALICE.upper() + " ") == "alice"
    assert name_key("Dave   Smith") == "dave smith"
