"""RADIUS wire format: strict validation, password hiding, reply signing.

Pure functions over bytes (no Twisted, no sockets), so every rule is provable with known answers.
We walk attributes ourselves instead of trusting a library decoder: pyrad rejects legitimate
padding, silently truncates an attribute that overflows the packet, accepts several
Message-Authenticators and un-hides passwords lossily (protocol-security.md R-02, R-04, R-11).

Everything that leaves this module as an error is a :class:`MalformedPacket` (drop the packet),
an :class:`InvalidPassword` (reject the request) or a ``ValueError`` for a reply we refuse to
build; nothing else may escape for any input bytes.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from radmfa.auth.model import AccessRequest, AuthMethod

if TYPE_CHECKING:
    from pyrad.dictionary import Dictionary

# Packet codes (RFC 2865 section 3, RFC 5997).
ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCOUNTING_REQUEST = 4
ACCESS_CHALLENGE = 11
STATUS_SERVER = 12

#: What an authentication port answers; Accounting-Request on 1812 is dropped (R-15).
AUTH_PORT_CODES: frozenset[int] = frozenset({ACCESS_REQUEST, STATUS_SERVER})
REPLY_CODES: frozenset[int] = frozenset({ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE})

HEADER_LENGTH = 20
MAX_PACKET_LENGTH = 4096
#: FreeRADIUS ``max_attributes``; a cap keeps a 4 KiB packet of 2-byte attributes cheap.
MAX_ATTRIBUTES = 200
MAX_VALUE_LENGTH = 253
MESSAGE_AUTHENTICATOR_LENGTH = 18
MICROSOFT_VENDOR_ID = 311
PASSWORD_BLOCK = 16
MAX_HIDDEN_PASSWORD = 128


class Attr(enum.IntEnum):
    """Attribute types radmfa reads or writes (the same set as the ``dictionary`` file)."""

    USER_NAME = 1
    USER_PASSWORD = 2
    CHAP_PASSWORD = 3
    NAS_IP_ADDRESS = 4
    NAS_PORT = 5
    SERVICE_TYPE = 6
    REPLY_MESSAGE = 18
    STATE = 24
    CLASS = 25
    VENDOR_SPECIFIC = 26
    SESSION_TIMEOUT = 27
    CALLED_STATION_ID = 30
    CALLING_STATION_ID = 31
    NAS_IDENTIFIER = 32
    PROXY_STATE = 33
    CHAP_CHALLENGE = 60
    NAS_PORT_TYPE = 61
    PROMPT = 76
    EAP_MESSAGE = 79
    MESSAGE_AUTHENTICATOR = 80
    NAS_IPV6_ADDRESS = 95


#: Attributes that may appear at most once in an Access-Request (R-05, RFC 2869 5.19).
_AT_MOST_ONCE = tuple(
    int(a) for a in (Attr.USER_NAME, Attr.USER_PASSWORD, Attr.STATE, Attr.MESSAGE_AUTHENTICATOR)
)
#: At most one of these credentials may be present (R-05). Plain ints: this runs per packet.
_CREDENTIALS = tuple(int(a) for a in (Attr.USER_PASSWORD, Attr.CHAP_PASSWORD, Attr.EAP_MESSAGE))
_MA_TYPE = int(Attr.MESSAGE_AUTHENTICATOR)
_ZERO_MA = bytes(16)


class MalformedPacket(ValueError):
    """The datagram breaks a structural rule: drop it silently and count it (R-02)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidPassword(ValueError):
    """A hidden User-Password with an impossible length: reject, do not guess (R-04)."""


# --------------------------------------------------------------------------------------------
# Structure


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute as found on the wire; ``offset`` points at its type byte."""

    type: int
    offset: int
    value: bytes


def _parse(data: bytes, allowed_codes: frozenset[int] | None) -> tuple[bytes, list[Attribute]]:
    """Check the header and walk every attribute; return the packet cut to Length."""
    if len(data) < HEADER_LENGTH:
        raise MalformedPacket(f"datagram of {len(data)} bytes is shorter than the 20-byte header")
    length = int.from_bytes(data[2:4], "big")
    if length < HEADER_LENGTH:
        raise MalformedPacket(f"Length field {length} is below the 20-byte minimum")
    if length > MAX_PACKET_LENGTH:
        raise MalformedPacket(f"Length field {length} is above the 4096-byte maximum")
    if length > len(data):
        raise MalformedPacket(f"Length field {length} exceeds the {len(data)} bytes received")
    code = data[0]
    if allowed_codes is not None and code not in allowed_codes:
        raise MalformedPacket(f"packet code {code} is not accepted on this port")
    packet = bytes(data[:length])
    attributes: list[Attribute] = []
    pos = HEADER_LENGTH
    while pos < length:
        if pos + 2 > length:
            raise MalformedPacket(f"a stray byte at offset {pos} is not an attribute")
        kind, size = packet[pos], packet[pos + 1]
        if kind == 0:
            raise MalformedPacket(f"attribute type 0 at offset {pos}")
        if size < 2:
            raise MalformedPacket(f"attribute {kind} at offset {pos} has length {size} (< 2)")
        end = pos + size
        if end > length:
            raise MalformedPacket(f"attribute {kind} at offset {pos} overflows the packet")
        if len(attributes) == MAX_ATTRIBUTES:
            raise MalformedPacket(f"more than {MAX_ATTRIBUTES} attributes")
        attributes.append(Attribute(kind, pos, packet[pos + 2 : end]))
        pos = end
    return packet, attributes


def _check_request_rules(attributes: Sequence[Attribute]) -> None:
    """Content rules that make an Access-Request or Status-Server malformed (R-02, R-05)."""
    counts: dict[int, int] = {}
    for attribute in attributes:
        counts[attribute.type] = counts.get(attribute.type, 0) + 1
        if attribute.type == _MA_TYPE and len(attribute.value) + 2 != MESSAGE_AUTHENTICATOR_LENGTH:
            raise MalformedPacket(
                f"Message-Authenticator is {len(attribute.value) + 2} bytes, not 18"
            )
    for kind in _AT_MOST_ONCE:
        if counts.get(kind, 0) > 1:
            raise MalformedPacket(f"{Attr(kind).name} appears {counts[kind]} times")
    present = [kind for kind in _CREDENTIALS if kind in counts]
    if len(present) > 1:
        names = " and ".join(Attr(kind).name for kind in present)
        raise MalformedPacket(f"conflicting credentials: {names}")


@dataclass(frozen=True, slots=True)
class ValidPacket:
    """A datagram that passed :func:`validate_packet`, with the attribute walk it took.

    The receive path hands this to :func:`verify_message_authenticator` and
    :func:`decode_request` so the packet is walked once, not once per step. Build it only
    through :func:`validate_packet`: those functions trust that its rules were applied.
    """

    #: The packet cut to its Length field.
    packet: bytes
    attributes: tuple[Attribute, ...]


def validate_packet(data: bytes, allowed_codes: frozenset[int] = AUTH_PORT_CODES) -> ValidPacket:
    """Apply every structural rule before anything decodes; keep the walk for the next steps.

    Bytes after the Length field are padding and ignored (RFC 2865 section 3). An Access-Request
    or Status-Server also gets the content rules (R-05). Raises :class:`MalformedPacket` with a
    one-line reason for the log.
    """
    packet, attributes = _parse(data, allowed_codes)
    if packet[0] in AUTH_PORT_CODES:
        _check_request_rules(attributes)
    return ValidPacket(packet, tuple(attributes))


def validate_datagram(data: bytes, allowed_codes: frozenset[int] = AUTH_PORT_CODES) -> bytes:
    """:func:`validate_packet` for callers that only want the packet cut to Length."""
    return validate_packet(data, allowed_codes).packet


def parse_attributes(packet: bytes) -> list[tuple[int, bytes]]:
    """Structural walk of any packet (also replies), for clients and tests.

    Raises :class:`MalformedPacket` like :func:`validate_datagram`, without the code and
    content rules.
    """
    _, attributes = _parse(packet, None)
    return [(attribute.type, attribute.value) for attribute in attributes]


# --------------------------------------------------------------------------------------------
# Message-Authenticator (RFC 2869 5.14, RFC 3579 3.2) and Response Authenticator (RFC 2865 3)


def _md5(data: bytes) -> bytes:
    # RFC 2865 mandates MD5 here; it is a protocol requirement, not a design choice.
    return hashlib.md5(data, usedforsecurity=False).digest()


def _hmac_md5(secret: bytes, data: bytes) -> bytes:
    return hmac.digest(secret, data, "md5")


def _zero_ma(packet: bytes, offset: int) -> bytes:
    return packet[: offset + 2] + _ZERO_MA + packet[offset + 18 :]


def verify_message_authenticator(packet: bytes | ValidPacket, secret: bytes) -> bool | None:
    """Check a request's Message-Authenticator over the exact bytes received.

    None when the packet carries none (the caller decides whether that is allowed); False for a
    wrong, short or repeated one. Compared in constant time. Raw bytes are walked here (and
    may raise :class:`MalformedPacket`); a :class:`ValidPacket` reuses its walk.
    """
    attributes: Sequence[Attribute]
    if isinstance(packet, ValidPacket):
        raw, attributes = packet.packet, packet.attributes
    else:
        raw, attributes = _parse(packet, None)
    found = [a for a in attributes if a.type == _MA_TYPE]
    if not found:
        return None
    if len(found) > 1 or len(found[0].value) != 16:
        return False
    expected = _hmac_md5(secret, _zero_ma(raw, found[0].offset))
    return hmac.compare_digest(expected, found[0].value)


def verify_reply(
    reply: bytes,
    request_authenticator: bytes,
    secret: bytes,
    *,
    require_message_authenticator: bool = True,
) -> bool:
    """Client-side check of a reply: Response Authenticator, then Message-Authenticator.

    Used by tests and the admin client; the server never receives replies.
    """
    try:
        packet, attributes = _parse(reply, REPLY_CODES)
    except MalformedPacket:
        return False
    expected = _md5(packet[:4] + request_authenticator + packet[20:] + secret)
    if not hmac.compare_digest(expected, packet[4:20]):
        return False
    found = [a for a in attributes if a.type == Attr.MESSAGE_AUTHENTICATOR]
    if not found:
        return not require_message_authenticator
    if len(found) > 1 or len(found[0].value) != 16:
        return False
    signed = _zero_ma(packet[:4] + request_authenticator + packet[20:], found[0].offset)
    return hmac.compare_digest(_hmac_md5(secret, signed), found[0].value)


# --------------------------------------------------------------------------------------------
# User-Password hiding (RFC 2865 5.2)


def _xor16(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def decrypt_password(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """Un-hide a User-Password exactly; bytes out, so no decoder can "repair" them.

    Only trailing NULs (the padding) are removed. Raises :class:`InvalidPassword` unless the
    value is a multiple of 16 octets between 16 and 128.
    """
    size = len(hidden)
    if size < PASSWORD_BLOCK or size > MAX_HIDDEN_PASSWORD or size % PASSWORD_BLOCK:
        raise InvalidPassword(
            f"hidden User-Password is {size} bytes; it must be 16..128 in steps of 16"
        )
    if len(authenticator) != 16:
        raise ValueError("the Request Authenticator is 16 bytes")
    plain = bytearray()
    previous = authenticator
    for start in range(0, size, PASSWORD_BLOCK):
        block = hidden[start : start + PASSWORD_BLOCK]
        plain += _xor16(block, _md5(secret + previous))
        previous = block
    return bytes(plain).rstrip(b"\x00")


def encrypt_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """Hide a password as a client does (test client and admin tools).

    Raises :class:`InvalidPassword` above 128 bytes; an empty password becomes 16 NULs hidden.
    """
    if len(password) > MAX_HIDDEN_PASSWORD:
        raise InvalidPassword(f"password is {len(password)} bytes; at most 128 can be sent")
    if len(authenticator) != 16:
        raise ValueError("the Request Authenticator is 16 bytes")
    padded_size = max(PASSWORD_BLOCK, -(-len(password) // PASSWORD_BLOCK) * PASSWORD_BLOCK)
    padded = password.ljust(padded_size, b"\x00")
    hidden = bytearray()
    previous = authenticator
    for start in range(0, padded_size, PASSWORD_BLOCK):
        block = _xor16(padded[start : start + PASSWORD_BLOCK], _md5(secret + previous))
        hidden += block
        previous = block
    return bytes(hidden)


# --------------------------------------------------------------------------------------------
# Request decoding


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    """What the protocol needs from one validated request; ``request`` goes to the pipeline.

    ``proxy_states`` are raw and in wire order, to be echoed byte for byte (R-07).
    ``password_invalid`` marks a User-Password whose length breaks RFC 2865 5.2: the request
    must be rejected, not dropped (R-04).
    """

    code: int
    identifier: int
    authenticator: bytes
    proxy_states: tuple[bytes, ...]
    message_authenticator: bool
    #: Not in repr: it carries the clear password.
    request: AccessRequest = field(repr=False)
    password_invalid: bool = False


def informational_text(value: bytes) -> str:
    """Text for logs and audit only: never fails, never spans lines.

    Invalid UTF-8 becomes ``\\xNN``; control and other non-printable characters are escaped
    too, so a NAS-Identifier with CR/LF cannot forge a log line.
    """
    text = value.decode("utf-8", errors="backslashreplace")
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def decode_request(
    packet: bytes | ValidPacket, secret: bytes, client_name: str, client_address: str
) -> DecodedRequest:
    """Turn a validated Access-Request (or Status-Server) into plain values.

    Raw bytes are checked again in full, so it raises only :class:`MalformedPacket` for any
    bytes; a :class:`ValidPacket` already passed those rules and only its code is checked. A
    malformed value of an informational attribute (e.g. a 5-byte NAS-IP-Address) or an empty
    value is ignored, not fatal (R-17, RFC 6929 2.8).
    """
    attributes: Sequence[Attribute]
    if isinstance(packet, ValidPacket):
        # validate_packet applied the content rules to every code accepted here.
        raw, attributes = packet.packet, packet.attributes
        if raw[0] not in AUTH_PORT_CODES:
            raise MalformedPacket(f"packet code {raw[0]} is not accepted on this port")
    else:
        raw, attributes = _parse(packet, AUTH_PORT_CODES)
        _check_request_rules(attributes)
    authenticator = raw[4:20]
    user_name: bytes | None = None
    password: bytes | None = None
    password_invalid = False
    state: bytes | None = None
    nas_identifier: str | None = None
    calling_station_id: str | None = None
    nas_ipv4: str | None = None
    nas_ipv6: str | None = None
    proxy_states: list[bytes] = []
    seen: set[int] = set()
    microsoft_vsa = False
    for attribute in attributes:
        kind, value = attribute.type, attribute.value
        seen.add(kind)
        if not value:
            continue  # a zero-length value is an invalid attribute: ignored
        if kind == Attr.USER_NAME:
            user_name = value
        elif kind == Attr.USER_PASSWORD:
            try:
                password = decrypt_password(value, secret, authenticator)
            except InvalidPassword:
                password_invalid = True
        elif kind == Attr.STATE:
            state = value
        elif kind == Attr.PROXY_STATE:
            proxy_states.append(value)
        elif kind == Attr.NAS_IDENTIFIER and nas_identifier is None:
            nas_identifier = informational_text(value)
        elif kind == Attr.CALLING_STATION_ID and calling_station_id is None:
            calling_station_id = informational_text(value)
        elif kind == Attr.NAS_IP_ADDRESS and nas_ipv4 is None and len(value) == 4:
            nas_ipv4 = str(ipaddress.IPv4Address(value))
        elif kind == Attr.NAS_IPV6_ADDRESS and nas_ipv6 is None and len(value) == 16:
            nas_ipv6 = str(ipaddress.IPv6Address(value))
        elif kind == Attr.VENDOR_SPECIFIC and len(value) >= 4:
            microsoft_vsa |= int.from_bytes(value[:4], "big") == MICROSOFT_VENDOR_ID
    if Attr.USER_PASSWORD in seen:
        method = AuthMethod.PAP
        # An empty hidden value is as impossible as a 17-byte one.
        password_invalid = password_invalid or password is None
    elif Attr.CHAP_PASSWORD in seen:
        method = AuthMethod.CHAP
    elif Attr.EAP_MESSAGE in seen:
        method = AuthMethod.EAP
    elif microsoft_vsa:
        method = AuthMethod.MSCHAP
    else:
        method = AuthMethod.NONE
    request = AccessRequest(
        user_name=user_name,
        password=password,
        method=method,
        state=state,
        client_name=client_name,
        client_address=client_address,
        nas_identifier=nas_identifier,
        nas_ip_address=nas_ipv4 if nas_ipv4 is not None else nas_ipv6,
        calling_station_id=calling_station_id,
        packet_id=raw[1],
        authenticator=authenticator,
    )
    return DecodedRequest(
        code=raw[0],
        identifier=raw[1],
        authenticator=authenticator,
        proxy_states=tuple(proxy_states),
        message_authenticator=Attr.MESSAGE_AUTHENTICATOR in seen,
        request=request,
        password_invalid=password_invalid,
    )


# --------------------------------------------------------------------------------------------
# Encoding


def _attribute(kind: int, value: bytes) -> bytes:
    """One attribute; zero-length and over-long values are refused (RFC 2865 section 5)."""
    if not value:
        raise ValueError(f"attribute {kind} would be empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise ValueError(f"attribute {kind} value is {len(value)} bytes; at most 253 fit")
    return bytes((kind, len(value) + 2)) + value


def split_text(text: str, limit: int = MAX_VALUE_LENGTH) -> list[bytes]:
    """UTF-8 encode ``text`` into chunks of at most ``limit`` bytes, never splitting a character.

    Empty text gives no chunks, so no zero-length attribute is ever sent (R-06).
    """
    data = text.encode("utf-8")
    chunks: list[bytes] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1  # step back off a continuation byte
        chunks.append(data[start:end])
        start = end
    return chunks


def encode_reply(
    request: DecodedRequest,
    secret: bytes,
    code: int,
    *,
    reply_messages: str | None = None,
    state: bytes | None = None,
    session_timeout: int | None = None,
    attributes: Sequence[bytes] = (),
) -> bytes:
    """Build a signed Access-Accept, -Reject or -Challenge for ``request``.

    Message-Authenticator is always the first attribute (BlastRADIUS, B-01) and is computed,
    with the Request Authenticator in place, before the Response Authenticator (R-11, R-03).
    Proxy-State values are copied last, in order (R-07). ``attributes`` (whole attributes, as
    :mod:`radmfa.radius.replyattrs` encodes a rule's ``reply``) go into an Access-Accept only,
    after radmfa's own. Raises ValueError for a reply the rules forbid (State outside a
    Challenge, a Challenge without State or message, attributes outside an Accept, > 4096 bytes).
    """
    if code not in REPLY_CODES:
        raise ValueError(f"{code} is not an Access-Request reply code")
    if code == ACCESS_CHALLENGE:
        if not state:
            raise ValueError("an Access-Challenge needs a non-empty State")
        if not reply_messages:
            raise ValueError("an Access-Challenge needs a non-empty Reply-Message")
    elif state is not None:
        raise ValueError("State belongs only in an Access-Challenge")
    if attributes and code != ACCESS_ACCEPT:
        raise ValueError("reply attributes belong only in an Access-Accept")
    if session_timeout is not None:
        if code == ACCESS_REJECT:
            raise ValueError("an Access-Reject carries no Session-Timeout")
        if not 0 <= session_timeout < 2**32:
            raise ValueError(f"Session-Timeout {session_timeout} is out of range")
    body = bytearray((Attr.MESSAGE_AUTHENTICATOR, MESSAGE_AUTHENTICATOR_LENGTH))
    body += _ZERO_MA
    for chunk in split_text(reply_messages or ""):
        body += _attribute(Attr.REPLY_MESSAGE, chunk)
    if state is not None:
        body += _attribute(Attr.STATE, state)
    if session_timeout is not None:
        body += _attribute(Attr.SESSION_TIMEOUT, session_timeout.to_bytes(4, "big"))
    for attribute in attributes:
        body += attribute
    for proxy_state in request.proxy_states:
        body += _attribute(Attr.PROXY_STATE, proxy_state)
    length = HEADER_LENGTH + len(body)
    if length > MAX_PACKET_LENGTH:
        raise ValueError(f"reply would be {length} bytes; at most 4096 are allowed")
    header = bytes((code, request.identifier)) + length.to_bytes(2, "big")
    body[2:18] = _hmac_md5(secret, header + request.authenticator + body)
    response_authenticator = _md5(header + request.authenticator + body + secret)
    return header + response_authenticator + bytes(body)


def encode_request(
    secret: bytes,
    *,
    code: int = ACCESS_REQUEST,
    identifier: int = 0,
    authenticator: bytes | None = None,
    user_name: bytes | str | None = None,
    password: bytes | str | None = None,
    state: bytes | None = None,
    proxy_states: Iterable[bytes] = (),
    attributes: Iterable[tuple[int, bytes]] = (),
    message_authenticator: bool = False,
) -> bytes:
    """Build an Access-Request (or Status-Server) the way a NAS would, for tests and tools.

    The Message-Authenticator, when asked for, goes first and is signed over the final packet.
    ``attributes`` are raw ``(type, value)`` pairs written as given (even empty or odd-sized
    values, to build hostile packets); Proxy-State goes last.
    """
    if authenticator is None:
        authenticator = os.urandom(16)
    if len(authenticator) != 16:
        raise ValueError("the Request Authenticator is 16 bytes")
    body = bytearray()
    ma_offset: int | None = None
    if message_authenticator:
        ma_offset = HEADER_LENGTH
        body += bytes((Attr.MESSAGE_AUTHENTICATOR, MESSAGE_AUTHENTICATOR_LENGTH)) + _ZERO_MA
    if user_name is not None:
        name = user_name.encode("utf-8") if isinstance(user_name, str) else user_name
        body += _attribute(Attr.USER_NAME, name)
    if password is not None:
        clear = password.encode("utf-8") if isinstance(password, str) else password
        body += _attribute(Attr.USER_PASSWORD, encrypt_password(clear, secret, authenticator))
    if state is not None:
        body += _attribute(Attr.STATE, state)
    for kind, value in attributes:
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"attribute {kind} value is {len(value)} bytes; at most 253 fit")
        body += bytes((kind, len(value) + 2)) + value
    for proxy_state in proxy_states:
        body += _attribute(Attr.PROXY_STATE, proxy_state)
    length = HEADER_LENGTH + len(body)
    if length > MAX_PACKET_LENGTH:
        raise ValueError(f"request would be {length} bytes; at most 4096 are allowed")
    packet = bytes((code, identifier)) + length.to_bytes(2, "big") + authenticator + body
    if ma_offset is not None:
        mac = _hmac_md5(secret, packet)
        packet = packet[: ma_offset + 2] + mac + packet[ma_offset + 18 :]
    return packet


# --------------------------------------------------------------------------------------------
# Dictionary


def dictionary_text() -> str:
    """Our attribute dictionary (package data), for pyrad-based tools and docs."""
    return resources.files("radmfa.radius").joinpath("dictionary").read_text("utf-8")


def load_dictionary() -> Dictionary:
    """The dictionary as a pyrad ``Dictionary`` (imported lazily: the server does not need it)."""
    import io

    from pyrad.dictionary import Dictionary

    return Dictionary(io.StringIO(dictionary_text()))
