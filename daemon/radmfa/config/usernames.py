"""The ``usernames`` section: how a User-Name becomes one identity."""

from __future__ import annotations

from dataclasses import dataclass

from radmfa.config.load import Section

__all__ = ["USERNAMES_KEYS", "UsernamesConfig", "parse_usernames"]

USERNAMES_KEYS = ("strip_realm",)


@dataclass(frozen=True)
class UsernamesConfig:
    """How a User-Name becomes the one identity behind lockout, tokens and replay state."""

    #: ``CORP\alice`` and ``alice@corp.example`` become ``alice`` (Active Directory accepts
    #: all three for one account, so all three must share one failure counter).
    strip_realm: bool = False


def parse_usernames(s: Section) -> UsernamesConfig:
    return UsernamesConfig(
        strip_realm=s.get_bool("strip_realm", UsernamesConfig.strip_realm),
    )
