"""The ``local_users`` section: a users file instead of a directory, for demos and labs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from radmfa.config.load import Section, required

__all__ = ["LOCAL_USERS_KEYS", "LocalUsersConfig", "parse_local_users"]

LOCAL_USERS_KEYS = ("path", "groups_file")


@dataclass(frozen=True)
class LocalUsersConfig:
    """A users file (``name:scrypt-hash[:group,...]`` lines) for demos and labs without a
    directory; groups may also come from a side file (``group: member member @group``)."""

    path: str
    groups_file: str | None = None


def parse_local_users(s: Section) -> LocalUsersConfig:
    value = required(s, "path", "give the users file, e.g. /etc/radmfa/users")
    path = value.as_path() if value is not None else None
    groups_file = s.get_path("groups_file", None)
    if groups_file is not None and not Path(groups_file).is_file():
        s.error("groups_file", f"{groups_file} does not exist or is not a file")
    return LocalUsersConfig(path=path or "", groups_file=groups_file)
