"""One identity per person: the canonical user name and its realm-stripping option."""

from __future__ import annotations

import pytest

from radmfa.auth.identity import canonical_user, store_key
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
