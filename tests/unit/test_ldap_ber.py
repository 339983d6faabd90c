"""radmfa.directory.ber against ldap3 + pyasn1: the same bytes out, the same meaning in.

Requests are compared byte for byte with what ldap3 builds and pyasn1 encodes for the same
operation; responses are encoded by pyasn1 and decoded by us. The one deliberate difference:
a true BOOLEAN is ``FF`` (RFC 4511 §5.1) where pyasn1's BER encoder writes ``01``.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from ldap3.operation.bind import bind_operation
from ldap3.operation.search import search_operation
from ldap3.protocol import rfc4511 as asn
from ldap3.utils.conv import escape_filter_chars
from pyasn1.codec.ber import encoder

from radmfa.directory import ber
from radmfa.directory.ber import (
    BerDecodeError,
    FilterError,
    FilterTemplate,
    LdapResult,
    MessageDecoder,
    SearchEntry,
    SearchReference,
    compile_filter,
    decode_message,
)
from radmfa.directory.ldap import build_user_filter

BASE = "dc=example,dc=org"

# -- pyasn1 reference encodings ---------------------------------------------------------------


def pyasn1_message(message_id: int, name: str, op: Any) -> bytes:
    message = asn.LDAPMessage()
    message["messageID"] = asn.MessageID(message_id)
    protocol_op = asn.ProtocolOp()
    protocol_op.setComponentByName(name, op)
    message["protocolOp"] = protocol_op
    return encoder.encode(message)


def pyasn1_search(
    message_id: int, search_filter: str, attributes: list[str] | None = None
) -> bytes:
    request = search_operation(
        BASE, search_filter, 2, 0, attributes or ["1.1"], 2, 3, False, False, True
    )
    return pyasn1_message(message_id, "searchRequest", request)


def ours_search(message_id: int, search_filter: str, attributes: tuple[str, ...] = ()) -> bytes:
    return ber.encode_search_request(
        message_id, BASE, compile_filter(search_filter), attributes, size_limit=2, time_limit=3
    )


def result_op(cls: type, code: int, matched: str = "", diagnostic: str = "", **extra: Any) -> Any:
    op = cls()
    op["resultCode"] = asn.ResultCode(code)
    op["matchedDN"] = asn.LDAPDN(matched)
    op["diagnosticMessage"] = asn.LDAPString(diagnostic)
    if "referrals" in extra:
        referral = asn.Referral()
        for i, uri in enumerate(extra.pop("referrals")):
            referral[i] = asn.URI(uri)
        op["referral"] = referral
    for name, value in extra.items():
        op[name] = value
    return op


def entry_op(dn: str, attributes: dict[str, list[bytes]]) -> Any:
    op = asn.SearchResultEntry()
    op["object"] = asn.LDAPDN(dn)
    attribute_list = asn.PartialAttributeList()
    for i, (name, values) in enumerate(attributes.items()):
        partial = asn.PartialAttribute()
        partial["type"] = asn.AttributeDescription(name)
        vals = asn.Vals()
        for j, value in enumerate(values):
            vals[j] = asn.AttributeValue(value)
        partial["vals"] = vals
        attribute_list[i] = partial
    op["attributes"] = attribute_list
    return op


def reference_op(*uris: str) -> Any:
    op = asn.SearchResultReference()
    for i, uri in enumerate(uris):
        op[i] = asn.URI(uri)
    return op


# -- requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_id", "dn", "password"),
    [
        (1, "uid=alice,ou=people,dc=example,dc=org", b"alice-Password-1"),
        (127, "cn=x", b"x"),
        (128, "cn=\u00fcml\u00e4\u00fct,dc=example", "p\u00e4ss\u20ac".encode()),
        (2**31 - 1, "uid=" + "a" * 300, b"p" * 200),  # long-form lengths
        (65536, "uid=x", bytes(range(256))),
    ],
)
def test_bind_request_matches_pyasn1(message_id, dn, password):
    expected = pyasn1_message(message_id, "bindRequest", bind_operation(3, "SIMPLE", dn, password))
    assert ber.encode_bind_request(message_id, dn, password) == expected


def test_unbind_request_matches_pyasn1():
    assert ber.encode_unbind_request(9) == pyasn1_message(9, "unbindRequest", asn.UnbindRequest())


def test_starttls_request_matches_pyasn1():
    request = asn.ExtendedRequest()
    request["requestName"] = asn.RequestName(ber.STARTTLS_OID)
    expected = pyasn1_message(3, "extendedReq", request)
    assert ber.encode_extended_request(3, ber.STARTTLS_OID) == expected


@pytest.mark.parametrize("message_id", [0, -1, 2**31])
def test_message_ids_out_of_range_are_refused(message_id):
    with pytest.raises(ValueError):
        ber.encode_bind_request(message_id, "uid=x", b"pw")


FILTERS = [
    "(uid=alice)",
    "(uid=)",
    "(objectClass=*)",
    "(cn=dave smith)",
    "(uid=a\\2ab\\28c\\29d\\5ce\\00)",  # every RFC 4515 escape
    "(uid=\\c3\\bc)",  # escaped UTF-8 octets
    "(cn=\u00fcrsula \u20ac \U0001f600)",  # raw UTF-8
    "(cn=a=b~c>d<e:f)",  # operator characters are ordinary inside a value
    "(cn=a*)",
    "(cn=*a)",
    "(cn=*a*)",
    "(cn=a*b*c)",
    "(cn=a*b*c*d*e)",
    "(cn=\\2a*\\2a)",
    "(uidNumber>=1000)",
    "(uidNumber<=99)",
    "(cn~=smith)",
    "(cn;lang-de=x)",
    "(2.5.4.3=numeric oid)",
    "(&(objectClass=person)(uid=alice))",
    "(|(uid=alice)(mail=alice@example.org)(cn=Alice*))",
    "(!(uid=alice))",
    "(&(|(a=1)(!(b=2)))(!(|(c=3)(&(d=4)(e=*)))))",
    "(&(objectCategory=person)(objectClass=user)(sAMAccountName=alice)"
    "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
    "(memberOf:1.2.840.113556.1.4.1941:=cn=vpn,ou=groups,dc=example,dc=org)",
    "(cn:caseExactMatch:=Alice)",
    "(cn:=Alice)",
    "(:caseIgnoreMatch:=alice)",
    "(:2.5.13.2:=alice)",
    "(&" + "(uid=x)" * 40 + ")",  # long-form lengths inside the filter
    "(description=" + "y" * 200 + ")",
]


@pytest.mark.parametrize("search_filter", FILTERS)
def test_search_request_matches_pyasn1(search_filter):
    assert ours_search(7, search_filter) == pyasn1_search(7, search_filter)


@pytest.mark.parametrize(
    "search_filter",
    ["(cn:dn:=x)", "(cn:dn:2.5.13.5:=x)", "(:dn:2.5.13.5:=x)", "(|(cn:DN:=x)(uid=y))"],
)
def test_dn_attributes_is_true_as_ff(search_filter):
    """``:dn:`` is the only BOOLEAN TRUE we write: FF per RFC 4511 §5.1, pyasn1 writes 01."""
    expected = pyasn1_search(7, search_filter.replace(":DN:", ":dn:"))
    assert b"\x84\x01\x01" in expected
    assert ours_search(7, search_filter) == expected.replace(b"\x84\x01\x01", b"\x84\x01\xff")


def test_requested_attributes_match_pyasn1():
    attributes = ["mail", "cn", "memberOf"]
    expected = pyasn1_search(11, "(uid=alice)", attributes)
    assert ours_search(11, "(uid=alice)", tuple(attributes)) == expected


NAMES = [
    "alice",
    "*",
    "adm*",
    "a)(uid=*",
    "x\\",
    "*)(|(uid=*",
    "alice)(uid=*",
    "a\x00b",
    "dave smith",
    "smith, jr",
    "\u00fcrsula\u20ac",
    "=~<>:",
    "\\2a",
    "\U0010fffe",  # the template's own placeholder character, as a user name
]
TEMPLATES = [
    "(uid={username})",
    "(&(objectClass=inetOrgPerson)(|(uid={username})(mail={username})))",
    "(cn=*{username}*)",
    "(cn={username}*x{username})",
    "(sAMAccountName={username})",
    " (uid={username}) ",
    "uid={username}",
    "(memberOf:1.2.840.113556.1.4.1941:={username})",
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_filter_template_equals_escaping_then_parsing(template):
    compiled = FilterTemplate(template, escape_filter_chars)
    for name in NAMES:
        expected = compile_filter(build_user_filter(template, name))
        assert compiled.encode(name) == expected, (template, name)
    if template.strip().startswith("("):
        request = pyasn1_search(1, build_user_filter(template, "a)(uid=*").strip())
        assert ours_search(1, build_user_filter(template, "a)(uid=*").strip()) == request


def test_filter_template_with_a_placeholder_outside_values_falls_back():
    template = FilterTemplate("({username}=x)", escape_filter_chars)
    assert template.encode("cn") == compile_filter("(cn=x)")
    with pytest.raises(FilterError):
        template.encode("c n")


def test_an_injected_name_stays_one_equality_value():
    encoded = FilterTemplate("(uid={username})", escape_filter_chars).encode("*)(uid=*")
    assert encoded == b"\xa3\x0f\x04\x03uid\x04\x08*)(uid=*"


@pytest.mark.parametrize(
    "search_filter",
    [
        "",
        "()",
        "(uid=alice",
        "uid=alice)",
        "(uid=alice))",
        "((uid=alice))",
        "(&)",
        "(|)",
        "(!)",
        "(!(a=1)(b=2))",
        "(=alice)",
        "(uid)",
        "(u id=x)",
        "(1uid=x)",
        "(uid=a(b)",
        "(uid=a\\2)",
        "(uid=a\\zz)",
        "(uid=a\\)",
        "(uid=a\x00b)",
        "(uid=a**b)",
        "(uid~=a*)",
        "(uid>=*)",
        "(:=x)",
        "(:dn:=x)",
        "(cn:dn:rule:extra:=x)",
        "(cn:1.2.:=x)",
        "(uid=\udc80)",
        "(&(uid=x)",
        "(&" * 40 + "(uid=x)" + ")" * 40,
    ],
)
def test_bad_filters_raise_filter_error(search_filter):
    with pytest.raises(FilterError):
        compile_filter(search_filter)


def test_bare_item_gets_its_parentheses():
    assert compile_filter("uid=alice") == compile_filter("(uid=alice)")


# -- responses ----------------------------------------------------------------------------------


def test_bind_response_with_diagnostic_message():
    message = pyasn1_message(
        5,
        "bindResponse",
        result_op(
            asn.BindResponse,
            49,
            "dc=example,dc=org",
            "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e",
        ),
    )
    message_id, response = decode_message(message)
    assert message_id == 5
    assert response == LdapResult(
        ber.BIND_RESPONSE,
        49,
        "dc=example,dc=org",
        "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e",
    )


def test_bind_response_with_referral_and_sasl_credentials():
    op = result_op(asn.BindResponse, 10, referrals=["ldap://a.example/", "ldap://b.example/"])
    op["serverSaslCreds"] = asn.ServerSaslCreds(b"creds")
    _, response = decode_message(pyasn1_message(2**31 - 1, "bindResponse", op))
    assert isinstance(response, LdapResult)
    assert response.code == 10
    assert response.referrals == ("ldap://a.example/", "ldap://b.example/")


def test_search_result_entry_with_attributes():
    attributes = {
        "mail": [b"alice@example.org"],
        "cn": [b"Alice", "\u00c4lice".encode()],
        "jpegPhoto": [bytes(range(256)) * 3],
        "empty": [],
    }
    dn = "uid=\u00e4lice,ou=people,dc=example,dc=org"
    message_id, response = decode_message(
        pyasn1_message(300, "searchResEntry", entry_op(dn, attributes))
    )
    assert message_id == 300
    assert response == SearchEntry(dn, tuple((k, tuple(v)) for k, v in attributes.items()))


def test_search_result_done_and_reference():
    done = result_op(asn.SearchResultDone, 4, diagnostic="size limit")
    _, response = decode_message(pyasn1_message(8, "searchResDone", done))
    assert response == LdapResult(ber.SEARCH_RESULT_DONE, 4, "", "size limit")
    ref = reference_op("ldap://dc2.example/DC=example,DC=org", "ldap://dc3.example/")
    _, response = decode_message(pyasn1_message(8, "searchResRef", ref))
    assert response == SearchReference(
        ("ldap://dc2.example/DC=example,DC=org", "ldap://dc3.example/")
    )


def test_extended_response_names():
    op = result_op(asn.ExtendedResponse, 0)
    op["responseName"] = asn.ResponseName(ber.STARTTLS_OID)
    _, response = decode_message(pyasn1_message(1, "extendedResp", op))
    assert response == LdapResult(ber.EXTENDED_RESPONSE, 0, "", "", response_name=ber.STARTTLS_OID)
    notice = result_op(asn.ExtendedResponse, 52, diagnostic="going down")
    notice["responseName"] = asn.ResponseName(ber.NOTICE_OF_DISCONNECTION_OID)
    message_id, response = decode_message(pyasn1_message(0, "extendedResp", notice))
    assert message_id == 0
    assert isinstance(response, LdapResult)
    assert response.response_name == ber.NOTICE_OF_DISCONNECTION_OID


def test_controls_after_the_operation_are_skipped():
    message = pyasn1_message(4, "bindResponse", result_op(asn.BindResponse, 0))
    control = bytes.fromhex("a01030 0e 0409312e322e332e34 010100 0400".replace(" ", ""))
    body = message[2:] + control
    _, response = decode_message(bytes((0x30, len(body))) + body)
    assert isinstance(response, LdapResult) and response.code == 0


def test_active_directory_style_four_octet_lengths():
    """AD writes every length as 84 xx xx xx xx; non-minimal but valid BER."""

    def tlv(tag: int, content: bytes) -> bytes:
        return bytes((tag, 0x84)) + len(content).to_bytes(4, "big") + content

    result = tlv(0x0A, b"\x31") + tlv(0x04, b"") + tlv(0x04, b"data 775")
    message = tlv(0x30, tlv(0x02, b"\x02") + tlv(0x61, result))
    assert decode_message(message) == (2, LdapResult(ber.BIND_RESPONSE, 49, "", "data 775"))
    assert MessageDecoder().feed(message) == [decode_message(message)]


# -- the incremental decoder --------------------------------------------------------------------

STREAM = [
    pyasn1_message(1, "bindResponse", result_op(asn.BindResponse, 0)),
    pyasn1_message(2, "searchResEntry", entry_op("uid=a,dc=x", {"cn": [b"a" * 300]})),
    pyasn1_message(2, "searchResRef", reference_op("ldap://x/")),
    pyasn1_message(2, "searchResDone", result_op(asn.SearchResultDone, 0)),
    pyasn1_message(3, "bindResponse", result_op(asn.BindResponse, 49, diagnostic="x" * 200)),
]


def test_decoder_gives_each_message_once_at_every_split():
    data = b"".join(STREAM)
    expected = [decode_message(m) for m in STREAM]
    for cut in range(len(data) + 1):
        decoder = MessageDecoder()
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert got == expected, cut
        assert decoder.buffered == 0


def test_decoder_byte_by_byte():
    data = b"".join(STREAM)
    decoder = MessageDecoder()
    got = []
    for i in range(len(data)):
        got += decoder.feed(data[i : i + 1])
    assert got == [decode_message(m) for m in STREAM]


def test_decoder_refuses_an_oversized_message_from_its_header():
    decoder = MessageDecoder(max_size=1000)
    with pytest.raises(BerDecodeError, match="exceeds"):
        decoder.feed(b"\x30\x82\x03\xe9")  # 1001 octets announced, none sent
    with pytest.raises(BerDecodeError):  # stays failed
        decoder.feed(STREAM[0])
    huge = MessageDecoder()
    with pytest.raises(BerDecodeError):
        huge.feed(b"\x30\x84\x7f\xff\xff\xff")


def test_decoder_buffers_a_partial_message_only():
    decoder = MessageDecoder()
    assert decoder.feed(STREAM[1][:-1]) == []
    assert decoder.buffered == len(STREAM[1]) - 1
    assert len(decoder.feed(STREAM[1][-1:])) == 1


BAD_MESSAGES = {
    "not a sequence": b"\x31\x03\x02\x01\x01",
    "indefinite length": b"\x30\x80\x02\x01\x01\x61\x07\x0a\x01\x00\x04\x00\x04\x00\x00\x00",
    "five length octets": b"\x30\x85\x00\x00\x00\x00\x05\x02\x01\x01\x42\x00",
    "inner element too long": b"\x30\x05\x02\x09\x01\x61\x00",
    "empty message id": b"\x30\x0b\x02\x00\x61\x07\x0a\x01\x00\x04\x00\x04\x00",
    "negative message id": b"\x30\x0c\x02\x01\xff\x61\x07\x0a\x01\x00\x04\x00\x04\x00",
    "message id too large": bytes.fromhex("3010 0205 00ffffffff 6107 0a0100 0400 0400"),
    "request tag": b"\x30\x05\x02\x01\x01\x42\x00",
    "unknown op": b"\x30\x05\x02\x01\x01\x7f\x00",
    "multi-octet tag": b"\x30\x06\x02\x01\x01\x7f\x81\x00",
    "missing diagnostic": b"\x30\x0a\x02\x01\x01\x61\x05\x0a\x01\x00\x04\x00",
    "string where code": b"\x30\x0c\x02\x01\x01\x61\x07\x04\x01\x00\x04\x00\x04\x00",
    "trailing garbage": b"\x30\x0e\x02\x01\x01\x61\x07\x0a\x01\x00\x04\x00\x04\x00\x04\x00",
    "empty reference": b"\x30\x05\x02\x01\x01\x73\x00",
    "dn not utf-8": b"\x30\x0b\x02\x01\x01\x64\x06\x04\x02\xff\xfe\x30\x00",
    "attribute not a set": bytes.fromhex("3013 020101 640e 040161 3009 3007 040162 3002 0400"),
    "value not a string": bytes.fromhex("3013 020101 640e 040161 3009 3007 040162 3102 0200"),
    "truncated in an element": b"\x30\x04\x02\x01\x01\x61",
}


@pytest.mark.parametrize("data", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_malformed_messages_raise_decode_errors(data):
    with pytest.raises(BerDecodeError):
        MessageDecoder().feed(data)


def test_truncated_messages_are_errors_when_complete_and_waits_otherwise():
    message = STREAM[1]
    for cut in range(1, len(message)):
        assert MessageDecoder().feed(message[:cut]) == []  # waits: the header allows more
        with pytest.raises(BerDecodeError):
            decode_message(message[:cut])


def test_fuzz_only_ever_raises_decode_errors():
    rng = random.Random(4511)
    seeds = [*STREAM, *BAD_MESSAGES.values()]
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            if action < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif action < 0.7 and data:
                del data[rng.randrange(len(data)) :]
            elif action < 0.85:
                data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randint(1, 4))
            else:
                data += rng.choice(seeds)
        decoder = MessageDecoder(max_size=4096)
        try:
            for message in decoder.feed(bytes(data)):
                assert isinstance(message[1], LdapResult | SearchEntry | SearchReference)
        except BerDecodeError:
            pass
    for _ in range(5000):
        try:
            MessageDecoder().feed(rng.randbytes(rng.randint(0, 64)))
        except BerDecodeError:
            pass


def test_filter_fuzz_only_ever_raises_filter_errors():
    rng = random.Random(4515)
    alphabet = "()&|!=*~<>:\\0123456789abcdefuid .;-\x00\u00fc"
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        try:
            compile_filter(text)
        except FilterError:
            pass
