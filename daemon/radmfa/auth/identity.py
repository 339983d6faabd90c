"""Who a request is about: the canonical user name that keys every piece of user state."""

from __future__ import annotations

import unicodedata


def canonical_user(raw: bytes | None, *, strip_realm: bool = False) -> str | None:
    """The user name as the directory will see it, or None when it is not acceptable.

    Strict UTF-8, NFC, surrounding blanks removed (directories ignore them when matching, so
    they must not create a second lockout counter), no control or format characters. With
    ``strip_realm``, ``DOMAIN\\alice`` and ``alice@realm`` become ``alice``.
    """
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = unicodedata.normalize("NFC", text).strip()
    if not text or len(text) > 253:
        return None
    # Printable ASCII holds none of these categories: skip the per-character walk for it.
    if not (text.isascii() and text.isprintable()) and any(
        unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text
    ):
        return None
    if strip_realm:
        name = text.rpartition("\\")[2]  # DOMAIN\alice -> alice
        local, at, _realm = name.rpartition("@")
        text = (local if at else name).strip()  # alice@realm -> alice
        if not text:
            return None
    return text


def store_key(user: str) -> str:
    """The key of lockout, token and replay state: directories match names case-insensitively,
    so "Alice" and "alice" must share one failure counter and one replay window."""
    return user.casefold()


def decode_password(raw: bytes | None) -> str | None:
    """Strict UTF-8: distinct byte strings must never collapse to the same password."""
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
