"""Who a request is about: the one canonical identity that keys every piece of user state.

Directories match user names loosely: OpenLDAP's caseIgnoreMatch and Active Directory fold
case, map compatibility characters (``alice`` in fullwidth letters, U+FF41...) and collapse
inner spaces, so fullwidth or half-fullwidth spellings, ``ALICE`` and ``alice`` bind as one
account. Every spelling the
directory treats as one account must share one lockout counter, one set of tokens, one
disable flag and one grace period here, or a variant spelling walks around them. The rule:

1. strict UTF-8; no control, format or line/paragraph separator characters;
2. Unicode NFKC (compatibility forms become their plain letters);
3. surrounding white space removed, inner runs of white space become one space;
4. with ``usernames.strip_realm``, ``DOMAIN\\alice`` and ``alice@realm`` become ``alice``;
5. the store key is that name case-folded (and NFKC again, since folding can denormalise).

A name containing a character whose case folding is not one character for one (German
``ß`` folds to ``ss``, Turkish ``İ`` to ``i`` plus a combining dot) is refused: directories
disagree with Python, and with each other, about such characters (OpenLDAP uses the simple
one-to-one folding, under which ``İ`` is ``i``), so no key we could pick is safely the
directory's. Search-then-bind adds a last check: the entry the directory found must carry
the name under this rule (:func:`radmfa.directory.naming.entry_names`).
"""

from __future__ import annotations

import enum
import unicodedata

#: Longest accepted name (RADIUS attributes hold 253 bytes; this counts characters).
MAX_NAME_LENGTH = 253


class NameProblem(enum.Enum):
    """Why a User-Name cannot key any state."""

    #: Not UTF-8, empty, too long, or with control/format characters.
    INVALID = "invalid"
    #: A character without a safe one-to-one case folding (see the module docstring).
    UNSAFE = "unsafe"


def _bad_character(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def _unsafe_character(text: str) -> str | None:
    """The first character whose full case folding differs in length from one character."""
    for ch in text:
        if len(ch.casefold()) != 1:
            return ch
    return None


def check_user(raw: bytes | None, *, strip_realm: bool = False) -> str | NameProblem:
    """The canonical user name (case kept, for display and for the directory), or why the
    name is refused."""
    if not raw:
        return NameProblem.INVALID
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return NameProblem.INVALID
    if text.isascii() and text.isprintable():
        # Printable ASCII needs no normalisation and holds none of the refused categories:
        # skip the per-character walks for the names almost every deployment has.
        if "  " in text or text.startswith(" ") or text.endswith(" "):
            text = " ".join(text.split())
    else:
        text = unicodedata.normalize("NFKC", text).strip()
        if _bad_character(text):
            return NameProblem.INVALID
        text = " ".join(text.split())
        if _unsafe_character(text) is not None:
            return NameProblem.UNSAFE
    if not text or len(text) > MAX_NAME_LENGTH:
        return NameProblem.INVALID
    if strip_realm:
        name = text.rpartition("\\")[2]  # DOMAIN\alice -> alice
        local, at, _realm = name.rpartition("@")
        text = (local if at else name).strip()  # alice@realm -> alice
        if not text:
            return NameProblem.INVALID
    return text


def canonical_user(raw: bytes | None, *, strip_realm: bool = False) -> str | None:
    """:func:`check_user` for callers that only need to know whether a name is acceptable."""
    user = check_user(raw, strip_realm=strip_realm)
    return None if isinstance(user, NameProblem) else user


def store_key(user: str) -> str:
    """The key of lockout, token, replay, status and device state for a canonical name:
    directories match names case-insensitively, so "Alice" and "alice" share one of each."""
    if user.isascii():
        return user.lower()
    return unicodedata.normalize("NFKC", user.casefold())


def name_key(text: str) -> str:
    """Any name as a key, whatever its source (a directory attribute, a policy rule's user
    or group list): the same NFKC, white-space and case rule as a RADIUS User-Name, without
    refusing anything (a name we would refuse then simply matches no request)."""
    return store_key(" ".join(unicodedata.normalize("NFKC", text).split()))


def decode_password(raw: bytes | None) -> str | None:
    """Strict UTF-8: distinct byte strings must never collapse to the same password."""
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
