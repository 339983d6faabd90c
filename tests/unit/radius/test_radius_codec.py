"""Wire-format rules: known answers from RFC 2865, the R-02 malformed corpus, reply signing."""

from __future__ import annotations

import random

import pytest
from pyrad.packet import AuthPacket

from radmfa.auth.model import AuthMethod
from radmfa.radius import codec
from radmfa.radius.codec import (
    ACCESS_ACCEPT,
    ACCESS_CHALLENGE,
    ACCESS_REJECT,
    STATUS_SERVER,
    Attr,
    DecodedRequest,
    InvalidPassword,
    MalformedPacket,
)

SECRET = b"xyzzy5461"
RFC_AUTHENTICATOR = bytes.fromhex("0f403f9473978057bd83d5cb98f4227a")
RFC_HIDDEN = bytes.fromhex("0dbe708d93d413ce3196e43f782a0aee")
# RFC 2865 section 7.1: the complete Access-Request and its Access-Accept.
RFC_REQUEST = bytes.fromhex(
    "01000038"
    "0f403f9473978057bd83d5cb98f4227a"
    "01066e656d6f"
    "02120dbe708d93d413ce3196e43f782a0aee"
    "0406c0a80110"
    "050600000003"
)
RFC_ACCEPT = bytes.fromhex(
    "0200002686fe220e7624ba2a1005f6bf9b55e0b20606000000010f06000000000e06c0a80103"
)
AUTH = bytes(range(16))


def attr(kind: int, value: bytes) -> bytes:
    return bytes((kind, len(value) + 2)) + value


def raw(code: int, body: bytes, *, length: int | None = None, trailer: bytes = b"") -> bytes:
    """A packet built byte by byte, so it can lie about anything."""
    size = 20 + len(body) if length is None else length
    return bytes((code, 7)) + size.to_bytes(2, "big") + AUTH + body + trailer


def decode(packet: bytes) -> DecodedRequest:
    return codec.decode_request(packet, SECRET, "nas1", "192.0.2.1")


def request_for(**kwargs: object) -> DecodedRequest:
    return decode(codec.encode_request(SECRET, **kwargs))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# RFC 2865 known answers


def test_rfc2865_password_known_answer() -> None:
    assert codec.encrypt_password(b"arctangent", SECRET, RFC_AUTHENTICATOR) == RFC_HIDDEN
    assert codec.decrypt_password(RFC_HIDDEN, SECRET, RFC_AUTHENTICATOR) == b"arctangent"


def test_rfc2865_request_decodes_to_the_documented_values() -> None:
    decoded = decode(codec.validate_datagram(RFC_REQUEST))
    assert decoded.code == codec.ACCESS_REQUEST
    assert decoded.authenticator == RFC_AUTHENTICATOR
    assert decoded.request.user_name == b"nemo"
    assert decoded.request.password == b"arctangent"
    assert decoded.request.method is AuthMethod.PAP
    assert decoded.request.nas_ip_address == "192.168.1.16"
    assert decoded.message_authenticator is False


def test_rfc2865_response_authenticator_known_answer() -> None:
    assert codec.verify_reply(
        RFC_ACCEPT, RFC_AUTHENTICATOR, SECRET, require_message_authenticator=False
    )
    tampered = RFC_ACCEPT[:-1] + b"\x04"
    assert not codec.verify_reply(
        tampered, RFC_AUTHENTICATOR, SECRET, require_message_authenticator=False
    )


# ---------------------------------------------------------------------------------------------
# User-Password


@pytest.mark.parametrize("size", [1, 15, 16, 17, 31, 32, 33, 127, 128])
def test_password_round_trips_at_block_boundaries(size: int) -> None:
    password = bytes((0xFF - i) % 256 or 1 for i in range(size))  # includes 0xFF, never NUL
    hidden = codec.encrypt_password(password, SECRET, AUTH)
    assert len(hidden) == max(16, -(-size // 16) * 16)
    assert codec.decrypt_password(hidden, SECRET, AUTH) == password


def test_password_keeps_utf8_and_embedded_nul_bytes_exactly() -> None:
    for password in ("pässwörd€".encode(), b"ab\x00cd", b"\xff\xfe"):
        hidden = codec.encrypt_password(password, SECRET, AUTH)
        assert codec.decrypt_password(hidden, SECRET, AUTH) == password


def test_password_of_a_wrong_secret_stays_bytes_not_repaired() -> None:
    hidden = codec.encrypt_password(b"secret", SECRET, AUTH)
    garbage = codec.decrypt_password(hidden, b"other", AUTH)
    assert isinstance(garbage, bytes) and garbage != b"secret"


@pytest.mark.parametrize("size", [0, 8, 15, 17, 33, 144, 160])
def test_hidden_password_with_impossible_length_is_invalid(size: int) -> None:
    with pytest.raises(InvalidPassword):
        codec.decrypt_password(bytes(size), SECRET, AUTH)


def test_password_longer_than_128_bytes_cannot_be_hidden() -> None:
    with pytest.raises(InvalidPassword):
        codec.encrypt_password(b"x" * 129, SECRET, AUTH)


@pytest.mark.parametrize("size", [0, 17, 144])
def test_decode_flags_invalid_user_password_instead_of_failing(size: int) -> None:
    decoded = decode(raw(1, attr(Attr.USER_NAME, b"alice") + attr(Attr.USER_PASSWORD, bytes(size))))
    assert decoded.password_invalid is True
    assert decoded.request.password is None
    assert decoded.request.method is AuthMethod.PAP


# ---------------------------------------------------------------------------------------------
# R-02 validation corpus

MA = attr(Attr.MESSAGE_AUTHENTICATOR, bytes(16))
USER = attr(Attr.USER_NAME, b"alice")
PASSWORD = attr(Attr.USER_PASSWORD, bytes(16))

MALFORMED = {
    "19 bytes": bytes(19),
    "code 0": raw(0, USER),
    "code 4 accounting": raw(4, USER),
    "code 53": raw(53, USER),
    "code 255": raw(255, USER),
    "code 2 reply": raw(2, USER),
    "Length below 20": raw(1, USER, length=19),
    "Length 0": raw(1, USER, length=0),
    "Length above received": raw(1, USER, length=20 + len(USER) + 1),
    "one stray byte": raw(1, USER + b"\x01"),
    "attribute type 0": raw(1, attr(0, b"x")),
    "attribute length 0": raw(1, b"\x01\x00" + USER),
    "attribute length 1": raw(1, b"\x01\x01" + USER),
    "attribute overflow": raw(1, b"\x01\x10abc"),
    "MA length 5": raw(1, b"\x50\x05abc"),
    "MA length 20": raw(1, attr(Attr.MESSAGE_AUTHENTICATOR, bytes(18))),
    "two MAs": raw(1, MA + USER + MA),
    "4097-byte packet": raw(1, attr(Attr.CLASS, b"x" * 251) * 16 + attr(Attr.CLASS, b"x" * 27)),
    "201 attributes": raw(1, attr(Attr.CLASS, b"x") * 201),
    "two User-Passwords": raw(1, USER + PASSWORD + PASSWORD),
    "two User-Names": raw(1, USER + USER + PASSWORD),
    "two States": raw(1, USER + PASSWORD + attr(Attr.STATE, b"s") * 2),
    "User-Password and CHAP-Password": raw(
        1, USER + PASSWORD + attr(Attr.CHAP_PASSWORD, bytes(17))
    ),
    "User-Password and EAP-Message": raw(
        1, MA + USER + PASSWORD + attr(Attr.EAP_MESSAGE, b"\x02\x01\x00\x05\x01")
    ),
    "CHAP-Password and EAP-Message": raw(
        1, MA + USER + attr(Attr.CHAP_PASSWORD, bytes(17)) + attr(Attr.EAP_MESSAGE, b"\x02")
    ),
}


def test_the_4097_byte_case_really_is_4097_bytes() -> None:
    assert len(MALFORMED["4097-byte packet"]) == 4097


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_packet_is_refused_before_decoding(name: str) -> None:
    packet = MALFORMED[name]
    with pytest.raises(MalformedPacket) as raised:
        codec.validate_datagram(packet)
    assert raised.value.reason  # one line for the log
    with pytest.raises(MalformedPacket):
        decode(packet)


def test_bytes_beyond_length_are_padding_and_ignored() -> None:
    packet = raw(1, attr(Attr.CLASS, b"12345678"))  # Length 30
    assert len(packet) == 30
    received = packet + b"\xff" * 10  # 40 bytes arrive
    assert codec.validate_datagram(received) == packet


def test_limits_themselves_are_accepted() -> None:
    assert codec.validate_datagram(raw(1, attr(Attr.CLASS, b"x") * 200))
    full = raw(1, attr(Attr.CLASS, b"x" * 251) * 16 + attr(Attr.CLASS, b"x" * 26))
    assert len(full) == 4096
    assert codec.validate_datagram(full) == full
    assert codec.validate_datagram(raw(STATUS_SERVER, MA))


# ---------------------------------------------------------------------------------------------
# Message-Authenticator


def test_message_authenticator_verifies_and_detects_tampering() -> None:
    packet = codec.encode_request(
        SECRET, user_name="alice", password="pw", message_authenticator=True
    )
    assert packet[20:22] == b"\x50\x12"
    assert codec.verify_message_authenticator(packet, SECRET) is True
    assert codec.verify_message_authenticator(packet, b"wrong") is False
    flipped = bytearray(packet)
    flipped[25] ^= 0x01
    assert codec.verify_message_authenticator(bytes(flipped), SECRET) is False
    changed_body = packet[:-1] + bytes((packet[-1] ^ 0x80,))
    assert codec.verify_message_authenticator(changed_body, SECRET) is False


def test_message_authenticator_absent_is_none() -> None:
    assert codec.verify_message_authenticator(RFC_REQUEST, SECRET) is None


def test_message_authenticator_ignores_padding_after_length() -> None:
    packet = codec.encode_request(SECRET, user_name="alice", message_authenticator=True)
    assert codec.verify_message_authenticator(packet + b"junk", SECRET) is True


# ---------------------------------------------------------------------------------------------
# Decoding


def test_decode_reports_each_method() -> None:
    assert request_for(password="x").request.method is AuthMethod.PAP
    chap = request_for(attributes=[(Attr.CHAP_PASSWORD, bytes(17))])
    assert chap.request.method is AuthMethod.CHAP
    eap = request_for(attributes=[(Attr.EAP_MESSAGE, b"\x02\x01\x00\x05\x01")])
    assert eap.request.method is AuthMethod.EAP
    mschap_vsa = (311).to_bytes(4, "big") + attr(11, bytes(16))
    mschap = request_for(attributes=[(Attr.VENDOR_SPECIFIC, mschap_vsa)])
    assert mschap.request.method is AuthMethod.MSCHAP
    other_vsa = (9).to_bytes(4, "big") + attr(1, b"cisco")
    assert request_for(attributes=[(Attr.VENDOR_SPECIFIC, other_vsa)]).request.method is (
        AuthMethod.NONE
    )
    assert request_for(user_name="alice").request.method is AuthMethod.NONE


def test_decode_keeps_user_name_as_raw_bytes() -> None:
    for name in (b"alice\x00admin", b"caf\xe9", b"bob\r\nfake log line"):
        assert request_for(user_name=name).request.user_name == name


def test_malformed_informational_attributes_are_ignored_not_fatal() -> None:
    decoded = request_for(
        user_name="alice",
        password="pw",
        attributes=[
            (Attr.NAS_IP_ADDRESS, b"\x0a\x00\x00\x01\x02"),  # 5 bytes
            (Attr.NAS_IPV6_ADDRESS, b"\x20\x01"),
            (Attr.NAS_IDENTIFIER, b""),
            (Attr.STATE, b""),
        ],
    )
    assert decoded.request.password == b"pw"
    assert decoded.request.nas_ip_address is None
    assert decoded.request.nas_identifier is None
    assert decoded.request.state is None


def test_informational_text_never_spans_lines_or_fails() -> None:
    decoded = request_for(
        user_name="alice",
        attributes=[
            (Attr.NAS_IDENTIFIER, b"vpn\r\nFAKE: accepted \xff"),
            (Attr.CALLING_STATION_ID, "02-00-00-00-00-01 ü".encode()),
            (Attr.NAS_IPV6_ADDRESS, bytes.fromhex("20010db8000000000000000000000001")),
        ],
    )
    assert decoded.request.nas_identifier == "vpn\\x0d\\x0aFAKE: accepted \\xff"
    assert decoded.request.calling_station_id == "02-00-00-00-00-01 ü"
    assert decoded.request.nas_ip_address == "2001:db8::1"


def test_decode_fills_request_fields() -> None:
    decoded = request_for(
        identifier=42,
        user_name="alice",
        password="pw",
        state=b"\x00state",
        proxy_states=[b"\x31\x38\x33", b"\x00\xff"],
        message_authenticator=True,
        attributes=[(Attr.NAS_IP_ADDRESS, bytes((10, 0, 0, 1))), (Attr.NAS_IDENTIFIER, b"vpn")],
    )
    assert decoded.identifier == 42 and decoded.request.packet_id == 42
    assert decoded.request.state == b"\x00state"
    assert decoded.proxy_states == (b"183", b"\x00\xff")
    assert decoded.message_authenticator is True
    assert decoded.request.nas_ip_address == "10.0.0.1"
    assert decoded.request.nas_identifier == "vpn"
    assert decoded.request.client_name == "nas1"
    assert decoded.request.client_address == "192.0.2.1"


def test_decoded_request_repr_never_shows_the_password() -> None:
    decoded = request_for(user_name="alice", password="hunter2")
    assert "hunter2" not in repr(decoded)


# ---------------------------------------------------------------------------------------------
# Replies

PROXY_STATES = [bytes.fromhex("313833"), bytes.fromhex("00ff"), bytes.fromhex("deadbeef")]


def reply_kwargs(code: int) -> dict[str, object]:
    if code == ACCESS_CHALLENGE:
        return {"reply_messages": "Code?", "state": b"\x01" * 16}
    return {"reply_messages": "hello"}


@pytest.mark.parametrize("code", [ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE])
def test_reply_puts_a_valid_message_authenticator_first(code: int) -> None:
    request = request_for(identifier=9, user_name="alice", password="pw")
    reply = codec.encode_reply(request, SECRET, code, **reply_kwargs(code))  # type: ignore[arg-type]
    assert reply[0] == code and reply[1] == 9
    assert reply[20] == 80 and reply[21] == 18
    assert codec.verify_reply(reply, request.authenticator, SECRET)
    assert not codec.verify_reply(reply, request.authenticator, b"other")


@pytest.mark.parametrize("code", [ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE])
def test_reply_verifies_in_pyrad_with_ma_enforced(code: int) -> None:
    """An independent implementation agrees on both authenticators and the Proxy-State echo."""
    raw_request = codec.encode_request(
        SECRET, user_name="alice", password="pw", proxy_states=PROXY_STATES
    )
    pyrad_request = AuthPacket(packet=raw_request, secret=SECRET, dict=codec.load_dictionary())
    reply = codec.encode_reply(decode(raw_request), SECRET, code, **reply_kwargs(code))  # type: ignore[arg-type]
    pyrad_reply = pyrad_request.CreateReply(packet=reply)
    assert pyrad_request.VerifyReply(pyrad_reply, reply, enforce_ma=True)


@pytest.mark.parametrize("code", [ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE])
def test_reply_echoes_proxy_state_in_order_at_the_end(code: int) -> None:
    request = request_for(user_name="alice", password="pw", proxy_states=PROXY_STATES)
    reply = codec.encode_reply(request, SECRET, code, **reply_kwargs(code))  # type: ignore[arg-type]
    attributes = codec.parse_attributes(reply)
    assert [v for t, v in attributes if t == Attr.PROXY_STATE] == PROXY_STATES
    assert [t for t, _ in attributes][-3:] == [Attr.PROXY_STATE] * 3


def test_reply_without_proxy_state_in_request_has_none() -> None:
    reply = codec.encode_reply(request_for(user_name="a"), SECRET, ACCESS_REJECT)
    assert all(t != Attr.PROXY_STATE for t, _ in codec.parse_attributes(reply))


def test_long_reply_message_is_split_into_253_byte_attributes() -> None:
    reply = codec.encode_reply(
        request_for(user_name="a"), SECRET, ACCESS_REJECT, reply_messages="m" * 600
    )
    messages = [v for t, v in codec.parse_attributes(reply) if t == Attr.REPLY_MESSAGE]
    assert [len(m) for m in messages] == [253, 253, 94]
    assert b"".join(messages) == b"m" * 600


def test_reply_message_split_never_cuts_a_character() -> None:
    text = "x" + "€" * 300  # 3-byte characters misaligned with 253
    chunks = codec.split_text(text)
    assert all(len(chunk) <= 253 for chunk in chunks)
    assert "".join(chunk.decode("utf-8") for chunk in chunks) == text


def test_empty_reply_message_sends_no_attribute() -> None:
    reply = codec.encode_reply(request_for(user_name="a"), SECRET, ACCESS_ACCEPT, reply_messages="")
    assert [t for t, _ in codec.parse_attributes(reply)] == [Attr.MESSAGE_AUTHENTICATOR]


def test_challenge_carries_state_message_and_session_timeout() -> None:
    request = request_for(user_name="a")
    reply = codec.encode_reply(
        request,
        SECRET,
        ACCESS_CHALLENGE,
        reply_messages="Enter code",
        state=b"\x00" * 16,
        session_timeout=120,
    )
    assert codec.parse_attributes(reply) == [
        (Attr.MESSAGE_AUTHENTICATOR, reply[22:38]),
        (Attr.REPLY_MESSAGE, b"Enter code"),
        (Attr.STATE, b"\x00" * 16),
        (Attr.SESSION_TIMEOUT, (120).to_bytes(4, "big")),
    ]


def test_rule_attributes_follow_radmfas_own_and_precede_proxy_state() -> None:
    """Message-Authenticator first, then the Reply-Message, the rule's attributes as given,
    Proxy-State last; both authenticators cover them (pyrad agrees)."""
    raw_request = codec.encode_request(
        SECRET, user_name="alice", password="pw", proxy_states=[b"p"]
    )
    vlan = [b"\x40\x06\x00\x00\x00\x0d", b"\x41\x06\x00\x00\x00\x06", b"\x51\x05120"]
    vsa = b"\x1a\x0d\x00\x00\x39\xe7\x01\x07staff"
    reply = codec.encode_reply(
        decode(raw_request), SECRET, ACCESS_ACCEPT, reply_messages="hi", attributes=[*vlan, vsa]
    )
    assert [t for t, _ in codec.parse_attributes(reply)] == [80, 18, 64, 65, 81, 26, 33]
    assert reply[20 + 18 + 4 :].startswith(b"".join([*vlan, vsa]))
    pyrad_request = AuthPacket(packet=raw_request, secret=SECRET, dict=codec.load_dictionary())
    assert pyrad_request.VerifyReply(
        pyrad_request.CreateReply(packet=reply), reply, enforce_ma=True
    )


@pytest.mark.parametrize(
    ("code", "kwargs"),
    [
        (ACCESS_ACCEPT, {"state": b"s"}),
        (ACCESS_REJECT, {"state": b"s"}),
        (ACCESS_CHALLENGE, {"reply_messages": "Code?"}),
        (ACCESS_CHALLENGE, {"reply_messages": "Code?", "state": b""}),
        (ACCESS_CHALLENGE, {"state": b"s"}),
        (ACCESS_CHALLENGE, {"state": b"s", "reply_messages": ""}),
        (ACCESS_CHALLENGE, {"state": b"s" * 254, "reply_messages": "Code?"}),
        (ACCESS_REJECT, {"session_timeout": 10}),
        (ACCESS_ACCEPT, {"session_timeout": -1}),
        (ACCESS_ACCEPT, {"reply_messages": "x" * 5000}),
        (ACCESS_REJECT, {"attributes": [b"\x0b\x03x"]}),
        (
            ACCESS_CHALLENGE,
            {"reply_messages": "Code?", "state": b"s", "attributes": [b"\x0b\x03x"]},
        ),
        (ACCESS_ACCEPT, {"attributes": [b"\x0b\xff" + b"x" * 253] * 17}),
        (4, {}),
    ],
)
def test_reply_the_rules_forbid_is_refused(code: int, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        codec.encode_reply(request_for(user_name="a"), SECRET, code, **kwargs)  # type: ignore[arg-type]


def test_status_server_request_is_encoded_and_decoded() -> None:
    packet = codec.encode_request(
        SECRET, code=STATUS_SERVER, identifier=3, message_authenticator=True
    )
    assert codec.verify_message_authenticator(codec.validate_datagram(packet), SECRET)
    decoded = decode(packet)
    assert decoded.code == STATUS_SERVER
    assert decoded.request.method is AuthMethod.NONE


# ---------------------------------------------------------------------------------------------
# Dictionary


def test_dictionary_is_package_data_and_matches_the_codec() -> None:
    dictionary = codec.load_dictionary()
    names = {kind: kind.name.replace("_", "-").lower() for kind in Attr}
    by_name = {name.lower(): attribute for name, attribute in dictionary.attributes.items()}
    assert set(by_name) == set(names.values())
    for kind, name in names.items():
        assert by_name[name].code == kind, name
    assert dictionary.attributes["User-Password"].type == "octets"
    assert dictionary.attributes["NAS-IPv6-Address"].type == "ipv6addr"


# ---------------------------------------------------------------------------------------------
# Fuzz: any bytes give a result or MalformedPacket, nothing else


def _valid_corpus() -> list[bytes]:
    return [
        RFC_REQUEST,
        codec.encode_request(
            SECRET,
            user_name="alice",
            password="pässwörd€",
            message_authenticator=True,
            proxy_states=PROXY_STATES,
            attributes=[(Attr.NAS_IP_ADDRESS, b"\x0a\x00\x00\x01"), (Attr.NAS_IDENTIFIER, b"v")],
        ),
        codec.encode_request(SECRET, user_name="bob", state=b"s" * 20, password="x" * 100),
        codec.encode_request(SECRET, attributes=[(Attr.EAP_MESSAGE, b"\x02\x00\x00\x05\x01")]),
        codec.encode_request(SECRET, code=STATUS_SERVER, message_authenticator=True),
    ]


def _mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        if choice == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:
            data[rng.randrange(len(data))] = rng.choice((0, 1, 2, 17, 18, 0x50, 0xFF))
        elif choice == 2:
            data = data[: rng.randrange(len(data) + 1)]
        elif choice == 3:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randrange(1, 40))
        elif choice == 4 and len(data) >= 4:
            data[2:4] = rng.randrange(0, 5000).to_bytes(2, "big")
        elif choice == 5 and len(data) >= 4:
            data[2:4] = len(data).to_bytes(2, "big")  # keep Length consistent after edits
    return bytes(data)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_packets_only_ever_raise_malformed(seed: int) -> None:
    rng = random.Random(seed)
    corpus = _valid_corpus()
    decoded_ok = 0
    for _ in range(3000):
        packet = _mutate(rng, rng.choice(corpus))
        try:
            valid = codec.validate_datagram(packet)
        except MalformedPacket:
            continue
        codec.verify_message_authenticator(valid, SECRET)
        decode(valid)
        decoded_ok += 1
    assert decoded_ok > 100  # the fuzzer also reaches the decoder, not just the validator


@pytest.mark.parametrize("seed", [4, 5])
def test_fuzzed_packets_straight_into_decode_only_raise_malformed(seed: int) -> None:
    rng = random.Random(seed)
    corpus = _valid_corpus()
    for _ in range(2000):
        packet = _mutate(rng, rng.choice(corpus))
        try:
            decode(packet)
            codec.verify_message_authenticator(packet, SECRET)
        except MalformedPacket:
            pass


# ---------------------------------------------------------------------------------------------
# One walk: a ValidPacket gives exactly the answers of the raw bytes


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_validate_packet_refuses_malformed_packets_with_the_reason_decoding_gives(
    name: str,
) -> None:
    packet = MALFORMED[name]
    with pytest.raises(MalformedPacket) as validated:
        codec.validate_packet(packet)
    with pytest.raises(MalformedPacket) as decoded:
        decode(packet)  # the bytes path checks everything again on its own
    assert validated.value.reason == decoded.value.reason


def test_valid_packet_holds_the_packet_cut_to_length_and_its_attributes() -> None:
    for packet in _valid_corpus():
        valid = codec.validate_packet(packet + b"padding")
        assert valid.packet == packet == codec.validate_datagram(packet + b"padding")
        walked = [(a.type, a.value) for a in valid.attributes]
        assert walked == codec.parse_attributes(packet)


@pytest.mark.parametrize("secret", [SECRET, b"wrong"])
def test_valid_packet_verifies_and_decodes_like_the_bytes(secret: bytes) -> None:
    for packet in _valid_corpus():
        valid = codec.validate_packet(packet)
        authentic = codec.verify_message_authenticator(valid, secret)
        assert authentic is codec.verify_message_authenticator(packet, secret)
        fast = codec.decode_request(valid, secret, "nas1", "192.0.2.1")
        assert fast == codec.decode_request(packet, secret, "nas1", "192.0.2.1")


def test_decode_refuses_a_packet_validated_for_other_codes_as_the_bytes_path_does() -> None:
    valid = codec.validate_packet(RFC_ACCEPT, codec.REPLY_CODES)
    with pytest.raises(MalformedPacket) as fast:
        codec.decode_request(valid, SECRET, "nas1", "192.0.2.1")
    with pytest.raises(MalformedPacket) as slow:
        decode(RFC_ACCEPT)
    assert fast.value.reason == slow.value.reason == "packet code 2 is not accepted on this port"


@pytest.mark.parametrize("seed", [6, 7])
def test_fuzzed_packets_give_the_same_answers_through_a_valid_packet(seed: int) -> None:
    rng = random.Random(seed)
    corpus = _valid_corpus()
    compared = 0
    for _ in range(2000):
        packet = _mutate(rng, rng.choice(corpus))
        try:
            valid = codec.validate_packet(packet)
        except MalformedPacket as error:
            with pytest.raises(MalformedPacket) as again:
                decode(packet)
            assert again.value.reason == error.reason
            continue
        authentic = codec.verify_message_authenticator(valid, SECRET)
        assert authentic is codec.verify_message_authenticator(packet, SECRET)
        assert codec.decode_request(valid, SECRET, "nas1", "192.0.2.1") == decode(packet)
        compared += 1
    assert compared > 100
