"""Whether the entry a user search found is named by the user name it was found with.

The directory decides which entry a name finds, with its own matching rules (OpenLDAP's
caseIgnoreMatch, Active Directory's collation); radmfa keys lockout, tokens and admin state on
its own canonical identity (:mod:`radmfa.auth.identity`). If the two ever disagree - a
spelling the directory equates with ``alice`` that our rule does not, or an alias value of a
multi-valued naming attribute, or another attribute of a filter such as
``(|(uid={username})(mail={username}))`` - the same account would have two sets of state, and
a disabled, locked or enrolled user could log in through the other one. So search-then-bind
accepts an entry only when its one own name (:func:`entry_names`) is the user name under our
identity rule. Both LDAP engines apply this before the user bind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ldap import AVA_BINARY
from ldap.dn import str2dn

from radmfa.auth.identity import name_key

#: ``(attr={username})``: an equality assertion of the whole user name.
_ASSERTION = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)\s*=\s*\{username\}\s*\)")


def naming_attributes(user_filter: str) -> tuple[str, ...]:
    """The attributes the user filter compares with the whole user name, each once."""
    seen: dict[str, str] = {}
    for name in _ASSERTION.findall(user_filter):
        seen.setdefault(name.lower(), name)
    return tuple(seen.values())


def rdn_values(dn: str, attribute: str) -> list[str]:
    """The values of ``attribute`` in the first RDN of ``dn`` (several for ``a=x+b=y``).

    libldap parses the DN (``ldap_str2dn``, RFC 4514: escapes, quotes, multi-valued RDNs)
    and unescapes the values: the parser every client of the directory uses, in C, a
    microsecond a login. A value in the BER form (``uid=#04...``) or a DN libldap refuses
    gives no RDN answer (the attributes then name the entry)."""
    try:
        rdns = str2dn(dn)
    except Exception:  # a DN the directory sent us that libldap cannot parse
        return []
    if not rdns:
        return []
    wanted = attribute.lower()
    values = []
    for name, value, flags in rdns[0]:
        if name.lower() == wanted:
            if flags & AVA_BINARY or not isinstance(value, str):
                return []
            values.append(value.strip())
    return values


def entry_names(
    dn: str, attributes: Mapping[str, Sequence[str]], naming: Sequence[str]
) -> list[str]:
    """The entry's own name(s) under the filter: the values in its RDN of the first naming
    attribute the RDN uses; without one, the values of the first naming attribute (in the
    filter's order) the entry has. One name only, never one per attribute or alias: every
    other value that finds the entry would key a second set of state."""
    for attribute in naming:
        in_rdn = rdn_values(dn, attribute)
        if in_rdn:
            return in_rdn
    lowered = {name.lower(): values for name, values in attributes.items()}
    for attribute in naming:
        values = [value.strip() for value in lowered.get(attribute.lower(), ()) if value.strip()]
        if values:
            return values
    return []


def entry_name_mismatch(
    dn: str,
    attributes: Mapping[str, Sequence[str]],
    naming: Sequence[str],
    username: str,
) -> str | None:
    """None when the entry is named ``username``; else how the directory names it (or why
    it cannot tell), for the log line that refuses the login."""
    if not naming:
        return None
    names = entry_names(dn, attributes, naming)
    if not names:
        return f"no readable {'/'.join(naming)} in the entry"
    keys = {name_key(name) for name in names}
    if len(keys) > 1:  # attribute values have no order: none of them is the entry's own
        return f"several names ({', '.join(names)}) and none in its RDN"
    if name_key(username) in keys:
        return None
    return names[0]
