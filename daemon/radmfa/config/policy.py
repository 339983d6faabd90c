"""The ``policy`` and ``trusted_devices`` sections: who must use a second factor, from where,
who is refused, and how long a device that passed one is remembered.

How the rules are applied to a request is :mod:`radmfa.auth.policy`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal, cast

import yaml

from radmfa.auth.identity import name_key
from radmfa.config.load import Section, Value, placeholders
from radmfa.radius.replyattrs import ReplyAttribute, ReplyDictionary

__all__ = [
    "GRACE_KEYS",
    "MAC_STATION_NAS",
    "MAC_STATION_UNKNOWN",
    "OUTCOME_KEYS",
    "POLICY_KEYS",
    "RULE_KEYS",
    "TRUSTED_DEVICES_KEYS",
    "GraceConfig",
    "PolicyConfig",
    "PolicyRule",
    "RuleOutcome",
    "TrustedDevicesConfig",
    "fold_name",
    "parse_policy",
    "parse_trusted_devices",
]

Mfa = Literal["required", "optional", "exempt"]
MFA_CHOICES = ("required", "optional", "exempt")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MacStation = Literal["unknown", "nas"]
#: ``mac_station``: a MAC Calling-Station-Id leaves the user's address unknown (refused by the
#: address lists), or stands for the packet source, the NAS (a Wi-Fi controller, an AP).
MAC_STATION_UNKNOWN: MacStation = "unknown"
MAC_STATION_NAS: MacStation = "nas"


def fold_name(text: str) -> str:
    """How names in rules and requests are compared: the identity rule of user names
    (NFKC, white space collapsed, case-folded: radmfa.auth.identity.name_key)."""
    return name_key(text)


@dataclass(frozen=True)
class RuleOutcome:
    """What a rule (or the default) decides. None: take the global setting."""

    mfa: Mfa = "required"
    #: Refuse outright (no directory traffic, no factor).
    deny: bool = False
    #: When given, only these addresses may log in under this rule.
    allow_from: tuple[Network, ...] = ()
    #: These addresses may not (a deny wins over an allow).
    deny_from: tuple[Network, ...] = ()
    #: What a MAC Calling-Station-Id means to this rule's address lists and ``sources``.
    mac_station: MacStation = MAC_STATION_UNKNOWN
    #: Seconds a device is remembered after a login with a second factor; None:
    #: ``trusted_devices.days``; 0: never remembered under this rule.
    trusted_device_ttl: float | None = None
    #: Enrolment grace for users without a factor; None: ``policy.unenrolled``.
    grace_seconds: float | None = None
    grace_logins: int | None = None
    #: Attributes added to the Access-Accepts this outcome decides (VLAN, filter, role).
    reply: tuple[ReplyAttribute, ...] = ()


@dataclass(frozen=True)
class PolicyRule:
    """Conditions (all given ones must hold; any value of a list may) and an outcome."""

    name: str
    #: Folded user names or shell-style patterns (``svc-*``).
    users: tuple[str, ...] = ()
    #: Folded group names (a group's cn, or a name of the users file) or DNs.
    groups: tuple[str, ...] = ()
    #: RADIUS client names as in ``clients``.
    clients: tuple[str, ...] = ()
    #: Folded NAS-Identifier values or patterns.
    nas_identifiers: tuple[str, ...] = ()
    #: The user's address (radmfa.auth.policy.UserAddress: the Calling-Station-Id when it is
    #: an IP address, the packet source without one, else unknown and never matching).
    sources: tuple[Network, ...] = ()
    outcome: RuleOutcome = field(default_factory=RuleOutcome)
    #: ``continue: true``: the rule only adds its ``reply`` attributes to the Access-Accept
    #: and the rules after it go on to decide (it never changes who needs MFA).
    proceed: bool = False


#: ``policy.unenrolled.message`` when the portal has a ``public_url`` and none is given.
GRACE_MESSAGE_WITH_URL = "Please set up two-factor authentication now at {url}: {left} left."


@dataclass(frozen=True)
class GraceConfig:
    """Users under ``mfa: required`` with no second factor yet: 0/0 rejects them."""

    seconds: float = 0.0
    logins: int = 0
    #: Reply-Message of such a login (an Access-Accept may carry one); {left} says how long.
    message: str = "Please set up two-factor authentication now: {left} left."


@dataclass(frozen=True)
class PolicyConfig:
    default: RuleOutcome = field(default_factory=RuleOutcome)
    rules: tuple[PolicyRule, ...] = ()
    unenrolled: GraceConfig = field(default_factory=GraceConfig)

    @property
    def needs_groups(self) -> bool:
        return any(rule.groups for rule in self.rules)


@dataclass(frozen=True)
class TrustedDevicesConfig:
    #: Seconds a (user, Calling-Station-Id) pair is remembered; 0: off.
    ttl: float = 0.0


POLICY_KEYS = ("default", "rules", "unenrolled")
RULE_KEYS = (
    "name",
    "users",
    "groups",
    "clients",
    "nas_identifiers",
    "sources",
    "mfa",
    "deny",
    "allow_from",
    "deny_from",
    "mac_station",
    "trusted_device_days",
    "grace_days",
    "grace_logins",
    "reply",
    "continue",
)
OUTCOME_KEYS = (
    "mfa",
    "deny",
    "allow_from",
    "deny_from",
    "mac_station",
    "trusted_device_days",
    "grace_days",
    "grace_logins",
    "reply",
)
GRACE_KEYS = ("grace_days", "grace_logins", "message")
TRUSTED_DEVICES_KEYS = ("days",)

_MATCH_KEYS = ("users", "groups", "clients", "nas_identifiers", "sources")
_DEFAULT_CHOICES = (*MFA_CHOICES, "deny")
#: A device is remembered for a year at most; grace periods last 90 days at most.
_MAX_TRUST_DAYS = 365
_MAX_GRACE_DAYS = 90
_MAX_REPLY_MESSAGE = 253
#: Bytes of reply attributes one rule may add: a reply holds 4096, and radmfa's own
#: attributes (Message-Authenticator, a Reply-Message, Proxy-State copies) need the rest.
MAX_REPLY_BYTES = 3000

#: The reply dictionary, loaded when a rule first needs it (None: it could not be loaded,
#: and the ``dictionary`` option says why).
Dictionaries = Callable[[], ReplyDictionary | None]


# -- policy -----------------------------------------------------------------------------------


def parse_policy(
    root: Section,
    *,
    client_names: Collection[str],
    groups_problem: str | None,
    password_only: Value | None,
    dictionary: Dictionaries = lambda: None,
    public_url: str | None = None,
) -> PolicyConfig:
    """``policy``; ``groups_problem`` says why rules cannot use groups (None: they can);
    ``password_only`` is the deprecated ``otp.allow_password_only`` when it is true;
    ``public_url`` the portal's address, for ``{url}`` in the grace message."""
    s = root.section("policy", POLICY_KEYS)
    default = RuleOutcome()
    default_value = s.get("default")
    if default_value is not None:
        default = _default_outcome(default_value, dictionary)
        if password_only is not None:
            password_only.error(
                "is replaced by policy.default; remove it (policy.default: optional means the same)"
            )
    elif password_only is not None:
        password_only.warn(
            "is deprecated: write `policy: {default: optional}` instead (users with a second "
            "factor must use it, users without one pass on their password)"
        )
        default = RuleOutcome(mfa="optional")
    rules = _rules(s, client_names, groups_problem, dictionary)
    return PolicyConfig(
        default=default,
        rules=rules,
        unenrolled=_grace(s.section("unenrolled", GRACE_KEYS), public_url),
    )


def _default_outcome(value: Value, dictionary: Dictionaries) -> RuleOutcome:
    """``default: optional`` or ``default: {mfa: ..., allow_from: ...}``."""
    if value.is_null:
        return RuleOutcome()
    if not isinstance(value.node, yaml.MappingNode):
        choice = value.as_choice(_DEFAULT_CHOICES, fold=str.lower)
        if choice is None:
            return RuleOutcome()
        if choice == "deny":
            return RuleOutcome(deny=True)
        return RuleOutcome(mfa=cast(Mfa, choice))
    section = value.as_section(OUTCOME_KEYS)
    return _outcome(section, dictionary) if section is not None else RuleOutcome()


def _outcome(s: Section, dictionary: Dictionaries) -> RuleOutcome:
    deny = s.get_bool("deny", False)
    if deny and "mfa" in s:
        s.error("mfa", "a rule with deny: true refuses everyone it matches; remove mfa")
    if deny and ("allow_from" in s or "deny_from" in s):
        s.error("deny", "deny: true refuses every address; remove allow_from / deny_from")
    if deny and "reply" in s:
        s.error("reply", "a rule with deny: true accepts nobody; its reply would never be sent")
    grace_logins = s.get("grace_logins")
    return RuleOutcome(
        mfa=cast(Mfa, s.get_choice("mfa", "required", MFA_CHOICES, fold=str.lower)),
        deny=deny,
        allow_from=_networks(s.get("allow_from")),
        deny_from=_networks(s.get("deny_from")),
        mac_station=cast(
            MacStation,
            s.get_choice(
                "mac_station",
                MAC_STATION_UNKNOWN,
                (MAC_STATION_UNKNOWN, MAC_STATION_NAS),
                fold=str.lower,
            ),
        ),
        trusted_device_ttl=(
            s.get_days("trusted_device_days", 0.0, _MAX_TRUST_DAYS)
            if "trusted_device_days" in s
            else None
        ),
        grace_seconds=(
            s.get_days("grace_days", 0.0, _MAX_GRACE_DAYS) if "grace_days" in s else None
        ),
        grace_logins=grace_logins.as_int(0, 1000) if grace_logins is not None else None,
        reply=_reply(s.get("reply"), dictionary),
    )


def _reply(value: Value | None, dictionary: Dictionaries) -> tuple[ReplyAttribute, ...]:
    """``reply: {Name: value, Name:tag: value, Name: [value, value]}``, each encoded now."""
    pairs = value.as_mapping() if value is not None else None
    if not pairs or value is None:
        return ()
    names = dictionary()
    if names is None:
        return ()
    found: list[ReplyAttribute] = []
    for name, item in pairs:
        values = item.as_list() if isinstance(item.node, yaml.SequenceNode) else [item]
        for one in values or ():
            text = one.text()  # as written: "0120" stays 0120, not the number 120
            if text is None:
                continue
            try:
                found.append(names.encode(name, text))
            except ValueError as e:
                one.error(str(e))
    size = sum(len(attribute.wire) for attribute in found)
    if size > MAX_REPLY_BYTES:
        value.error(f"the attributes take {size} bytes; at most {MAX_REPLY_BYTES} fit in a reply")
        return ()
    return tuple(found)


def _rules(
    s: Section, client_names: Collection[str], groups_problem: str | None, dictionary: Dictionaries
) -> tuple[PolicyRule, ...]:
    value = s.get("rules")
    items = value.as_list() if value is not None else None
    if not items:
        return ()
    rules: list[PolicyRule] = []
    names: dict[str, str] = {}
    catch_all: str | None = None
    for item in items:
        section = item.as_section(RULE_KEYS)
        if section is None:
            continue
        if catch_all is not None:
            item.warn(f"never applies: {catch_all} before it has no conditions and matches all")
        rule = _rule(section, names, client_names, groups_problem, dictionary)
        if rule is None:
            continue
        if not any(key in section for key in _MATCH_KEYS) and not rule.proceed:
            catch_all = f"rule {rule.name!r}"
        rules.append(rule)
    return tuple(rules)


def _rule(
    s: Section,
    names: dict[str, str],
    client_names: Collection[str],
    groups_problem: str | None,
    dictionary: Dictionaries,
) -> PolicyRule | None:
    name_value = s.get("name")
    name = name_value.as_str() if name_value is not None else None
    if name_value is None:
        s.error("name", "missing: give the rule a name (logs and the audit trail show it)")
    elif name is not None:
        if name in names:
            s.error("name", f"{name!r} is already the name of {names[name]}")
        elif name == "default":
            s.error("name", "'default' names the outcome when no rule matches; pick another")
        names.setdefault(name, s.path)
    clients = _names(s.get("clients"), fold=False)
    clients_value = s.get("clients")
    for client in clients:
        if client not in client_names and clients_value is not None:
            known = ", ".join(sorted(client_names)) or "none"
            clients_value.error(f"no RADIUS client is named {client!r} (clients: {known})")
    groups = _names(s.get("groups"), fold=True)
    if groups and groups_problem is not None:
        s.error("groups", groups_problem)
    rule = PolicyRule(
        name=name or "",
        users=_names(s.get("users"), fold=True),
        groups=groups,
        clients=clients,
        nas_identifiers=_names(s.get("nas_identifiers"), fold=True),
        sources=_networks(s.get("sources")),
        outcome=_outcome(s, dictionary),
        proceed=_proceeds(s),
    )
    if rule.outcome.mac_station == MAC_STATION_NAS and not clients:
        s.warn(
            "mac_station",
            "nas trusts any station that looks like a MAC address from every client; limit "
            "the rule to the clients that send MAC addresses (clients: [wifi])",
        )
    return rule if name else None


#: What a ``continue: true`` rule may have besides its conditions: it decides nothing.
_CONTINUE_KEYS = frozenset({"name", "reply", "continue", *_MATCH_KEYS})


def _proceeds(s: Section) -> bool:
    """``continue: true``: attributes only; any outcome key beside it is an error (such a
    rule must not change who needs MFA, nor who is refused)."""
    if not s.get_bool("continue", False):
        return False
    for key in RULE_KEYS:
        if key in s and key not in _CONTINUE_KEYS:
            s.error(
                key,
                "a rule with continue: true only adds reply attributes, and the rules after it "
                "decide; move this to a rule without continue",
            )
    if "reply" not in s:
        s.warn("continue", "a rule with continue: true and no reply does nothing")
    return True


def _strings(value: Value | None) -> list[tuple[str, Value]]:
    """A list of strings; a single string reads as a list of one."""
    if value is None:
        return []
    if isinstance(value.node, yaml.SequenceNode) or value.is_null:
        items = value.as_list() or []
    else:
        items = [value]
    found = []
    for item in items:
        text = item.as_str()
        if text is not None:
            found.append((text, item))
    return found


def _names(value: Value | None, *, fold: bool) -> tuple[str, ...]:
    return tuple(fold_name(text) if fold else text.strip() for text, _item in _strings(value))


def _networks(value: Value | None) -> tuple[Network, ...]:
    found: list[Network] = []
    for text, item in _strings(value):
        try:
            found.append(ipaddress.ip_network(text.strip()))
        except ValueError:
            try:
                loose = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                item.error(
                    f"{text!r} is not an IP address or CIDR network (e.g. 192.0.2.0/24); "
                    "addresses are compared, host names are not looked up"
                )
                continue
            item.error(f"{text} has host bits set; write the network {loose}")
    return tuple(found)


def _grace(s: Section, public_url: str | None = None) -> GraceConfig:
    """``{url}`` is filled in here with the portal's ``public_url`` (and the default message
    names it when there is one); ``{left}`` at each login."""
    d = GraceConfig()
    given = s.get("message")
    message = s.get_str("message", d.message)
    try:
        unknown = placeholders(message) - {"left", "url"}
    except ValueError:
        unknown = {"?"}
    if unknown or len(message.encode()) > _MAX_REPLY_MESSAGE - 40:
        s.error("message", "may use only {left} and {url} and must stay under 213 bytes")
        message = d.message
    if given is None and public_url is not None:
        message = GRACE_MESSAGE_WITH_URL
    if "{url}" in message:
        if public_url is None:
            s.error("message", "uses {url}: set portal.public_url (the portal's address)")
            message = d.message
        else:
            filled = message.replace("{url}", public_url.replace("{", "{{").replace("}", "}}"))
            if len(filled.format(left="").encode()) <= _MAX_REPLY_MESSAGE - 40:
                message = filled
            elif given is None:  # the default, with a very long address: without it
                message = d.message
            else:
                s.error(
                    "message",
                    f"with portal.public_url filled in it is "
                    f"{len(filled.format(left='').encode())} bytes; it must stay under 213",
                )
                message = d.message
    return GraceConfig(
        seconds=s.get_days("grace_days", d.seconds, _MAX_GRACE_DAYS),
        logins=s.get_int("grace_logins", d.logins, 0, 1000),
        message=message,
    )


# -- trusted devices -------------------------------------------------------------------------


def parse_trusted_devices(s: Section) -> TrustedDevicesConfig:
    return TrustedDevicesConfig(ttl=s.get_days("days", 0.0, _MAX_TRUST_DAYS))
