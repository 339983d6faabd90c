"""SecretBox: AES-256-GCM sealing of token secrets and the key file that holds its key."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import pytest

from radmfa.store.crypto import (
    KEY_FILE_HEADER,
    KeyFileError,
    SecretBox,
    SecretBoxError,
    token_secret_aad,
)

KEY = bytes(range(32))
AAD = token_secret_aad("alice", "tok-1")


def _mode(path: os.PathLike[str] | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _write_key_file(path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)


def test_seal_then_open_returns_the_plaintext() -> None:
    box = SecretBox(KEY)
    assert box.open(box.seal(b"s3cret", AAD), AAD) == b"s3cret"


def test_blob_layout_is_version_key_id_nonce_ciphertext() -> None:
    box = SecretBox(KEY)
    blob = box.seal(b"x" * 20, AAD)
    assert blob[0] == 1
    assert blob[1:9] == hashlib.sha256(KEY).digest()[:8] == box.key_id
    assert len(blob) == 1 + 8 + 12 + 20 + 16


def test_each_seal_uses_a_fresh_nonce() -> None:
    box = SecretBox(KEY)
    assert box.seal(b"same", AAD) != box.seal(b"same", AAD)


def test_plaintext_does_not_appear_in_the_blob() -> None:
    secret = b"very-recognisable-secret"
    assert secret not in SecretBox(KEY).seal(secret, AAD)


def test_wrong_aad_is_refused() -> None:
    box = SecretBox(KEY)
    blob = box.seal(b"s3cret", AAD)
    with pytest.raises(SecretBoxError, match="authentication"):
        box.open(blob, token_secret_aad("bob", "tok-1"))


@pytest.mark.parametrize(
    "index", [0, 1, 9, 21, -1], ids=["version", "key-id", "nonce", "ct", "tag"]
)
def test_any_flipped_byte_is_refused(index: int) -> None:
    box = SecretBox(KEY)
    blob = bytearray(box.seal(b"s3cret-value", AAD))
    blob[index] ^= 0x01
    with pytest.raises(SecretBoxError):
        box.open(bytes(blob), AAD)


def test_truncated_blob_is_refused() -> None:
    box = SecretBox(KEY)
    with pytest.raises(SecretBoxError, match="truncated"):
        box.open(box.seal(b"", AAD)[:-1], AAD)


def test_other_key_is_refused_naming_both_key_ids() -> None:
    blob = SecretBox(KEY).seal(b"s3cret", AAD)
    other = SecretBox(bytes(32))
    with pytest.raises(SecretBoxError, match="wrong key file") as info:
        other.open(blob, AAD)
    assert other.key_id.hex() in str(info.value)


def test_key_must_be_32_bytes() -> None:
    with pytest.raises(SecretBoxError, match="32 bytes"):
        SecretBox(b"short")


def test_repr_shows_key_id_not_key() -> None:
    text = repr(SecretBox(KEY))
    assert SecretBox(KEY).key_id.hex() in text
    assert KEY.hex() not in text
    assert base64.b64encode(KEY).decode() not in text


def test_token_aad_is_unambiguous() -> None:
    assert token_secret_aad("ab", "c") != token_secret_aad("a", "bc")
    assert token_secret_aad("alice", "t") != token_secret_aad("bob", "t")


def test_missing_key_file_is_created_0600_in_a_new_directory(tmp_path) -> None:
    path = tmp_path / "state" / "secret.key"
    box = SecretBox.from_key_file(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    lines = path.read_text().splitlines()
    assert lines[0] == KEY_FILE_HEADER
    assert SecretBox(base64.b64decode(lines[1])).key_id == box.key_id
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left


def test_existing_key_file_is_reused(tmp_path) -> None:
    path = tmp_path / "secret.key"
    first = SecretBox.from_key_file(path)
    blob = first.seal(b"s3cret", AAD)
    second = SecretBox.from_key_file(path)
    assert second.key_id == first.key_id
    assert second.open(blob, AAD) == b"s3cret"


def test_key_file_is_created_with_0600_whatever_the_umask(tmp_path) -> None:
    old = os.umask(0)
    try:
        SecretBox.from_key_file(tmp_path / "k")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o600


def test_missing_key_file_without_create_is_an_error(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        SecretBox.from_key_file(tmp_path / "absent.key", create=False)
    assert not (tmp_path / "absent.key").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_accessible_to_others_is_refused_with_chmod_hint(tmp_path, mode: int) -> None:
    path = tmp_path / "secret.key"
    SecretBox.from_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        SecretBox.from_key_file(path)
    assert f"{mode:04o}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "first line"),
        ("not-a-key\n" + base64.b64encode(KEY).decode() + "\n", "first line"),
        (KEY_FILE_HEADER + "\n", "one base64 key line"),
        (KEY_FILE_HEADER + "\n!!!notbase64!!!\n", "not base64"),
        (KEY_FILE_HEADER + "\n" + base64.b64encode(b"x" * 16).decode() + "\n", "16 bytes"),
        (KEY_FILE_HEADER + "\nAAAA\nAAAA\n", "one base64 key line"),
    ],
    ids=["empty", "bad-header", "no-key", "bad-base64", "short-key", "extra-line"],
)
def test_malformed_key_file_is_refused(tmp_path, text: str, reason: str) -> None:
    path = tmp_path / "secret.key"
    _write_key_file(path, text)
    with pytest.raises(KeyFileError, match=reason):
        SecretBox.from_key_file(path)


def test_malformed_key_error_does_not_echo_key_material(tmp_path) -> None:
    path = tmp_path / "secret.key"
    material = base64.b64encode(b"y" * 31).decode()
    _write_key_file(path, f"{KEY_FILE_HEADER}\n{material}\n")
    with pytest.raises(KeyFileError) as info:
        SecretBox.from_key_file(path)
    assert material not in str(info.value)


def test_key_file_that_is_a_directory_is_refused(tmp_path) -> None:
    path = tmp_path / "secret.key"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        SecretBox.from_key_file(path)
