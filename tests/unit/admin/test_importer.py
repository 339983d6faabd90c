"""Bulk token import: formats, defaults, and errors that name the row."""

from __future__ import annotations

import base64
import json

import pytest

from radmfa.admin.importer import ImportError_, build_tokens, read_rows
from radmfa.config import TotpConfig

SECRET = base64.b32encode(b"0123456789abcdefghij").decode()
NOW = 1_800_000_000.0


def tokens_from(text: str, defaults: TotpConfig | None = None):
    return build_tokens(read_rows(text, "in.csv"), defaults or TotpConfig(), NOW)


def test_csv_with_defaults_and_overrides():
    text = (
        "user,type,secret,digits,algorithm,period\n"
        f"Alice,totp,{SECRET},,,\n"
        f"bob,TOTP,{SECRET.lower()},8,sha256,60\n"
    )
    alice, bob = tokens_from(text, TotpConfig(digits=6, period=30))
    assert (alice.user, alice.digits, alice.algorithm, alice.period) == ("alice", 6, "SHA1", 30)
    assert (bob.user, bob.digits, bob.algorithm, bob.period) == ("bob", 8, "SHA256", 60)
    assert alice.secret == b"0123456789abcdefghij"
    assert alice.token_id != bob.token_id


def test_json_list_of_objects():
    text = json.dumps([{"user": "carol", "secret": SECRET, "digits": 8}])
    (carol,) = build_tokens(read_rows(text, "in.json"), TotpConfig(), NOW)
    assert (carol.user, carol.digits) == ("carol", 8)


def test_every_bad_row_is_reported_with_its_line():
    text = (
        "user,secret,digits\n"
        f"ok,{SECRET},6\n"
        "short,JBSWY3DPEHPK3PXP,6\n"
        f",{SECRET},6\n"
        f"dave,{SECRET},seven\n"
        f"eve,{SECRET},5\n"
    )
    with pytest.raises(ImportError_) as caught:
        tokens_from(text)
    problems = caught.value.problems
    assert problems[0].startswith("in.csv:3: the secret has 80 bits")
    assert problems[1] == "in.csv:4: user is required"
    assert problems[2].startswith("in.csv:5: digits must be a whole number")
    assert problems[3].startswith("in.csv:6: digits must be 6 to 10")
    assert len(problems) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,secret\nx,y\n", "missing column(s) user; unknown column(s) name"),
        ('[{"user": "a"', "invalid JSON"),
        ('{"user": "a"}', "expected a JSON list"),
    ],
)
def test_malformed_files(text: str, message: str):
    with pytest.raises(ImportError_, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_rows(text, "in")


def test_unknown_json_field_and_non_object_rows():
    rows = read_rows(json.dumps([{"user": "a", "secret": SECRET, "pin": 1}, 7]), "in.json")
    with pytest.raises(ImportError_) as caught:
        build_tokens(rows, TotpConfig(), NOW)
    assert caught.value.problems == [
        "in.json: entry 1: unknown field(s) pin",
        "in.json: entry 2: expected an object with user, secret, ...",
    ]


def test_realm_stripping_applies_to_imported_user_names():
    text = f"user,secret\nCORP\\\\Dave,{SECRET}\nerin@corp.example,{SECRET}\n"
    rows = read_rows(text, "in.csv")
    users = [t.user for t in build_tokens(rows, TotpConfig(), NOW, strip_realm=True)]
    assert users == ["dave", "erin"]
