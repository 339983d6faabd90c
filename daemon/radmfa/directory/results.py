"""What an LDAP operation on a pooled connection hands back: plain values, no protocol.

The libldap engine's connections (:mod:`radmfa.directory.ldap_libldap`) make them from
libldap's answers; the check (:mod:`radmfa.directory.pooled`) judges them with
:mod:`radmfa.directory.answers`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LdapResult", "SearchEntry", "SearchOutcome"]


@dataclass(frozen=True, slots=True)
class LdapResult:
    """The final result of a bind or a search (the connection checked that it is one of the
    request's own type)."""

    code: int
    matched_dn: str = ""
    diagnostic: str = ""


@dataclass(frozen=True, slots=True)
class SearchEntry:
    dn: str
    #: (attribute description, values) in the order the server sent them.
    attributes: tuple[tuple[str, tuple[bytes, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    done: LdapResult
    #: ``searchResEntry`` results (at most two kept); references are only counted (L-09).
    entries: tuple[SearchEntry, ...]
    references: int
    #: More entries arrived than were kept (a server ignoring the size limit).
    overflow: bool = False
