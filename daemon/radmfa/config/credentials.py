"""Secrets kept outside the YAML file: ``*_file`` keys (a file read at load time) and
``*_credential`` keys (a systemd ``LoadCredential=`` secret in ``$CREDENTIALS_DIRECTORY``).

Problems are reported on the key's value like every other setting.
"""

from __future__ import annotations

import os
from pathlib import Path

from radmfa.config.load import Section, Value

__all__ = ["credentials_directory", "read_credential", "read_secret_file", "read_text_secret"]


def read_secret_file(value: Value) -> bytes | None:
    """The file's contents without the trailing newline; problems are reported on ``value``."""
    path = value.as_path()
    if path is None:
        return None
    try:
        data = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        value.error(f"cannot read {path}: {exc.strerror or exc}")
        return None
    if not data:
        value.error(f"{path} is empty")
        return None
    value.warn_if_others_can_read(path)
    return data


def credentials_directory() -> str | None:
    """``$CREDENTIALS_DIRECTORY``: where systemd puts ``LoadCredential=`` secrets for us."""
    return os.environ.get("CREDENTIALS_DIRECTORY") or None


def read_credential(value: Value) -> bytes | None:
    """A systemd credential by name: ``$CREDENTIALS_DIRECTORY/NAME``, trailing newline dropped."""
    name = value.as_str()
    if name is None:
        return None
    if "/" in name or name in (".", ".."):
        value.error(f"{name!r} is not a credential name (no '/'); it is the ID in LoadCredential=")
        return None
    hint = f"LoadCredential={name}:/etc/credstore/radmfa-{name}"
    directory = credentials_directory()
    if directory is None:
        value.error(
            f"credential {name!r}: $CREDENTIALS_DIRECTORY is not set, so this only works under "
            f"systemd with {hint} in the unit (outside systemd use a *_file key instead)"
        )
        return None
    path = os.path.join(directory, name)
    try:
        data = Path(path).read_bytes().rstrip(b"\r\n")
    except FileNotFoundError:
        value.error(
            f"credential {name!r} is not in $CREDENTIALS_DIRECTORY ({directory}); "
            f"add {hint} to the unit (systemctl edit radmfa)"
        )
        return None
    except OSError as exc:
        value.error(f"cannot read credential {name!r} ({path}): {exc.strerror or exc}")
        return None
    if not data:
        value.error(f"credential {name!r} ({path}) is empty")
        return None
    return data


def read_text_secret(s: Section, key: str) -> str | None:
    """The secret of a ``*_file`` or ``*_credential`` key as UTF-8 text (a password)."""
    value = s.get(key)
    reader = read_credential if key.endswith("_credential") else read_secret_file
    data = reader(value) if value is not None else None
    if value is None or data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        value.error("the file is not UTF-8 text")
        return None
