"""The rules every LDAP engine keeps, pure: which server a URL names, which user names and
passwords never reach the directory, how a login name becomes a DN or a filter value (escaped),
what an entry's own attributes say about the account, what the user search asks for, and the
failover rules as control flow (:class:`ServerDown`, :class:`BindUnanswered`,
:class:`FinalAnswer`). The engines (:mod:`radmfa.directory.ldap` on ldap3,
:mod:`radmfa.directory.ldap_libldap` on libldap) only move the bytes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from twisted.logger import Logger

from radmfa.config import LdapConfig, LdapGroupsConfig
from radmfa.directory.base import DirectoryOutcome, DirectoryResult, GroupResult
from radmfa.directory.entrycache import EntryCache
from radmfa.directory.naming import entry_name_mismatch, naming_attributes

__all__ = [
    "ACCOUNT_STATE_ATTRIBUTES",
    "MAX_USERNAME_LENGTH",
    "PERMANENT_LOCK",
    "BindUnanswered",
    "FinalAnswer",
    "LdapServer",
    "ServerDown",
    "account_state",
    "attribute_values",
    "build_user_dn",
    "build_user_filter",
    "check_lookup_config",
    "describe_error",
    "group_result",
    "invalid",
    "locked_by_ppolicy",
    "make_user_cache",
    "no_groups",
    "parse_server",
    "refuse_before_ldap",
    "refuse_misnamed",
    "search_attributes",
    "unavailable",
    "username_problem",
]

log = Logger(namespace="radmfa.directory.rules")

#: RADIUS User-Name is at most 253 octets; anything longer is not a user name.
MAX_USERNAME_LENGTH = 256
_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class LdapServer:
    """One configured server; ``url`` (normalised, no path) names it in logs and results."""

    url: str
    host: str
    port: int
    use_ssl: bool


def parse_server(text: str) -> LdapServer:
    """``ldap://host[:port][/]``, ``ldaps://host[:port][/]`` or bare ``host[:port]`` (ldap).

    ValueError for anything else: a path, a query, credentials in the URL, ``ldapi://``.
    """
    raw = text.strip()
    if "://" not in raw:
        raw = "ldap://" + raw
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps"):
        raise ValueError(f"LDAP server {text!r}: scheme must be ldap:// or ldaps://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"LDAP server {text!r}: no path, DN or query allowed, only host[:port]")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"LDAP server {text!r}: credentials do not belong in the URL")
    host = parts.hostname
    if not host:
        raise ValueError(f"LDAP server {text!r}: no host name")
    port = parts.port  # raises ValueError when out of range or not a number
    use_ssl = scheme == "ldaps"
    if port is None:
        port = 636 if use_ssl else 389
    shown = f"[{host}]" if ":" in host else host
    return LdapServer(url=f"{scheme}://{shown}:{port}", host=host, port=port, use_ssl=use_ssl)


def username_problem(username: object) -> str | None:
    """Why ``username`` must not reach the directory, or None when it may.

    Control characters (NUL included), lone surrogates and line/paragraph separators are
    refused: they have no business in a login name and only serve injection (L-10).
    """
    if not isinstance(username, str) or not username.strip():
        return "empty_username"
    if len(username) > MAX_USERNAME_LENGTH:
        return "username_too_long"
    if not (username.isascii() and username.isprintable()) and any(
        unicodedata.category(ch) in _BAD_NAME_CATEGORIES for ch in username
    ):  # printable ASCII (nearly every name) has no such character: no per-character walk
        return "bad_username_characters"
    return None


def refuse_before_ldap(
    username: object, password: object, *, closed: bool
) -> bytes | DirectoryResult:
    """The checks both engines make before any LDAP traffic: the password as bytes to bind
    with, or the result to answer at once (never an empty-password bind, L-01).

    Both are typed ``object``: a checker never raises, so a caller's wrong type is refused
    here rather than trusted."""
    if closed:
        return unavailable("LDAP checker is closed")
    if not isinstance(password, str) or password == "":
        return invalid("empty_password")
    problem = username_problem(username)
    if problem is not None:
        return invalid(problem)
    try:
        return password.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return invalid("unencodable_password")


def build_user_dn(template: str, username: str) -> str:
    """The direct-bind DN: ``template`` with ``{username}`` as an RFC 4514 escaped RDN value."""
    if not username:
        raise ValueError("empty user name")  # escape_rdn raises IndexError on ""
    return template.format(username=escape_rdn(username))


def build_user_filter(template: str, username: str) -> str:
    """The search filter: ``template`` with ``{username}`` escaped per RFC 4515."""
    return template.format(username=escape_filter_chars(username))


#: (L-14): Active Directory's flags and expiry, OpenLDAP ppolicy's lock and reset markers.
ACCOUNT_STATE_ATTRIBUTES = (
    "userAccountControl",
    "msDS-User-Account-Control-Computed",
    "accountExpires",
    "pwdAccountLockedTime",
    "pwdReset",
)
_UAC_FLAGS = ((0x2, "account_disabled"), (0x10, "account_locked"), (0x800000, "password_expired"))
#: pwdAccountLockedTime of an account an administrator locked until unlocked (ppolicy).
PERMANENT_LOCK = "000001010000Z"
#: accountExpires counts 100 ns ticks from 1601-01-01; these two values mean "never".
_FILETIME_TO_UNIX = 11644473600
_NEVER_EXPIRES = (0, 0x7FFFFFFFFFFFFFFF)


def attribute_values(attributes: Mapping[str, Sequence[str]], name: str) -> Sequence[str]:
    """The values of ``name`` in an entry's attributes, whatever the case of either."""
    wanted = name.lower()
    return next((v for k, v in attributes.items() if k.lower() == wanted), ())


def account_state(attributes: Mapping[str, Sequence[str]], now: float) -> str | None:
    """Why the entry's own attributes say the account cannot log in, or None.

    AD: userAccountControl / msDS-User-Account-Control-Computed (disabled 0x2, locked 0x10,
    password expired 0x800000) and accountExpires. ppolicy: pwdReset TRUE (the password must be
    changed first; such a bind succeeds with a restricted session, so it is refused here) and a
    permanent pwdAccountLockedTime. A time-limited ppolicy lock is left to the bind: slapd
    clears it only at a bind after the lockout duration, which refusing early would prevent.
    """
    if not attributes:  # an entry without any of these attributes (most OpenLDAP users)
        return None
    for name in ("userAccountControl", "msDS-User-Account-Control-Computed"):
        for raw in attribute_values(attributes, name):
            try:
                flags = int(raw)
            except ValueError:
                continue
            for bit, reason in _UAC_FLAGS:
                if flags & bit:
                    return reason
    for raw in attribute_values(attributes, "accountExpires"):
        try:
            ticks = int(raw)
        except ValueError:
            continue
        if ticks not in _NEVER_EXPIRES and ticks / 10_000_000 - _FILETIME_TO_UNIX <= now:
            return "account_expired"
    if any(
        v.strip().upper() == PERMANENT_LOCK
        for v in attribute_values(attributes, "pwdAccountLockedTime")
    ):
        return "account_locked"
    if any(v.strip().upper() == "TRUE" for v in attribute_values(attributes, "pwdReset")):
        return "password_must_change"
    return None


def locked_by_ppolicy(attributes: Mapping[str, Sequence[str]]) -> bool:
    """pwdAccountLockedTime present: a refused bind was the lock, not the password."""
    return bool(attribute_values(attributes, "pwdAccountLockedTime"))


# The failover rules as control flow, shared by every engine.


class ServerDown(Exception):
    """This server gave no usable answer; the next one may."""


class BindUnanswered(Exception):
    """The user bind was sent but not answered: no failover (at most one bind per request)."""


class FinalAnswer(Exception):
    """This server answered something that ends the check (no failover)."""

    def __init__(self, result: DirectoryResult) -> None:
        super().__init__(result.detail)
        self.result = result


def search_attributes(
    wanted: Sequence[str], config: LdapConfig, groups: LdapGroupsConfig | None
) -> tuple[str, ...]:
    """What the user search asks for: the factors' attributes, the account-state ones,
    the naming attributes of the filter (:mod:`radmfa.directory.naming`) and, when groups
    come from it, memberOf (each once, whatever the case)."""
    names: dict[str, str] = {}
    extra: list[str] = list(ACCOUNT_STATE_ATTRIBUTES) if config.account_state else []
    extra.extend(naming_attributes(config.user_filter))
    if groups is not None and groups.membership == "memberof":
        extra.append("memberOf")
    for name in (*wanted, *extra):
        names.setdefault(name.lower(), name)
    return tuple(names.values())


def refuse_misnamed(
    dn: str,
    attributes: Mapping[str, Sequence[str]],
    naming: Sequence[str],
    username: str,
    url: str,
) -> None:
    """A FinalAnswer (NO_SUCH_USER) when the entry found is not named ``username`` under
    radmfa's identity rule: its state is kept under its own name, never under an alias."""
    name = entry_name_mismatch(dn, attributes, naming, username)
    if name is None:
        return
    log.warn(
        "the directory found {dn} for the user name {user}, but names that entry {name}; "
        "refused (log in with the entry's own name)",
        dn=dn,
        user=username,
        name=name,
    )
    raise FinalAnswer(
        DirectoryResult(DirectoryOutcome.NO_SUCH_USER, server=url, detail="misnamed_entry")
    )


def check_lookup_config(config: LdapConfig) -> None:
    """The settings both engines refuse (ValueError): how the user's DN is found must be
    unambiguous, and a service account never binds with an empty password."""
    if bool(config.user_dn) == bool(config.base_dn):
        raise ValueError("LDAP: set exactly one of user_dn (direct bind) or base_dn (search)")
    if config.bind_dn and not config.bind_password:
        raise ValueError("LDAP: bind_dn needs bind_password (an empty one would bind anonymously)")
    if config.user_dn and "{username}" not in config.user_dn:
        raise ValueError("LDAP: user_dn must contain {username}")
    if config.base_dn and "{username}" not in config.user_filter:
        raise ValueError("LDAP: user_filter must contain {username}")


def make_user_cache(config: LdapConfig, clock: Callable[[], float]) -> EntryCache | None:
    """The user-entry cache both engines keep when ``user_cache`` is set (search-then-bind
    only: a direct bind has no search to save)."""
    if not config.base_dn or config.user_cache <= 0:
        return None
    return EntryCache(config.user_cache, clock)


def group_result(result: DirectoryResult) -> GroupResult:
    """A user search that ended a group lookup (no such user, ambiguous, unavailable)."""
    return GroupResult(result.outcome, server=result.server, detail=result.detail)


def unavailable(detail: str, server: str | None = None) -> DirectoryResult:
    """The directory could not judge the request (fail closed, not the user's fault)."""
    return DirectoryResult(DirectoryOutcome.UNAVAILABLE, server=server, detail=detail)


def invalid(detail: str) -> DirectoryResult:
    return DirectoryResult(DirectoryOutcome.INVALID_CREDENTIALS, detail=detail)


def no_groups(detail: str, server: str | None = None) -> GroupResult:
    """A group lookup that got no answer."""
    return GroupResult(DirectoryOutcome.UNAVAILABLE, server=server, detail=detail)


def describe_error(exc: BaseException) -> str:
    """An exception as one short line for a result's detail and the log."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."
