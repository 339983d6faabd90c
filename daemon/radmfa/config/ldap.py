"""The ``ldap`` section (and ``ldap.groups``): the directory that checks passwords, how a login
name becomes a DN, the service account, TLS, and how group membership is read."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit

from radmfa.config.credentials import read_text_secret
from radmfa.config.load import Section, Value, format_duration, placeholders, required
from radmfa.directory.naming import naming_attributes

__all__ = [
    "AD_GROUP_FILTER",
    "DEFAULT_GROUP_FILTER",
    "LDAP_GROUPS_KEYS",
    "LDAP_KEYS",
    "MAX_USER_CACHE",
    "LdapConfig",
    "LdapGroupsConfig",
    "parse_ldap",
    "parse_ldap_groups",
]

Membership = Literal["member", "memberof", "ad_chain"]
Engine = Literal["libldap", "ldap3"]
ENGINES: tuple[Engine, ...] = ("libldap", "ldap3")
#: Spellings of an engine that older configurations use: ``native`` was radmfa's own LDAP
#: client, replaced by libldap (same connections, pools and checks, OpenLDAP's protocol code).
_DEPRECATED_ENGINES: dict[str, Engine] = {"native": "libldap"}

#: What a group entry is, by default: OpenLDAP's groupOfNames or Active Directory's group.
#: Admitting only groupOfNames found no nested AD group, so rules on them never matched.
DEFAULT_GROUP_FILTER = "(|(objectClass=groupOfNames)(objectClass=group))"
#: ``ad_chain`` is Active Directory's own rule: its groups are objectClass=group.
AD_GROUP_FILTER = "(objectClass=group)"


@dataclass(frozen=True)
class LdapGroupsConfig:
    """How group membership is read (search-then-bind only, on the service connection)."""

    #: "member": search groups whose member attribute names the user (groupOfNames);
    #: "memberof": the user entry's memberOf, read by the user search itself (no extra search
    #: for direct groups); "ad_chain": Active Directory's in-chain matching rule
    #: (1.2.840.113556.1.4.1941), every nested group in one search.
    membership: Membership = "member"
    #: Where groups are searched; None: ``ldap.base_dn``.
    base_dn: str | None = None
    filter: str = DEFAULT_GROUP_FILTER
    member_attribute: str = "member"
    #: Groups of groups count: expanded level by level ("member", "memberof").
    nested: bool = True
    max_depth: int = 5


@dataclass(frozen=True)
class LdapConfig:
    servers: tuple[str, ...]
    user_dn: str | None = None  # direct bind template with {username}
    base_dn: str | None = None  # search-then-bind
    user_filter: str = "(uid={username})"
    bind_dn: str | None = None
    bind_password: str | None = None  # from bind_password or bind_password_file
    start_tls: bool = False
    ca_file: str | None = None
    timeout: float = 3.0
    #: Threads (and so concurrent LDAP operations) per daemon process.
    pool_size: int = 16
    #: After a connection failure, skip that server for this long while others answer.
    retry_after: float = 10.0
    #: "libldap": OpenLDAP's libldap (python-ldap) on the reactor, persistent pipelined
    #: connections (fast). "ldap3": ldap3 in a thread pool, a fresh connection per user bind
    #: (pure Python). A config's "native" reads as "libldap", with a warning.
    engine: Engine = "libldap"
    #: Read AD / ppolicy account-state attributes with the user search (search-then-bind) and
    #: refuse disabled, locked and expired accounts without a bind.
    account_state: bool = True
    #: Seconds a user entry found by search-then-bind is reused instead of searching again
    #: (0: off). The user bind still happens every time; see directory/entrycache.py.
    user_cache: float = 0.0
    #: How group membership is read for policy rules (search-then-bind only).
    groups: LdapGroupsConfig = field(default_factory=LdapGroupsConfig)


LDAP_KEYS = (
    "servers",
    "user_dn",
    "base_dn",
    "user_filter",
    "bind_dn",
    "bind_password",
    "bind_password_file",
    "bind_password_credential",
    "start_tls",
    "ca_file",
    "timeout",
    "pool_size",
    "retry_after",
    "engine",
    "account_state",
    "user_cache",
    "groups",
)
#: ``ldap.user_cache`` at most: longer would hide directory changes (a disabled account, a
#: group membership removed) for too long.
MAX_USER_CACHE = 3600.0
_LDAP_DEFAULTS = LdapConfig(servers=())
_FILTER_EXAMPLE = '"(uid={username})" or "(&(objectClass=person)(uid={username}))"'


def parse_ldap(s: Section) -> LdapConfig:
    d = _LDAP_DEFAULTS
    servers = _ldap_servers(s)
    user_dn, base_dn, user_filter = _ldap_lookup(s)
    bind_dn, bind_password = _ldap_bind(s, direct_bind="user_dn" in s)
    start_tls = s.get_bool("start_tls", d.start_tls)
    if start_tls and any(url.lower().startswith("ldaps:") for url, _value in servers):
        s.error(
            "start_tls",
            "cannot be used with ldaps:// servers (ldaps:// is TLS from the first byte); "
            "use ldap:// with start_tls: true, or ldaps:// without it",
        )
    if not start_tls:
        for url, value in servers:
            parts = urlsplit(url)
            if parts.scheme.lower() == "ldap" and not _is_loopback(parts.hostname or ""):
                value.warn(
                    "passwords would cross the network unencrypted; use ldaps:// or start_tls: true"
                )
    ca_file = s.get_path("ca_file", None)
    if ca_file is not None and not Path(ca_file).is_file():
        s.error("ca_file", f"{ca_file} does not exist or is not a file")
    return LdapConfig(
        servers=tuple(url for url, _value in servers),
        user_dn=user_dn,
        base_dn=base_dn,
        user_filter=user_filter,
        bind_dn=bind_dn,
        bind_password=bind_password,
        start_tls=start_tls,
        ca_file=ca_file,
        timeout=s.get_duration("timeout", d.timeout, 0, 60, low_exclusive=True),
        pool_size=s.get_int("pool_size", d.pool_size, 1, 256),
        retry_after=s.get_duration("retry_after", d.retry_after, 0, 3600),
        engine=_ldap_engine(s),
        account_state=s.get_bool("account_state", d.account_state),
        user_cache=_ldap_user_cache(s),
        groups=parse_ldap_groups(s.section("groups", LDAP_GROUPS_KEYS)),
    )


def _ldap_engine(s: Section) -> Engine:
    """``engine``: libldap (the default) or ldap3; ``native``, the engine libldap replaced,
    still reads as libldap so an upgrade does not stop the daemon, with a warning."""
    value = s.get("engine")
    text = getattr(value.node, "value", None) if value is not None else None  # never an error
    replacement = _DEPRECATED_ENGINES.get(text.lower()) if isinstance(text, str) else None
    if value is not None and replacement is not None:
        value.warn(
            f"{text!r} is deprecated: radmfa's own LDAP client was replaced by {replacement!r} "
            f"(the same connections and checks); write engine: {replacement}"
        )
        return replacement
    return cast(Engine, s.get_choice("engine", _LDAP_DEFAULTS.engine, ENGINES, fold=str.lower))


def _ldap_user_cache(s: Section) -> float:
    """``user_cache``: a duration, 0 (off, the default) up to :data:`MAX_USER_CACHE`."""
    seconds = s.get_duration("user_cache", _LDAP_DEFAULTS.user_cache, 0)
    if seconds > MAX_USER_CACHE:
        s.error(
            "user_cache",
            f"must be at most {format_duration(MAX_USER_CACHE)} "
            f"(got {format_duration(seconds)}): a cached entry hides directory changes "
            "(group membership, account state, renames) for that long",
        )
        return _LDAP_DEFAULTS.user_cache
    return seconds


def _ldap_servers(s: Section) -> list[tuple[str, Value]]:
    value = required(s, "servers", "list the directory servers, e.g. [ldaps://ldap.example.org]")
    items = value.as_list() if value is not None else None
    if value is None or items is None:
        return []
    if not items:
        value.error("list at least one server: ldap://host[:port] or ldaps://host[:port]")
    servers = []
    for item in items:
        url = item.as_str()
        problem = _ldap_url_problem(url) if url is not None else None
        if problem is not None:
            item.error(problem)
        elif url is not None:
            servers.append((url, item))
    return servers


def _ldap_url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("ldap", "ldaps") or not parts.netloc:
        return f"{url!r} must look like ldap://host[:port] or ldaps://host[:port]"
    if not parts.hostname:
        return f"{url!r} has no host name"
    if port == 0:
        return f"{url!r}: the port must be from 1 to 65535"
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return (
            f"{url!r}: give only scheme, host and port (ldap://host[:port]); "
            "the DN belongs in user_dn or base_dn"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ldap_lookup(s: Section) -> tuple[str | None, str | None, str]:
    """How a login name becomes a DN: ``user_dn`` (direct bind) or ``base_dn`` + filter."""
    if "user_dn" in s and "base_dn" in s:
        s.error(
            "base_dn",
            "give user_dn (bind directly as the user) or base_dn (search for the user, then "
            "bind), not both",
        )
    elif "user_dn" not in s and "base_dn" not in s:
        s.error(
            "user_dn",
            'missing: give user_dn (e.g. "uid={username},ou=people,dc=example,dc=org") '
            "or base_dn to search for users",
        )
    user_dn = s.get_str("user_dn", None)
    if user_dn is not None:
        _check_template(s, "user_dn", user_dn)
    base_dn = s.get_str("base_dn", None)
    user_filter = s.get_str("user_filter", _LDAP_DEFAULTS.user_filter)
    if "user_filter" in s:
        if "user_dn" in s:
            s.error("user_filter", "is only used with base_dn (search then bind); remove it")
        elif _check_template(s, "user_filter", user_filter) and not _is_parenthesised(user_filter):
            s.error("user_filter", f"must be one parenthesised LDAP filter, e.g. {_FILTER_EXAMPLE}")
        elif _NAME_AS_ATTRIBUTE.search(user_filter):
            s.error(
                "user_filter",
                "{username} may only stand in a value, e.g. (uid={username}), never in an "
                "attribute name: a login name would choose which attribute is compared",
            )
        elif not naming_attributes(user_filter):
            s.warn(
                "user_filter",
                "no attribute is compared with the whole login name, e.g. (uid={username}): "
                "radmfa cannot check that the entry found is named by the login name, so two "
                "spellings the directory matches alike would be two users to radmfa",
            )
    return user_dn, base_dn, user_filter


#: ``{username}`` left of a filter item's operator: in the attribute description.
_NAME_AS_ATTRIBUTE = re.compile(r"\([^=()]*\{username\}[^=()]*[~<>:]?=")


def _check_template(s: Section, key: str, template: str) -> bool:
    """True if ``template`` has ``{username}`` and no other placeholder; else reports why."""
    try:
        fields = placeholders(template)
    except ValueError:
        s.error(key, "has an unmatched { or }; write a literal brace as {{ or }}")
        return False
    unknown = sorted(fields - {"username"})
    if unknown:
        s.error(key, f"unknown placeholder {{{unknown[0]}}}; only {{username}} is filled in")
        return False
    if "username" not in fields:
        s.error(key, "must contain {username}, where the login name goes")
        return False
    return True


def _is_parenthesised(text: str) -> bool:
    """One ``( ... )`` group spanning the whole text (LDAP escapes literal parens as \\28)."""
    depth = 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0 or (depth == 0 and index != len(text) - 1):
                return False
    return depth == 0 and text.startswith("(")


def _ldap_bind(s: Section, *, direct_bind: bool) -> tuple[str | None, str | None]:
    """The service account used to search: both DN and password, or neither."""
    keys = ("bind_password", "bind_password_file", "bind_password_credential")
    sources = [key for key in keys if key in s]
    has_password, has_file = "bind_password" in s, bool(sources) and "bind_password" not in s
    password = None
    if len(sources) > 1:
        s.error(sources[1], f"give {sources[0]} or {sources[1]}, not both")
    elif has_password:
        password = s.get_str("bind_password", None, secret=True)
    elif has_file:
        password = read_text_secret(s, sources[0])
    bind_dn = s.get_str("bind_dn", None)
    if "bind_dn" in s:
        if direct_bind:
            s.error(
                "bind_dn",
                "is only used with base_dn (search then bind); with user_dn radmfa binds as "
                "the user, so remove bind_dn and its password",
            )
        elif not (has_password or has_file):
            s.error(
                "bind_dn",
                "needs bind_password or bind_password_file: a bind with a DN and no password "
                "is an unauthenticated bind, which radmfa refuses",
            )
    elif sources:
        s.error(sources[0], "is set but bind_dn is not; add the DN to bind as, or remove it")
    return bind_dn, password


# -- groups ----------------------------------------------------------------------------------


LDAP_GROUPS_KEYS = ("membership", "base_dn", "filter", "member_attribute", "nested", "max_depth")


def parse_ldap_groups(s: Section) -> LdapGroupsConfig:
    membership = cast(
        Membership,
        s.get_choice("membership", "member", ("member", "memberof", "ad_chain"), fold=str.lower),
    )
    default_filter = AD_GROUP_FILTER if membership == "ad_chain" else DEFAULT_GROUP_FILTER
    group_filter = s.get_str("filter", default_filter)
    if not (group_filter.startswith("(") and group_filter.endswith(")")):
        s.error("filter", 'must be one parenthesised LDAP filter, e.g. "(objectClass=group)"')
        group_filter = default_filter
    elif "{" in group_filter:
        s.error("filter", "takes no placeholders: radmfa adds the membership condition")
        group_filter = default_filter
    attribute = s.get_str("member_attribute", "member")
    if not attribute.replace("-", "").replace(";", "").isalnum():
        s.error("member_attribute", f"{attribute!r} is not an attribute name")
        attribute = "member"
    return LdapGroupsConfig(
        membership=membership,
        base_dn=s.get_str("base_dn", None),
        filter=group_filter,
        member_attribute=attribute,
        nested=s.get_bool("nested", True),
        max_depth=s.get_int("max_depth", 5, 1, 20),
    )
