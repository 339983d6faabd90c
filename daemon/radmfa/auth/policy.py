"""Who must use a second factor: the configured rules applied to one request, purely.

A rule matches when every condition it has holds (within a condition, any listed value may);
the first matching rule decides and ``policy.default`` decides when none does. Group
membership costs directory work, so it is asked for lazily: :meth:`Policy.evaluate` without
groups returns :data:`NEEDS_GROUPS` only when a rule with groups is the first one that could
still match, and the pipeline then looks the groups up once and evaluates again.

The address rules look at (``sources``, ``allow_from``, ``deny_from``) is the user's
(:class:`UserAddress`): the Calling-Station-Id when it is an IP address
(:mod:`radmfa.auth.stations` reads it strictly), the packet source (the NAS) when there is no
Calling-Station-Id. Any other station - a host name, a spelling that is not read as an
address, a MAC address unless the rule says ``mac_station: nas`` - leaves the address
unknown, and an unknown address never widens access: ``deny_from`` and ``allow_from`` refuse
it, ``sources`` does not match it (except in a ``deny: true`` rule, which it cannot skip).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from radmfa.auth.stations import IPAddress, StationKind, device_key, parse_ip, parse_station
from radmfa.config import (
    MAC_STATION_NAS,
    GraceConfig,
    PolicyConfig,
    PolicyRule,
    RuleOutcome,
    fold_name,
)
from radmfa.config.policy import Network
from radmfa.store.base import DeviceRef, UserSettings

__all__ = [
    "NEEDS_GROUPS",
    "GroupSet",
    "Policy",
    "Subject",
    "UserAddress",
    "Verdict",
    "device_key",
    "device_ref",
    "grace_granted",
    "grace_over",
    "normalize_dn",
    "subject_address",
]

DEFAULT_RULE = "default"
#: Refusals of the address lists (also the reason codes of the rejects).
IP_DENIED = "ip_denied"
IP_NOT_ALLOWED = "ip_not_allowed"

_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


@dataclass(frozen=True, slots=True)
class UserAddress:
    """The address the rules compare for one request.

    ``ip``: the Calling-Station-Id when it is an IP address, the packet source when there is
    no Calling-Station-Id, None (unknown) for any other station. ``mac_nas``: the packet
    source when the station is a MAC address, which rules with ``mac_station: nas`` take.
    """

    ip: IPAddress | None
    mac_nas: IPAddress | None = None

    def of(self, outcome: RuleOutcome) -> IPAddress | None:
        """The address under a rule's ``mac_station`` setting; None: unknown."""
        if self.mac_nas is not None and outcome.mac_station == MAC_STATION_NAS:
            return self.mac_nas
        return self.ip


#: Nothing known about where the user is: address lists refuse.
UNKNOWN_ADDRESS: Final = UserAddress(None)


def subject_address(station: str | None, packet_source: str | None) -> UserAddress:
    """The user's address (see :class:`UserAddress`)."""
    parsed = parse_station(station)
    if parsed.kind is StationKind.IP:
        return UserAddress(parsed.address)
    if parsed.kind is StationKind.ABSENT:
        return UserAddress(parse_ip(packet_source))
    if parsed.kind is StationKind.MAC:
        return UserAddress(None, mac_nas=parse_ip(packet_source))
    return UNKNOWN_ADDRESS


def device_ref(station: str | None, client: str, nas_identifier: str | None) -> DeviceRef | None:
    """The request's device for trusted devices, or None without a Calling-Station-Id. The
    station alone proves nothing (any NAS may report any value, a NAT shares one address):
    a remembered device counts only for the client entry and NAS-Identifier that reported it.
    """
    key = device_key(station)
    if key is None:
        return None
    return DeviceRef(key, client, nas_identifier or "")


def normalize_dn(dn: str) -> str:
    """A DN for comparison: RDNs trimmed and case-folded (``CN=Staff, OU=Groups`` equals
    ``cn=staff,ou=groups``). Directories compare the usual naming attributes case-insensitively;
    escaped commas stay inside their RDN."""
    parts = []
    for rdn in _UNESCAPED_COMMA.split(dn):
        attribute, eq, value = rdn.partition("=")
        parts.append(f"{attribute.strip().casefold()}{eq}{value.strip().casefold()}")
    return ",".join(parts)


def _first_rdn_value(dn: str) -> str:
    first = _UNESCAPED_COMMA.split(dn, maxsplit=1)[0]
    return first.partition("=")[2].replace("\\", "").strip()


@dataclass(frozen=True, slots=True)
class GroupSet:
    """The groups a user is in, as the directory named them: DNs (LDAP) or names (users
    file). A rule's group matches a DN exactly (normalised) or a group's name: its first RDN
    value (the cn) or the name in the users file."""

    dns: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, groups: Iterable[str]) -> GroupSet:
        dns, names = set(), set()
        for group in groups:
            if "=" in group:
                dns.add(normalize_dn(group))
                names.add(fold_name(_first_rdn_value(group)))
            else:
                names.add(fold_name(group))
        return cls(frozenset(dns), frozenset(names))

    def has(self, wanted: str) -> bool:
        """``wanted`` is already folded (the config does it)."""
        if "=" in wanted:
            return normalize_dn(wanted) in self.dns
        return wanted in self.names

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True, slots=True)
class Subject:
    """What rules can look at. ``groups`` is None until they were looked up."""

    user: str
    client: str
    nas_identifier: str | None = None
    #: None: not looked at (no rule compares addresses); read as unknown.
    address: UserAddress | None = None
    groups: GroupSet | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy says for one request."""

    rule: str
    mfa: str
    deny: bool
    #: IP_DENIED / IP_NOT_ALLOWED when the address lists refuse the request.
    address_refusal: str | None
    #: Seconds a device is remembered after a login with a second factor here; 0: not at all.
    trusted_device_ttl: float
    grace: GraceConfig
    #: Attributes for the Access-Accept this verdict leads to (wire bytes, each whole).
    reply: tuple[bytes, ...] = ()

    @property
    def refused(self) -> bool:
        return self.deny or self.address_refusal is not None


def grace_granted(grace: GraceConfig) -> bool:
    """Whether the rule lets users without a factor in for a while at all."""
    return grace.seconds > 0 or grace.logins > 0


def grace_over(grace: GraceConfig, settings: UserSettings, now: float) -> bool:
    """Whether this user's enrolment grace period has run out: its days since the first
    login on the password alone, or its number of such logins."""
    started = settings.first_seen_at
    return (grace.seconds > 0 and started is not None and now >= started + grace.seconds) or (
        grace.logins > 0 and settings.grace_logins >= grace.logins
    )


class _NeedsGroups:
    def __repr__(self) -> str:
        return "NEEDS_GROUPS"


#: :meth:`Policy.evaluate`'s answer when the groups must be looked up first.
NEEDS_GROUPS: Final = _NeedsGroups()


def _matches_name(patterns: tuple[str, ...], value: str | None) -> bool:
    if value is None:
        return False
    folded = fold_name(value)
    return any(fnmatch.fnmatchcase(folded, pattern) for pattern in patterns)


def _in(networks: tuple[Network, ...], address: IPAddress) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def _sources_match(rule: PolicyRule, where: UserAddress) -> bool:
    """A rule's ``sources`` condition. An unknown address matches no network, except in a
    rule that denies: a station nobody can read must not be a way around a deny."""
    if not rule.sources:
        return True
    address = where.of(rule.outcome)
    if address is None:
        return rule.outcome.deny
    return _in(rule.sources, address)


def _address_refusal(outcome: RuleOutcome, where: UserAddress) -> str | None:
    """``deny_from`` (which wins) and ``allow_from``; an unknown address is refused by both."""
    if not (outcome.deny_from or outcome.allow_from):
        return None
    address = where.of(outcome)
    if outcome.deny_from and (address is None or _in(outcome.deny_from, address)):
        return IP_DENIED
    if outcome.allow_from and (address is None or not _in(outcome.allow_from, address)):
        return IP_NOT_ALLOWED
    return None


class Policy:
    """The rules of one configuration; immutable, shared by every request."""

    def __init__(self, config: PolicyConfig, trusted_device_ttl: float = 0.0) -> None:
        self.config = config
        self.trusted_device_ttl = trusted_device_ttl
        self.rules = config.rules
        self.needs_groups = config.needs_groups
        #: Whether any rule looks at the user's address (else it is not even parsed).
        outcomes = [config.default, *(rule.outcome for rule in self.rules)]
        self.needs_address = any(rule.sources for rule in self.rules) or any(
            o.allow_from or o.deny_from for o in outcomes
        )
        self._by_name = {rule.name: rule.outcome for rule in self.rules}
        #: The verdict of each rule before its address lists are applied (built once: this
        #: runs on every request).
        self._base = {rule.name: self._build(rule.name, rule.outcome) for rule in self.rules}
        self._base[DEFAULT_RULE] = self._build(DEFAULT_RULE, config.default)

    def evaluate(self, subject: Subject) -> Verdict | _NeedsGroups:
        """The first matching rule decides; a matching ``continue`` rule only adds its reply
        attributes (before the deciding rule's) and the rules after it go on."""
        extra: tuple[bytes, ...] = ()
        for rule in self.rules:
            if not self._matches_without_groups(rule, subject):
                continue
            if rule.groups:
                if subject.groups is None:
                    return NEEDS_GROUPS
                if not any(subject.groups.has(group) for group in rule.groups):
                    continue
            if rule.proceed:
                extra += self._base[rule.name].reply
                continue
            return self._verdict(rule.name, rule.outcome, subject.address, extra)
        return self._verdict(DEFAULT_RULE, self.config.default, subject.address, extra)

    @staticmethod
    def _matches_without_groups(rule: PolicyRule, subject: Subject) -> bool:
        if rule.users and not _matches_name(rule.users, subject.user):
            return False
        if rule.clients and subject.client not in rule.clients:
            return False
        if rule.nas_identifiers and not _matches_name(rule.nas_identifiers, subject.nas_identifier):
            return False
        return _sources_match(rule, subject.address or UNKNOWN_ADDRESS)

    def _verdict(
        self,
        name: str,
        outcome: RuleOutcome,
        address: UserAddress | None,
        extra: tuple[bytes, ...] = (),
    ) -> Verdict:
        refusal = _address_refusal(outcome, address or UNKNOWN_ADDRESS)
        base = self._base.get(name)
        if base is None:
            base = self._build(name, outcome)
        if refusal is None and not extra:
            return base
        return Verdict(
            base.rule,
            base.mfa,
            base.deny,
            refusal,
            base.trusted_device_ttl,
            base.grace,
            extra + base.reply,
        )

    def _build(self, name: str, outcome: RuleOutcome) -> Verdict:
        unenrolled = self.config.unenrolled
        grace = GraceConfig(
            seconds=(
                outcome.grace_seconds if outcome.grace_seconds is not None else unenrolled.seconds
            ),
            logins=outcome.grace_logins if outcome.grace_logins is not None else unenrolled.logins,
            message=unenrolled.message,
        )
        ttl = (
            outcome.trusted_device_ttl
            if outcome.trusted_device_ttl is not None
            else self.trusted_device_ttl
        )
        return Verdict(
            rule=name,
            mfa=outcome.mfa,
            deny=outcome.deny,
            address_refusal=None,
            trusted_device_ttl=ttl,
            grace=grace,
            reply=tuple(attribute.wire for attribute in outcome.reply),
        )
