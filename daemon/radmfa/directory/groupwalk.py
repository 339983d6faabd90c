"""Which group searches a lookup makes and what they found (``ldap.groups``): the walk from
a user's DN to the groups that hold it, nested or not, and the search for the groups policy
rules name. Pure: the engines send the filters and hand back the DNs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ldap3.utils.conv import escape_filter_chars

from radmfa.config import LdapGroupsConfig

__all__ = ["AD_IN_CHAIN", "MAX_GROUPS", "GroupWalk", "group_probe_filter"]

#: Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: membership through any nesting depth.
AD_IN_CHAIN = "1.2.840.113556.1.4.1941"
#: Group DNs one search asks about (OR-ed), and the groups one lookup collects at most.
_GROUP_CHUNK = 32
MAX_GROUPS = 1000


class GroupWalk:
    """Which group searches a lookup makes, level by level, and what they found.

    ``member``: groups whose member attribute names the user, then (nested) groups naming
    those, up to ``max_depth`` levels. ``memberof``: the user entry's memberOf values are the
    first level, nesting as for member. ``ad_chain``: one search with the in-chain rule gives
    every nested group at once. OpenLDAP has no in-chain rule, hence the explicit walk.
    Every engine drives this: :meth:`filters` for the next level, :meth:`add` with its results.
    """

    def __init__(self, settings: LdapGroupsConfig, user_dn: str, member_of: Sequence[str]) -> None:
        self.settings = settings
        self._found: dict[str, str] = {}
        #: The nesting level the next searches find (1: the user's own groups).
        self._level = 1
        self._frontier = [user_dn]
        if settings.membership == "memberof":
            direct = self._new(member_of)
            self._level = 2
            self._frontier = direct if settings.nested and settings.max_depth >= 2 else []

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self._found.values())

    def _new(self, dns: Sequence[str]) -> list[str]:
        fresh = []
        for dn in dns:
            key = dn.lower()
            if key not in self._found and len(self._found) < MAX_GROUPS:
                self._found[key] = dn
                fresh.append(dn)
        return fresh

    def filters(self) -> list[str]:
        """The searches of the next level (none: done)."""
        s = self.settings
        if not self._frontier:
            return []
        if s.membership == "ad_chain":
            value = escape_filter_chars(self._frontier[0])
            return [f"(&{s.filter}({s.member_attribute}:{AD_IN_CHAIN}:={value}))"]
        found = []
        for i in range(0, len(self._frontier), _GROUP_CHUNK):
            terms = "".join(
                f"({s.member_attribute}={escape_filter_chars(dn)})"
                for dn in self._frontier[i : i + _GROUP_CHUNK]
            )
            found.append(f"(&{s.filter}(|{terms}))")
        return found

    def add(self, dns: Sequence[str]) -> None:
        """The DNs the searches of this level returned."""
        fresh = self._new(dns)
        nested = self.settings.nested and self.settings.membership != "ad_chain"
        self._level += 1
        self._frontier = fresh if nested and self._level <= self.settings.max_depth else []


_ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def group_probe_filter(settings: LdapGroupsConfig, names: Sequence[str]) -> str:
    """One search for the groups policy rules name, under the lookups' own group filter: a
    name is looked for as a cn, a DN by its first RDN (the caller compares the DNs found)."""
    terms = []
    for name in names:
        attribute, value = "cn", name
        if "=" in name:
            first = _UNESCAPED_COMMA.split(name, maxsplit=1)[0]
            rdn_attribute, _eq, rdn_value = first.partition("=")
            if _ATTRIBUTE_NAME.fullmatch(rdn_attribute.strip()):
                attribute, value = rdn_attribute.strip(), rdn_value.replace("\\", "").strip()
        terms.append(f"({attribute}={escape_filter_chars(value)})")
    return f"(&{settings.filter}(|{''.join(terms)}))"
