"""The entry a user search found must be named by the user name (radmfa.directory.naming)."""

from __future__ import annotations

import pytest

from radmfa.directory.naming import entry_name_mismatch, naming_attributes, rdn_values


@pytest.mark.parametrize(
    ("user_filter", "names"),
    [
        ("(uid={username})", ("uid",)),
        ("(&(objectClass=person)(sAMAccountName={username}))", ("sAMAccountName",)),
        ("(|(uid={username})(mail={username}))", ("uid", "mail")),
        ("(|(UID={username})(uid={username}))", ("UID",)),
        ("(cn=*{username}*)", ()),  # no equality with the whole name: no check
        ("(2.5.4.3={username})", ("2.5.4.3",)),
    ],
)
def test_naming_attributes_are_those_compared_with_the_whole_name(user_filter, names):
    assert naming_attributes(user_filter) == names


def test_rdn_values_unescape_and_stop_at_the_first_rdn():
    assert rdn_values(r"uid=dave\20smith,ou=people,dc=x", "uid") == ["dave smith"]
    assert rdn_values(r"uid=a\c3\a9,ou=x", "UID") == ["a\u00e9"]
    assert rdn_values("cn=x+uid=bob,ou=people,uid=eve", "uid") == ["bob"]
    assert rdn_values("cn=Alice,ou=x,uid=eve", "uid") == []
    assert rdn_values("not a dn", "uid") == []


def test_the_rdn_names_the_entry_before_any_other_value():
    # A multi-valued uid: the RDN's value is the entry's own name, an alias is not.
    attrs = {"uid": ["alice", "boss"]}
    assert entry_name_mismatch("uid=alice,ou=p", attrs, ("uid",), "Alice") is None
    assert entry_name_mismatch("uid=alice,ou=p", attrs, ("uid",), "boss") == "alice"


def test_without_the_attribute_in_the_rdn_its_values_name_the_entry():
    attrs = {"sAMAccountName": ["alice"]}
    dn = "CN=Alice Smith,OU=Staff,DC=corp"
    assert entry_name_mismatch(dn, attrs, ("sAMAccountName",), "ALICE") is None
    assert entry_name_mismatch(dn, attrs, ("sAMAccountName",), "alic") == "alice"
    assert "no readable" in (entry_name_mismatch(dn, {}, ("sAMAccountName",), "alice") or "")


def test_a_directory_spelling_our_rule_does_not_equate_is_refused():
    # The directory may equate names our rule keeps apart; the entry's name decides.
    assert entry_name_mismatch("uid=alice,ou=p", {}, ("uid",), "al1ce") == "alice"
    assert entry_name_mismatch("uid=\uff41lice,ou=p", {}, ("uid",), "alice") is None


def test_no_naming_attribute_means_no_check():
    assert entry_name_mismatch("cn=x", {}, (), "anyone") is None
