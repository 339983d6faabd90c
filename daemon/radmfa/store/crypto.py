"""Sealing token secrets at rest: AES-256-GCM with a key kept in its own file, outside the DB.

A database dump or backup alone reveals no shared secret; the key file is the one thing to keep
private (mode 0600) and to back up separately. Every sealed blob carries a key id so that a key
rotation can later tell old blobs from new ones, and is bound to caller-chosen associated data
(for token secrets: the user and the token id) so a blob moved to another row fails to open.

Blob layout: ``version (1 byte) | key id (8 bytes) | nonce (12 bytes) | ciphertext + tag``.
The version and key id are authenticated too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_FILE_HEADER",
    "KeyFileError",
    "SecretBox",
    "SecretBoxError",
    "pending_secret_aad",
    "token_secret_aad",
]

#: First line of a key file; the version lets a later format coexist with this one.
KEY_FILE_HEADER = "radmfa-secret-key-v1"

_BLOB_VERSION = 1
_KEY_BYTES = 32
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _KEY_ID_BYTES
_MIN_BLOB = _HEADER_BYTES + _NONCE_BYTES + _TAG_BYTES


class SecretBoxError(Exception):
    """A blob cannot be opened: tampered, truncated, sealed with another key, or wrong AAD."""


class KeyFileError(SecretBoxError):
    """The key file is missing, unsafe (group/world accessible) or malformed."""


def token_secret_aad(user: str, token_id: str) -> bytes:
    """Associated data binding a token secret to its row; length-prefixed so it is unambiguous."""
    parts = [b"radmfa/token-secret/v1", user.encode("utf-8"), token_id.encode("utf-8")]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def pending_secret_aad(session_key: bytes, description: str) -> bytes:
    """Associated data binding the secret of a portal session's pending enrolment to that
    session and to the token it describes (a blob moved to another session, or a changed
    description, fails to open)."""
    parts = [b"radmfa/portal-pending/v1", session_key, description.encode("utf-8")]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


class SecretBox:
    """AES-256-GCM with one key. The key never appears in ``repr`` or error messages."""

    __slots__ = ("_aead", "_key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise SecretBoxError(f"an AES-256 key is {_KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._key_id = hashlib.sha256(key).digest()[:_KEY_ID_BYTES]

    @property
    def key_id(self) -> bytes:
        """First bytes of SHA-256(key): names the key in blobs, for future rotation."""
        return self._key_id

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self._key_id.hex()})"

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str], create: bool = True) -> SecretBox:
        """Load the key at ``path``; with ``create``, generate it first if the file is missing.

        A file readable or writable by group or others is refused rather than silently used.
        """
        path = os.fspath(path)
        try:
            return cls(_read_key_file(path))
        except FileNotFoundError:
            if not create:
                raise KeyFileError(
                    f"key file {path} does not exist; without it the token secrets in the "
                    "database cannot be decrypted (restore it from backup)"
                ) from None
        _create_key_file(path)
        try:
            return cls(_read_key_file(path))
        except FileNotFoundError:
            raise KeyFileError(f"key file {path} vanished right after it was created") from None

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        header = bytes([_BLOB_VERSION]) + self._key_id
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + self._aead.encrypt(nonce, plaintext, header + aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < _MIN_BLOB:
            raise SecretBoxError(f"sealed blob is truncated ({len(blob)} bytes)")
        if blob[0] != _BLOB_VERSION:
            raise SecretBoxError(f"sealed blob has unknown format version {blob[0]}")
        header = blob[:_HEADER_BYTES]
        key_id = header[1:]
        if key_id != self._key_id:
            raise SecretBoxError(
                f"blob was sealed with key id {key_id.hex()}, but the loaded key has id "
                f"{self._key_id.hex()}: wrong key file?"
            )
        nonce = blob[_HEADER_BYTES : _HEADER_BYTES + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[_HEADER_BYTES + _NONCE_BYTES :], header + aad)
        except InvalidTag:
            raise SecretBoxError(
                "sealed blob failed authentication: tampered, or moved from another record"
            ) from None


def _read_key_file(path: str) -> bytes:
    """Return the raw key; FileNotFoundError passes through so the caller may create it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise KeyFileError(f"cannot open key file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        data = os.read(fd, 4096)
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    return _parse_key_file(path, data)


def _parse_key_file(path: str, data: bytes) -> bytes:
    try:
        lines = [line.strip() for line in data.decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is malformed: not ASCII text") from None
    if not lines or lines[0] != KEY_FILE_HEADER:
        raise KeyFileError(f"key file {path} is malformed: first line must be {KEY_FILE_HEADER}")
    if len(lines) != 2:
        raise KeyFileError(f"key file {path} is malformed: expected one base64 key line")
    try:
        key = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"key file {path} is malformed: the key line is not base64") from None
    if len(key) != _KEY_BYTES:
        raise KeyFileError(
            f"key file {path} is malformed: key is {len(key)} bytes, expected {_KEY_BYTES}"
        )
    return key


def _create_key_file(path: str) -> None:
    """Create ``path`` (mode 0600) with a fresh key, complete or not at all.

    The key is written to a private temporary file (O_CREAT|O_EXCL, 0600), synced, then
    hard-linked into place: ``link`` fails if the name exists, so two processes starting at once
    end up sharing the winner's key, and a crash never leaves a half-written key file behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    text = f"{KEY_FILE_HEADER}\n{base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()}\n"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise KeyFileError(f"cannot create key file {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text.encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race: use its key
            os.link(tmp, path)
    except OSError as e:
        raise KeyFileError(f"cannot create key file {path}: {e.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
