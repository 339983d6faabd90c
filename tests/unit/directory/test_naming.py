"""The naming check of search-then-bind: an entry has one name under radmfa's identity rule,
and only that name logs in to it. An entry that answers to two names (a filter comparing
several attributes, a naming attribute with several values) would otherwise give one account
two lockout counters, two token sets and two disable flags."""

from __future__ import annotations

import pytest

from radmfa.directory.naming import entry_name_mismatch, naming_attributes, rdn_values

PEOPLE = "ou=people,dc=example,dc=org"
UID_OR_MAIL = naming_attributes("(&(objectClass=person)(|(uid={username})(mail={username})))")


def test_the_filter_names_its_attributes_in_order():
    assert UID_OR_MAIL == ("uid", "mail")


def test_an_entry_is_found_by_its_own_name():
    attributes = {"uid": ["alice"], "mail": ["alice@example.org"]}
    assert entry_name_mismatch(f"uid=alice,{PEOPLE}", attributes, UID_OR_MAIL, "ALICE") is None


def test_an_entry_found_by_another_attribute_of_the_filter_is_refused():
    """``alice@example.org`` finds alice's entry through ``mail``; its state would be keyed
    ``alice@example.org``: no tokens, no lock, not disabled."""
    attributes = {"uid": ["alice"], "mail": ["alice@example.org"]}
    found = entry_name_mismatch(f"uid=alice,{PEOPLE}", attributes, UID_OR_MAIL, "alice@example.org")
    assert found == "alice"


def test_without_the_name_in_the_rdn_the_first_attribute_of_the_filter_names_the_entry():
    attributes = {"uid": ["alice"], "mail": ["alice@example.org"]}
    dn = f"cn=Alice Smith,{PEOPLE}"
    assert entry_name_mismatch(dn, attributes, UID_OR_MAIL, "alice") is None
    assert entry_name_mismatch(dn, attributes, UID_OR_MAIL, "alice@example.org") == "alice"


def test_an_entry_without_the_first_attribute_is_named_by_the_next():
    attributes = {"mail": ["svc@example.org"]}
    dn = f"cn=svc,{PEOPLE}"
    assert entry_name_mismatch(dn, attributes, UID_OR_MAIL, "svc@example.org") is None


def test_an_entry_with_several_names_outside_its_rdn_is_refused_under_each():
    """Values of an attribute have no order: no name of such an entry is its own."""
    attributes = {"uid": ["alice", "asmith"]}
    dn = f"cn=Alice Smith,{PEOPLE}"
    for name in ("alice", "asmith"):
        assert entry_name_mismatch(dn, attributes, ("uid",), name) is not None


def test_the_rdn_value_names_an_entry_with_alias_values():
    attributes = {"uid": ["alice", "asmith"]}
    dn = f"uid=alice,{PEOPLE}"
    assert entry_name_mismatch(dn, attributes, ("uid",), "alice") is None
    assert entry_name_mismatch(dn, attributes, ("uid",), "asmith") == "alice"


def test_values_that_are_one_name_under_the_identity_rule_are_one_name():
    attributes = {"uid": ["alice", "Alice", "\uff41lice"]}
    dn = f"cn=Alice Smith,{PEOPLE}"
    assert entry_name_mismatch(dn, attributes, ("uid",), "alice") is None


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
    assert rdn_values(r"uid=a\2Cb\,c,dc=x", "uid") == ["a,b,c"]
    assert rdn_values('uid="quoted, name",dc=x', "uid") == ["quoted, name"]
    assert rdn_values("uid= padded ,dc=x", "uid") == ["padded"]


def test_an_rdn_value_in_ber_form_gives_no_rdn_answer():
    """``uid=#0403626f62`` is bob, BER-encoded: never read as a name (nor as raw bytes that
    may happen to spell one); the entry's attributes name it instead."""
    assert rdn_values("uid=#0403626f62,ou=people,dc=x", "uid") == []
    assert entry_name_mismatch("uid=#0403626f62,dc=x", {"uid": ["bob"]}, ("uid",), "bob") is None
    assert entry_name_mismatch("uid=#0403626f62,dc=x", {"uid": ["eve"]}, ("uid",), "bob") == "eve"


def test_a_directory_spelling_our_rule_does_not_equate_is_refused():
    # The directory may equate names our rule keeps apart; the entry's name decides.
    assert entry_name_mismatch("uid=alice,ou=p", {}, ("uid",), "al1ce") == "alice"
    assert entry_name_mismatch("uid=\uff41lice,ou=p", {}, ("uid",), "alice") is None


def test_no_naming_attribute_means_no_check():
    assert entry_name_mismatch("cn=x", {}, (), "anyone") is None
