"""The few LDAPv3 messages radmfa needs, in BER, written by hand for speed (RFC 4511 §5.1).

Encoding follows RFC 4511's restrictions, the same bytes pyasn1/ldap3 produce except that a
true BOOLEAN is ``FF`` as §5.1 asks (pyasn1 writes ``01``): definite lengths in the shortest
form, primitive OCTET STRINGs, defaults (``dnAttributes FALSE``) left out.

Decoding is strict and bounded, because its input comes from the network: a message must be a
SEQUENCE with a definite length of at most :data:`MAX_MESSAGE_SIZE` octets, every element must
fit inside its container, and anything else raises :class:`BerDecodeError` (never another
exception, never a wait for bytes that a bad length promised). Non-minimal lengths are accepted:
Active Directory always writes four length octets.

Filters: :func:`compile_filter` turns an RFC 4515 string into its BER ``Filter`` encoding, and
:class:`FilterTemplate` does that once for a template such as ``(uid={username})`` so that each
search only splices the user name's octets in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "BIND_REQUEST",
    "BIND_RESPONSE",
    "EXTENDED_REQUEST",
    "EXTENDED_RESPONSE",
    "MAX_MESSAGE_ID",
    "MAX_MESSAGE_SIZE",
    "NOTICE_OF_DISCONNECTION_OID",
    "SEARCH_REQUEST",
    "SEARCH_RESULT_DONE",
    "SEARCH_RESULT_ENTRY",
    "SEARCH_RESULT_REFERENCE",
    "STARTTLS_OID",
    "UNBIND_REQUEST",
    "BerDecodeError",
    "FilterError",
    "FilterTemplate",
    "LdapResult",
    "MessageDecoder",
    "Response",
    "SearchEntry",
    "SearchReference",
    "compile_filter",
    "decode_message",
    "encode_bind_request",
    "encode_extended_request",
    "encode_search_request",
    "encode_unbind_request",
]

# protocolOp tags ([APPLICATION n], constructed unless noted).
BIND_REQUEST = 0x60
BIND_RESPONSE = 0x61
UNBIND_REQUEST = 0x42  # primitive NULL
SEARCH_REQUEST = 0x63
SEARCH_RESULT_ENTRY = 0x64
SEARCH_RESULT_DONE = 0x65
SEARCH_RESULT_REFERENCE = 0x73
EXTENDED_REQUEST = 0x77
EXTENDED_RESPONSE = 0x78

STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
#: The unsolicited notification (messageID 0) a server sends before it closes the connection.
NOTICE_OF_DISCONNECTION_OID = "1.3.6.1.4.1.1466.20036"

#: Largest LDAPMessage accepted from a server; our searches return at most two small entries.
MAX_MESSAGE_SIZE = 1 << 20
MAX_MESSAGE_ID = 2**31 - 1

_SEQUENCE = 0x30
_SET = 0x31
_INTEGER = 0x02
_OCTET_STRING = 0x04
_ENUMERATED = 0x0A
_BOOLEAN = 0x01


class BerDecodeError(ValueError):
    """The peer sent something that is not a well-formed LDAP response we can use."""


class FilterError(ValueError):
    """Not a valid RFC 4515 search filter."""


# -- encoding -----------------------------------------------------------------------------------

_SHORT_LENGTHS = [bytes((n,)) for n in range(0x80)]


def _length(n: int) -> bytes:
    if n < 0x80:
        return _SHORT_LENGTHS[n]
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + _length(n) + content


def _integer(value: int, tag: int = _INTEGER) -> bytes:
    """Shortest two's-complement form, as BER (and pyasn1) writes it."""
    if 0 <= value < 0x80:
        return bytes((tag, 1, value))
    content = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    return _tlv(tag, content)


def _string(text: str) -> bytes:
    return _tlv(_OCTET_STRING, text.encode("utf-8"))


def _message(message_id: int, op: bytes) -> bytes:
    if not 0 < message_id <= MAX_MESSAGE_ID:
        raise ValueError(f"message ID {message_id} out of range")
    return _tlv(_SEQUENCE, _integer(message_id) + op)


def encode_bind_request(message_id: int, name: str, password: bytes) -> bytes:
    """A version 3 simple bind. The password goes as given: no SASLprep (L-15)."""
    body = b"\x02\x01\x03" + _string(name) + _tlv(0x80, password)
    return _message(message_id, _tlv(BIND_REQUEST, body))


def encode_unbind_request(message_id: int) -> bytes:
    return _message(message_id, b"\x42\x00")


def encode_search_request(
    message_id: int,
    base: str,
    filter_ber: bytes,
    attributes: Sequence[str] = (),
    *,
    size_limit: int = 0,
    time_limit: int = 0,
    scope: int = 2,
    deref_aliases: int = 0,
    types_only: bool = False,
) -> bytes:
    """SearchRequest; ``filter_ber`` from :func:`compile_filter` or a :class:`FilterTemplate`.

    No attributes means ``1.1`` (RFC 4511 §4.5.1.8: return no attributes), not "all of them".
    """
    if not 0 <= scope <= 2 or not 0 <= deref_aliases <= 3:
        raise ValueError("scope must be 0..2 and deref_aliases 0..3")
    if size_limit < 0 or time_limit < 0:
        raise ValueError("limits must not be negative")
    selection = b"".join(_string(name) for name in (attributes or ("1.1",)))
    body = b"".join(
        (
            _string(base),
            bytes((_ENUMERATED, 1, scope, _ENUMERATED, 1, deref_aliases)),
            _integer(size_limit),
            _integer(time_limit),
            b"\x01\x01\xff" if types_only else b"\x01\x01\x00",
            filter_ber,
            _tlv(_SEQUENCE, selection),
        )
    )
    return _message(message_id, _tlv(SEARCH_REQUEST, body))


def encode_extended_request(message_id: int, oid: str, value: bytes | None = None) -> bytes:
    body = _tlv(0x80, oid.encode("ascii"))
    if value is not None:
        body += _tlv(0x81, value)
    return _message(message_id, _tlv(EXTENDED_REQUEST, body))


# -- decoding -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LdapResult:
    """BindResponse, SearchResultDone or ExtendedResponse (``op`` tells which)."""

    op: int
    code: int
    matched_dn: str
    diagnostic: str
    referrals: tuple[str, ...] = ()
    #: ExtendedResponse only.
    response_name: str | None = None
    response_value: bytes | None = None


@dataclass(frozen=True, slots=True)
class SearchEntry:
    dn: str
    #: (attribute description, values) in the order the server sent them.
    attributes: tuple[tuple[str, tuple[bytes, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class SearchReference:
    uris: tuple[str, ...]


Response = LdapResult | SearchEntry | SearchReference


def _header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``, which must end by ``end``."""
    if end - pos < 2:
        raise BerDecodeError("truncated element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BerDecodeError("multi-octet tags are not used by LDAP")
    n = data[pos + 1]
    pos += 2
    if n >= 0x80:
        count = n & 0x7F
        if count == 0:
            raise BerDecodeError("indefinite length (RFC 4511 allows definite lengths only)")
        if count > 4:
            raise BerDecodeError("length of length too large")
        if end - pos < count:
            raise BerDecodeError("truncated length")
        n = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    stop = pos + n
    if stop > end:
        raise BerDecodeError("element longer than its container")
    return tag, pos, stop


def _expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    found, start, stop = _header(data, pos, end)
    if found != tag:
        raise BerDecodeError(f"expected {what} (tag 0x{tag:02x}), got tag 0x{found:02x}")
    return start, stop


def _int_value(data: bytes, start: int, stop: int, what: str) -> int:
    if not 0 < stop - start <= 5:
        raise BerDecodeError(f"bad {what} length")
    return int.from_bytes(data[start:stop], "big", signed=True)


def _text(data: bytes, start: int, stop: int, what: str) -> str:
    try:
        return data[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise BerDecodeError(f"{what} is not UTF-8") from None


def _strings(data: bytes, pos: int, end: int, what: str) -> tuple[str, ...]:
    out = []
    while pos < end:
        start, pos = _expect(data, pos, end, _OCTET_STRING, what)
        out.append(_text(data, start, pos, what))
    return tuple(out)


def _ldap_result(data: bytes, op: int, pos: int, end: int) -> LdapResult:
    start, pos = _expect(data, pos, end, _ENUMERATED, "resultCode")
    code = _int_value(data, start, pos, "resultCode")
    if code < 0:
        raise BerDecodeError("negative resultCode")
    start, pos = _expect(data, pos, end, _OCTET_STRING, "matchedDN")
    matched = data[start:pos].decode("utf-8", "replace")
    start, pos = _expect(data, pos, end, _OCTET_STRING, "diagnosticMessage")
    diagnostic = data[start:pos].decode("utf-8", "replace")
    referrals: tuple[str, ...] = ()
    name: str | None = None
    value: bytes | None = None
    # Optional trailing parts: referral [3], serverSaslCreds [7] (bind), responseName [10] and
    # responseValue [11] (extended). Other tags are skipped (RFC 4511 §4: ignore what you do not
    # recognise), but they must still be well formed.
    while pos < end:
        tag, start, pos = _header(data, pos, end)
        if tag == 0xA3:
            referrals = _strings(data, start, pos, "referral URI")
        elif tag == 0x8A and op == EXTENDED_RESPONSE:
            name = _text(data, start, pos, "responseName")
        elif tag == 0x8B and op == EXTENDED_RESPONSE:
            value = data[start:pos]
    return LdapResult(op, code, matched, diagnostic, referrals, name, value)


def _search_entry(data: bytes, pos: int, end: int) -> SearchEntry:
    start, pos = _expect(data, pos, end, _OCTET_STRING, "objectName")
    dn = _text(data, start, pos, "objectName")
    start, stop = _expect(data, pos, end, _SEQUENCE, "attributes")
    if stop != end:
        raise BerDecodeError("trailing data in searchResEntry")
    attributes = []
    pos = start
    while pos < stop:
        a_start, pos = _expect(data, pos, stop, _SEQUENCE, "PartialAttribute")
        t_start, t_stop = _expect(data, a_start, pos, _OCTET_STRING, "attribute type")
        name = _text(data, t_start, t_stop, "attribute type")
        v_start, v_stop = _expect(data, t_stop, pos, _SET, "attribute values")
        if v_stop != pos:
            raise BerDecodeError("trailing data in PartialAttribute")
        values = []
        while v_start < v_stop:
            s, v_start = _expect(data, v_start, v_stop, _OCTET_STRING, "attribute value")
            values.append(data[s:v_start])
        attributes.append((name, tuple(values)))
    return SearchEntry(dn, tuple(attributes))


def decode_message(data: bytes) -> tuple[int, Response]:
    """One complete LDAPMessage (the outer SEQUENCE included): (messageID, response)."""
    start, stop = _expect(data, 0, len(data), _SEQUENCE, "LDAPMessage")
    if stop != len(data):
        raise BerDecodeError("trailing data after LDAPMessage")
    return _decode_body(data, start, stop)


def _decode_body(data: bytes, pos: int, end: int) -> tuple[int, Response]:
    start, pos = _expect(data, pos, end, _INTEGER, "messageID")
    message_id = _int_value(data, start, pos, "messageID")
    if not 0 <= message_id <= MAX_MESSAGE_ID:
        raise BerDecodeError("messageID out of range")
    op, start, stop = _header(data, pos, end)
    response: Response
    if op in (BIND_RESPONSE, SEARCH_RESULT_DONE, EXTENDED_RESPONSE):
        response = _ldap_result(data, op, start, stop)
    elif op == SEARCH_RESULT_ENTRY:
        response = _search_entry(data, start, stop)
    elif op == SEARCH_RESULT_REFERENCE:
        uris = _strings(data, start, stop, "reference URI")
        if not uris:
            raise BerDecodeError("empty searchResRef")
        response = SearchReference(uris)
    else:
        raise BerDecodeError(f"unexpected protocolOp tag 0x{op:02x}")
    if stop != end:
        # Only controls [0] may follow; radmfa sends none and uses none in responses.
        _start, after = _expect(data, stop, end, 0xA0, "controls")
        if after != end:
            raise BerDecodeError("trailing data in LDAPMessage")
    return message_id, response


class MessageDecoder:
    """Incremental framing for a byte stream: :meth:`feed` bytes, get complete messages.

    At most one incomplete message is buffered, and its header must promise no more than
    ``max_size`` octets. After an error the decoder stays failed: the stream has lost its framing
    and the connection must be closed.
    """

    __slots__ = ("_buffer", "_failed", "max_size")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._failed: BerDecodeError | None = None
        self.max_size = max_size

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, Response]]:
        if self._failed is not None:
            raise self._failed
        buffer = self._buffer
        buffer += data
        messages: list[tuple[int, Response]] = []
        pos = 0
        try:
            available = len(buffer)
            while available - pos >= 2:
                if buffer[pos] != _SEQUENCE:
                    raise BerDecodeError(f"expected LDAPMessage, got tag 0x{buffer[pos]:02x}")
                n = buffer[pos + 1]
                header = 2
                if n >= 0x80:
                    count = n & 0x7F
                    if count == 0:
                        raise BerDecodeError("indefinite length (not allowed in LDAP)")
                    if count > 4:
                        raise BerDecodeError("length of length too large")
                    if available - pos < 2 + count:
                        break
                    n = int.from_bytes(buffer[pos + 2 : pos + 2 + count], "big")
                    header += count
                if n > self.max_size:
                    raise BerDecodeError(f"message of {n} octets exceeds {self.max_size}")
                total = header + n
                if available - pos < total:
                    break
                body = bytes(buffer[pos + header : pos + total])
                messages.append(_decode_body(body, 0, n))
                pos += total
        except BerDecodeError as exc:
            self._failed = exc
            buffer.clear()
            raise
        if pos:
            del buffer[:pos]
        return messages


# -- filters (RFC 4515) -------------------------------------------------------------------------

_ATTRIBUTE = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*\Z", re.ASCII
)
_RULE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)\Z", re.ASCII)
_HEX = frozenset("0123456789abcdefABCDEF")
_MAX_FILTER_DEPTH = 32

#: A value is a tuple of octet segments; ``None`` marks where a template's user name goes.
_Value = tuple[bytes | None, ...]
_Node = tuple  # (kind, ...) as built by _Parser; see _encode_node


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError("filter value is not encodable as UTF-8 (lone surrogate)") from None


def _unescape(text: str) -> bytes:
    r"""``\XX`` escapes to octets; NUL, parentheses, ``*`` and a stray backslash are errors."""
    if "\\" not in text:
        if "\x00" in text or "(" in text or ")" in text or "*" in text:
            raise FilterError(f"unescaped special character in filter value {text!r}")
        return _utf8(text)
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\\", i)
        chunk = text[i : j if j >= 0 else n]
        if "\x00" in chunk or "(" in chunk or ")" in chunk or "*" in chunk:
            raise FilterError(f"unescaped special character in filter value {text!r}")
        out += _utf8(chunk)
        if j < 0:
            break
        pair = text[j + 1 : j + 3]
        if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
            raise FilterError(f"bad escape in filter value {text!r} (use \\XX, two hex digits)")
        out.append(int(pair, 16))
        i = j + 3
    return bytes(out)


class _Parser:
    """Recursive descent over the filter string; ``hole`` (if any) marks the user name."""

    def __init__(self, text: str, hole: str | None) -> None:
        self.text = text
        self.hole = hole
        self.pos = 0

    def parse(self) -> _Node:
        text = self.text
        if not text.startswith("("):
            # libldap's convenience: a bare item such as ``uid=alice`` gets its parentheses.
            self.text = text = f"({text})"
        node = self._filter(0)
        if self.pos != len(text):
            raise FilterError(f"unexpected text after the filter at offset {self.pos}")
        return node

    def _filter(self, depth: int) -> _Node:
        text = self.text
        if depth > _MAX_FILTER_DEPTH:
            raise FilterError("filter nested too deeply")
        if self.pos >= len(text) or text[self.pos] != "(":
            raise FilterError(f"expected '(' at offset {self.pos}")
        self.pos += 1
        if self.pos >= len(text):
            raise FilterError("unterminated filter")
        kind = text[self.pos]
        node: _Node
        if kind in "&|":
            self.pos += 1
            children = []
            while self.pos < len(text) and text[self.pos] == "(":
                children.append(self._filter(depth + 1))
            if not children:
                raise FilterError(f"'{kind}' needs at least one filter")
            node = ("set", 0xA0 if kind == "&" else 0xA1, tuple(children))
        elif kind == "!":
            self.pos += 1
            node = ("not", self._filter(depth + 1))
        else:
            end = text.find(")", self.pos)
            if end < 0:
                raise FilterError("unterminated filter item")
            node = self._item(text[self.pos : end])
            self.pos = end
        if self.pos >= len(text) or text[self.pos] != ")":
            raise FilterError(f"expected ')' at offset {self.pos}")
        self.pos += 1
        return node

    def _attribute(self, name: str) -> bytes:
        if not _ATTRIBUTE.match(name):
            raise FilterError(f"bad attribute description {name!r}")
        return name.encode("ascii")

    def _value(self, text: str) -> _Value:
        if self.hole is None or self.hole not in text:
            return (_unescape(text),)
        parts: list[bytes | None] = []
        for i, piece in enumerate(text.split(self.hole)):
            if i:
                parts.append(None)
            if piece:
                parts.append(_unescape(piece))
        return tuple(parts)

    def _item(self, item: str) -> _Node:
        eq = item.find("=")
        if eq <= 0:
            raise FilterError(f"filter item {item!r} has no attribute and operator")
        left, value = item[:eq], item[eq + 1 :]
        last = left[-1]
        if last in "~><":
            tag = {"~": 0xA8, ">": 0xA5, "<": 0xA6}[last]
            return ("ava", tag, self._attribute(left[:-1]), self._value(value))
        if last == ":":
            return self._extensible(left[:-1], value)
        attribute = self._attribute(left)
        if value == "*":
            return ("present", attribute)
        if "*" not in value:
            return ("ava", 0xA3, attribute, self._value(value))
        pieces = value.split("*")
        substrings: list[tuple[int, _Value]] = []
        for i, piece in enumerate(pieces):
            if piece:
                ctag = 0x80 if i == 0 else 0x82 if i == len(pieces) - 1 else 0x81
                substrings.append((ctag, self._value(piece)))
            elif 0 < i < len(pieces) - 1:
                raise FilterError(f"empty substring ('**') in {item!r}")
        return ("substrings", attribute, tuple(substrings))

    def _extensible(self, spec: str, value: str) -> _Node:
        # attr [":dn"] [":" rule] ":=" value   |   [":dn"] ":" rule ":=" value
        parts = spec.split(":")
        attribute = parts[0]
        rest = parts[1:]
        dn_attributes = False
        if rest and rest[0].lower() == "dn":
            dn_attributes = True
            rest = rest[1:]
        if len(rest) > 1:
            raise FilterError(f"bad extensible match {spec!r}:=")
        rule = rest[0] if rest else None
        if rule is not None and not _RULE.match(rule):
            raise FilterError(f"bad matching rule {rule!r}")
        if not attribute and rule is None:
            raise FilterError("an extensible match without an attribute needs a matching rule")
        return (
            "extensible",
            rule.encode("ascii") if rule is not None else None,
            self._attribute(attribute) if attribute else None,
            self._value(value),
            dn_attributes,
        )


def _join(value: _Value, filler: bytes) -> bytes:
    if len(value) == 1 and value[0] is not None:
        return value[0]
    return b"".join(filler if part is None else part for part in value)


def _encode_node(node: _Node, filler: bytes) -> bytes:
    kind = node[0]
    if kind == "ava":
        _, tag, attribute, value = node
        return _tlv(tag, _tlv(_OCTET_STRING, attribute) + _tlv(_OCTET_STRING, _join(value, filler)))
    if kind == "set":
        return _tlv(node[1], b"".join(_encode_node(child, filler) for child in node[2]))
    if kind == "not":
        return _tlv(0xA2, _encode_node(node[1], filler))
    if kind == "present":
        return _tlv(0x87, node[1])
    if kind == "substrings":
        _, attribute, parts = node
        body = b"".join(_tlv(ctag, _join(value, filler)) for ctag, value in parts)
        return _tlv(0xA4, _tlv(_OCTET_STRING, attribute) + _tlv(_SEQUENCE, body))
    if kind == "extensible":
        _, rule, attribute, value, dn_attributes = node
        body = b""
        if rule is not None:
            body += _tlv(0x81, rule)
        if attribute is not None:
            body += _tlv(0x82, attribute)
        body += _tlv(0x83, _join(value, filler))
        if dn_attributes:
            body += b"\x84\x01\xff"
        return _tlv(0xA9, body)
    raise AssertionError(f"unknown filter node {kind!r}")


def compile_filter(text: str) -> bytes:
    """The BER ``Filter`` for an RFC 4515 string; :class:`FilterError` if it is not one."""
    return _encode_node(_Parser(text.strip(), None).parse(), b"")


class FilterTemplate:
    """A filter template (``{username}`` placeholders) parsed once.

    ``encode(name)`` equals ``compile_filter(template.format(username=escape(name)))`` for the
    RFC 4515 escaping in :func:`radmfa.directory.ldap.build_user_filter`: escaping turns the name
    into literal octets, so the parse cannot depend on it, and the octets are spliced into the
    parsed values directly. A placeholder outside a value (an attribute name, say) makes the
    template fall back to formatting and parsing on every call.
    """

    #: Stands in for the user name while parsing; a noncharacter no template contains.
    _HOLE = "\U0010fffe"

    def __init__(self, template: str, escape: Callable[[str], str]) -> None:
        self.template = template
        self._escape = escape
        self._node: _Node | None = None
        compile_filter(template.format(username="x"))  # FilterError now, not per request
        if self._HOLE in template:
            return
        try:
            self._node = _Parser(template.format(username=self._HOLE).strip(), self._HOLE).parse()
        except FilterError:
            self._node = None

    def encode(self, username: str) -> bytes:
        if self._node is None or not username:
            return compile_filter(self.template.format(username=self._escape(username)))
        return _encode_node(self._node, _utf8(username))
