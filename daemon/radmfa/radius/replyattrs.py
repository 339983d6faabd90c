"""Reply attributes a policy rule adds to its Access-Accepts (VLAN, filter, role, class).

Names and values are checked against the dictionary when the configuration is read, and
encoded then, once: a request only appends ready bytes. The dictionary is radmfa's own
(``dictionary`` and ``dictionary.reply``, package data) plus the FreeRADIUS-format files an
admin names (``dictionary:``), parsed by pyrad (the format's quirks are its job; its encoder
is not used: the rules below are ours and tested byte for byte).

- ``Name`` or ``Name:tag`` (RFC 2868 tags 1-31, for attributes that have one); a list of values
  sends the attribute once per value, in order.
- string: UTF-8 text; octets: text, or ``0x`` and hex digits; integer, byte, short: a number or
  a ``VALUE`` name of the dictionary; ipaddr, ipv6addr: an address.
- Vendor attributes go in a Vendor-Specific attribute each (RFC 2865 §5.26, one vendor
  attribute per Vendor-Specific, the layout every NAS reads).
- Refused: attributes radmfa writes itself or that belong in requests (State, Proxy-State,
  Message-Authenticator, passwords, EAP-Message), attributes the dictionary says are
  encrypted with the shared secret, vendors whose attribute format is not RFC 2865's (pyrad
  skips them: they read as unknown), and values that do not fit 253 bytes.
"""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyrad.dictionary import Dictionary

__all__ = [
    "RESERVED",
    "ReplyAttribute",
    "ReplyDictionary",
    "load_reply_dictionary",
]

VENDOR_SPECIFIC = 26
MAX_VALUE = 253
#: A vendor attribute inside Vendor-Specific: 4 bytes of vendor id, 2 of vendor header.
MAX_VENDOR_VALUE = MAX_VALUE - 6
MAX_TAG = 0x1F

#: Never from configuration: written by radmfa itself, or meaningless (or harmful) in an
#: Access-Accept.
RESERVED = frozenset(
    {
        "User-Password",
        "CHAP-Password",
        "CHAP-Challenge",
        "State",
        "Proxy-State",
        "Message-Authenticator",
        "EAP-Message",
        "Vendor-Specific",
    }
)

_INTEGER_SIZES = {"byte": 1, "short": 2, "integer": 4, "integer64": 8}
_SUPPORTED = frozenset({"string", "octets", "ipaddr", "ipv6addr", *_INTEGER_SIZES})


@dataclass(frozen=True)
class ReplyAttribute:
    """One attribute as configured (``name``, the value's text) and on the wire (``wire``:
    type, length and value; a Vendor-Specific with its header for a vendor attribute)."""

    name: str
    text: str
    wire: bytes


class ReplyDictionary:
    """Attribute definitions by name, case-insensitively (FreeRADIUS matches names so)."""

    def __init__(self, dictionary: Dictionary) -> None:
        self._dictionary = dictionary
        self._by_name = {name.lower(): name for name in dictionary.attributes}

    def encode(self, spelled: str, value: Any) -> ReplyAttribute:
        """``spelled`` (``Name`` or ``Name:tag``) with ``value`` (a YAML scalar), encoded;
        ValueError with a message for the admin when the dictionary says no."""
        name_text, _, tag_text = spelled.partition(":")
        name = self._by_name.get(name_text.strip().lower())
        if name is None:
            raise ValueError(
                f"unknown attribute {name_text.strip()!r}: not in radmfa's dictionary nor in "
                "the files of the dictionary option"
            )
        if name in RESERVED:
            raise ValueError(
                f"{name} cannot be set by a rule (radmfa writes it or it belongs in requests)"
            )
        attribute = self._dictionary.attributes[name]
        if getattr(attribute, "encrypt", 0):
            raise ValueError(f"{name} is encrypted with the shared secret; radmfa does not send it")
        kind = attribute.type
        if kind not in _SUPPORTED:
            raise ValueError(f"{name} has type {kind}, which a rule cannot set")
        tag = _tag(name, tag_text, spelled, bool(attribute.has_tag))
        text = _scalar_text(name, value)
        data = _value(name, kind, text, getattr(attribute, "values", None))
        if attribute.has_tag:
            data = _tagged(name, kind, data, tag)
        vendor = attribute.vendor
        if vendor:
            if len(data) > MAX_VENDOR_VALUE:
                raise ValueError(
                    f"{name}: {len(data)} bytes; a vendor attribute holds {MAX_VENDOR_VALUE}"
                )
            vendor_id = int(self._dictionary.vendors[vendor])
            inner = bytes((attribute.code, len(data) + 2)) + data
            wire = _attribute(VENDOR_SPECIFIC, vendor_id.to_bytes(4, "big") + inner)
        else:
            if len(data) > MAX_VALUE:
                raise ValueError(
                    f"{name}: {len(data)} bytes; an attribute holds {MAX_VALUE} at most"
                )
            wire = _attribute(attribute.code, data)
        return ReplyAttribute(name if not tag_text else f"{name}:{tag}", text, wire)


def load_reply_dictionary(paths: Sequence[str] = ()) -> ReplyDictionary:
    """radmfa's dictionaries, then the files in ``paths`` (FreeRADIUS format). OSError or
    ValueError (a parse error, naming the file and line) when a file cannot be used."""
    from pyrad.dictionary import Dictionary, ParseError

    package = resources.files("radmfa.radius")
    own = [
        io.StringIO(package.joinpath(n).read_text("utf-8"))
        for n in ("dictionary", "dictionary.reply")
    ]
    try:
        dictionary = Dictionary(*own)
        for path in paths:
            dictionary.ReadDictionary(path)
    except ParseError as e:
        raise ValueError(str(e)) from None
    return ReplyDictionary(dictionary)


def _attribute(code: int, data: bytes) -> bytes:
    if not data:
        raise ValueError("empty value")
    return bytes((code, len(data) + 2)) + data


def _tag(name: str, tag_text: str, spelled: str, has_tag: bool) -> int:
    if not tag_text:
        return 0
    if not has_tag:
        raise ValueError(f"{name} has no tag; write {name} without :{tag_text}")
    try:
        tag = int(tag_text)
    except ValueError:
        tag = -1
    if not 1 <= tag <= MAX_TAG:
        raise ValueError(f"{spelled!r}: a tag is a number from 1 to {MAX_TAG}")
    return tag


def _scalar_text(name: str, value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise ValueError("give a text, a number or an address")
    return str(value)


def _value(name: str, kind: str, text: str, values: Any) -> bytes:
    if kind == "string":
        data = text.encode("utf-8")
    elif kind == "octets":
        data = _octets(name, text)
    elif kind == "ipaddr":
        data = _address(name, text, ipaddress.IPv4Address)
    elif kind == "ipv6addr":
        data = _address(name, text, ipaddress.IPv6Address)
    else:
        data = _integer(name, kind, text, values)
    if not data:
        raise ValueError("an empty value is not sent (RFC 2865 §5)")
    return data


def _octets(name: str, text: str) -> bytes:
    if text[:2].lower() != "0x":
        return text.encode("utf-8")
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise ValueError(f"{text!r} is not 0x followed by pairs of hex digits") from None


def _address(
    name: str, text: str, family: type[ipaddress.IPv4Address | ipaddress.IPv6Address]
) -> bytes:
    try:
        return family(text.strip()).packed
    except ValueError:
        what = "an IPv4" if family is ipaddress.IPv4Address else "an IPv6"
        raise ValueError(f"{text!r} is not {what} address") from None


def _integer(name: str, kind: str, text: str, values: Any) -> bytes:
    size = _INTEGER_SIZES[kind]
    number = _named_value(text, values, size)
    if number is None:
        try:
            number = int(text.strip(), 10)
        except ValueError:
            names = sorted(values.forward) if values else []
            hint = f" or one of {', '.join(names[:12])}" if names else ""
            raise ValueError(f"{text!r} is not a number{hint}") from None
    if not 0 <= number < 1 << (8 * size):
        raise ValueError(f"{number} is out of range ({kind}: 0 to {(1 << (8 * size)) - 1})")
    return number.to_bytes(size, "big")


def _named_value(text: str, values: Any, size: int) -> int | None:
    """A ``VALUE`` name of the dictionary (pyrad keeps their encoded bytes)."""
    if not values:
        return None
    names: Iterable[str] = values.forward
    wanted = text.strip().lower()
    for known in names:
        if known.lower() == wanted:
            encoded = values.forward[known]
            return int.from_bytes(encoded, "big") if isinstance(encoded, bytes) else int(encoded)
    return None


def _tagged(name: str, kind: str, data: bytes, tag: int) -> bytes:
    """RFC 2868 §3: an integer's first byte is the tag (its value keeps 24 bits); a string
    gets a tag byte when it has a tag, or when its first byte would read as one."""
    if kind == "integer":
        if data[0]:
            raise ValueError("a tagged integer holds 24 bits at most")
        return bytes((tag,)) + data[1:]
    if tag or data[0] <= MAX_TAG:
        return bytes((tag,)) + data
    return data
