"""The subsections of ``otp`` for the second factors beyond TOTP: ``otp.hotp``,
``otp.backup_codes``, ``otp.emergency``, ``otp.email``, ``otp.sms`` and ``otp.plugins``.

:mod:`radmfa.config.otp` calls in here, so a factor's knobs live next to each other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import yaml

from radmfa.config.load import Section, Value, placeholders

__all__ = [
    "DEFAULT_SENDS_PER_HOUR_TOTAL",
    "MAX_REPLY_MESSAGE",
    "BackupCodesConfig",
    "CodeDelivery",
    "CommandConfig",
    "EmailConfig",
    "EmergencyConfig",
    "HotpConfig",
    "SmsConfig",
    "SmtpConfig",
    "WebhookConfig",
]

#: RFC 2865: one attribute carries at most 253 bytes, and pam_radius shows only the first.
MAX_REPLY_MESSAGE = 253

Alphabet = Literal["digits", "letters"]


@dataclass(frozen=True)
class HotpConfig:
    digits: int = 6
    #: Counters tried beyond the next expected one at login (RFC 4226 look-ahead "s").
    window: int = 10
    #: Counters searched by ``radmfa token resync`` for two consecutive codes.
    resync_window: int = 100


@dataclass(frozen=True)
class BackupCodesConfig:
    count: int = 10


@dataclass(frozen=True)
class EmergencyConfig:
    #: Lifetime of a code from ``radmfa emergency-code`` without ``--ttl``.
    ttl: float = 120.0
    #: The longest ``--ttl`` allowed.
    max_ttl: float = 3600.0


#: ``max_per_hour_total`` when not configured (and for factors that do not say).
DEFAULT_SENDS_PER_HOUR_TOTAL = 1000


@dataclass(frozen=True)
class CodeDelivery:
    """What email and SMS codes share: the code, its life, the rate limit, the prompts."""

    keyword: str
    length: int = 6
    alphabet: Alphabet = "digits"
    ttl: float = 300.0
    cooldown: float = 60.0
    max_per_hour: int = 5
    #: Codes of this channel an hour for all users together (every worker and daemon on the
    #: store): a stolen password list cannot turn the mail server or SMS bill into a weapon.
    max_per_hour_total: int = DEFAULT_SENDS_PER_HOUR_TOTAL
    #: Reply-Message after a code was sent; {destination} is the masked address.
    prompt: str = "Enter the code sent to {destination}: "
    #: Reply-Message when the code confirms a new address.
    confirm_prompt: str = "Enter the code sent to your new address {destination} to confirm it: "


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    #: "starttls" (upgrade after connecting, port 587), "tls" (TLS from the first byte,
    #: port 465) or "none" (cleartext; only for a relay on this host).
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class EmailConfig:
    smtp: SmtpConfig
    sender: str
    subject: str = "Your {service} verification code"
    body: str = (
        "Your verification code for {service} is {code}\n\n"
        "It expires in {minutes} minutes (at {expires} UTC) and works once.\n"
        "If you did not just try to log in, tell your help desk: someone knows your "
        "password.\n"
    )
    #: LDAP attribute holding the address (search-then-bind only); None: CLI addresses only.
    address_attribute: str | None = "mail"
    delivery: CodeDelivery = field(default_factory=lambda: CodeDelivery(keyword="email"))


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    body_format: Literal["json", "form"] = "json"
    #: Body fields; values are templates with {number} and {message} (and {user}).
    body: tuple[tuple[str, str], ...] = (("to", "{number}"), ("message", "{message}"))
    timeout: float = 10.0
    success_codes: tuple[int, ...] = (200, 201, 202, 204)


@dataclass(frozen=True)
class CommandConfig:
    #: Program and arguments; {number} and {user} are filled in, the message goes to stdin.
    argv: tuple[str, ...]
    timeout: float = 10.0


@dataclass(frozen=True)
class SmsConfig:
    provider: Literal["webhook", "command"]
    webhook: WebhookConfig | None = None
    command: CommandConfig | None = None
    message: str = "{code} is your {service} verification code. It expires in {minutes} min."
    number_attribute: str | None = "mobile"
    delivery: CodeDelivery = field(default_factory=lambda: CodeDelivery(keyword="sms"))


# -- parsing ------------------------------------------------------------------------------------

HOTP_KEYS = ("digits", "window", "resync_window")
BACKUP_KEYS = ("count",)
EMERGENCY_KEYS = ("ttl", "max_ttl")
_DELIVERY_KEYS = (
    "keyword",
    "code_length",
    "code_alphabet",
    "code_ttl",
    "cooldown",
    "max_per_hour",
    "max_per_hour_total",
    "prompt",
    "confirm_prompt",
)
_SMTP_KEYS = (
    "host",
    "port",
    "security",
    "username",
    "password",
    "password_file",
    "ca_file",
    "timeout",
)
EMAIL_KEYS = _EMAIL_KEYS = ("smtp", "from", "subject", "body", "address_attribute", *_DELIVERY_KEYS)
_WEBHOOK_KEYS = ("url", "method", "headers", "body_format", "body", "timeout", "success_codes")
_COMMAND_KEYS = ("argv", "timeout")
SMS_KEYS = _SMS_KEYS = (
    "provider",
    "webhook",
    "command",
    "message",
    "number_attribute",
    *_DELIVERY_KEYS,
)

#: Placeholders the email and SMS texts may use.
MESSAGE_FIELDS = frozenset({"code", "user", "service", "client", "minutes", "expires"})
PROMPT_FIELDS = frozenset({"destination"})


def parse_hotp(s: Section) -> HotpConfig:
    d = HotpConfig()
    window = s.get_int("window", d.window, 0, 50)
    resync = s.get_int("resync_window", d.resync_window, 2, 10_000)
    if window > 10:
        s.warn("window", "RFC 4226 asks for a look-ahead as small as possible (10 or less)")
    return HotpConfig(
        digits=s.get_int("digits", d.digits, 6, 8), window=window, resync_window=resync
    )


def parse_backup_codes(s: Section) -> BackupCodesConfig:
    return BackupCodesConfig(count=s.get_int("count", BackupCodesConfig.count, 1, 50))


def parse_emergency(s: Section) -> EmergencyConfig:
    d = EmergencyConfig()
    max_ttl = s.get_duration("max_ttl", d.max_ttl, 30, 86400)
    ttl = s.get_duration("ttl", d.ttl, 30, 86400)
    if ttl > max_ttl:
        s.error("ttl", "must not be longer than max_ttl")
    return EmergencyConfig(ttl=ttl, max_ttl=max_ttl)


def _template(s: Section, key: str, default: str, allowed: frozenset[str], *, reply: bool) -> str:
    text = s.get_str(key, default)
    try:
        names = placeholders(text)
    except ValueError:
        s.error(key, "has an unmatched { or }; write a literal brace as {{ or }}")
        return default
    unknown = sorted(names - allowed)
    if unknown:
        names_text = ", ".join("{" + f + "}" for f in sorted(allowed))
        s.error(key, f"unknown placeholder {{{unknown[0]}}}; use {names_text}")
        return default
    if reply and len(text.encode()) > MAX_REPLY_MESSAGE - 40:
        s.error(
            key,
            f"is {len(text.encode())} bytes; a Reply-Message holds 253, and the masked address "
            "needs room: keep it under 213",
        )
    return text


def _delivery(s: Section, keyword: str) -> CodeDelivery:
    d = CodeDelivery(keyword=keyword)
    word = s.get_str("keyword", keyword).strip()
    if not word.isascii() or not word.isalpha():
        s.error("keyword", f"must be one word of ASCII letters (like {keyword!r}), got {word!r}")
        word = keyword
    alphabet = s.get_choice("code_alphabet", d.alphabet, ("digits", "letters"), fold=str.lower)
    return CodeDelivery(
        keyword=word.lower(),
        length=s.get_int("code_length", d.length, 6, 12),
        alphabet=cast(Alphabet, alphabet),
        # NIST SP 800-63B 5.1.3.2: an out-of-band code is valid 10 minutes at most.
        ttl=s.get_duration("code_ttl", d.ttl, 30, 600),
        cooldown=s.get_duration("cooldown", d.cooldown, 0, 3600),
        max_per_hour=s.get_int("max_per_hour", d.max_per_hour, 1, 100),
        max_per_hour_total=s.get_int("max_per_hour_total", d.max_per_hour_total, 1, 1_000_000),
        prompt=_template(s, "prompt", d.prompt, PROMPT_FIELDS, reply=True),
        confirm_prompt=_template(s, "confirm_prompt", d.confirm_prompt, PROMPT_FIELDS, reply=True),
    )


def _attribute(s: Section, key: str, default: str) -> str | None:
    value = s.get(key)
    if value is not None and value.is_null:
        return None
    name = s.get_str(key, default)
    if not name.replace("-", "").replace(";", "").isalnum():
        s.error(key, f"{name!r} is not an LDAP attribute name")
        return default
    return name


def parse_email(s: Section) -> EmailConfig:
    """``otp.email``, when given (without it the email factor is off)."""
    smtp_value = s.get("smtp")
    smtp_section = smtp_value.as_section(_SMTP_KEYS) if smtp_value is not None else None
    if smtp_section is None:
        s.error("smtp", "missing: give the SMTP server (host, port, security, ...)")
        smtp = SmtpConfig(host="")
    else:
        smtp = _smtp(smtp_section)
    sender = s.get("from")
    sender_text = sender.as_str() if sender is not None else None
    if sender is None:
        s.error("from", 'missing: the From address, e.g. "radmfa <mfa@example.org>"')
    elif sender_text is not None and "@" not in sender_text:
        sender.error(f"{sender_text!r} is not an email address")
    d = EmailConfig(smtp=smtp, sender="")
    return EmailConfig(
        smtp=smtp,
        sender=sender_text or "",
        subject=_template(s, "subject", d.subject, MESSAGE_FIELDS, reply=False),
        body=_template(s, "body", d.body, MESSAGE_FIELDS, reply=False),
        address_attribute=_attribute(s, "address_attribute", "mail"),
        delivery=_delivery(s, "email"),
    )


def _smtp(s: Section) -> SmtpConfig:
    host = s.get("host")
    if host is None:
        s.error("host", "missing: the SMTP server's host name or IP address")
    security = cast(
        Literal["starttls", "tls", "none"],
        s.get_choice("security", "starttls", ("starttls", "tls", "none"), fold=str.lower),
    )
    default_port = {"starttls": 587, "tls": 465, "none": 25}[security]
    username = s.get_str("username", None)
    password: str | None = None
    if "password" in s and "password_file" in s:
        s.error("password_file", "give password or password_file, not both")
    elif "password" in s:
        password = s.get_str("password", None, secret=True)
    elif "password_file" in s:
        path = s.get_path("password_file", None)
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    password = f.read().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as e:
                s.error("password_file", f"cannot read {path}: {e}")
            else:
                value = s.get("password_file")
                if value is not None:
                    value.warn_if_others_can_read(path)
    if (username is None) != (password is None):
        s.error("username", "give both username and password (or password_file), or neither")
    host_text = host.as_str() if host is not None else None
    if security == "none" and host_text is not None and not _is_loopback(host_text):
        s.warn("security", "codes and the SMTP password would cross the network in clear text")
    ca_file = s.get_path("ca_file", None)
    return SmtpConfig(
        host=host_text or "",
        port=s.get_int("port", default_port, 1, 65535),
        security=security,
        username=username,
        password=password,
        ca_file=ca_file,
        timeout=s.get_duration("timeout", 10.0, 0, 120, low_exclusive=True),
    )


def parse_sms(s: Section) -> SmsConfig:
    """``otp.sms``, when given (without it the SMS factor is off)."""
    provider = cast(
        Literal["webhook", "command"],
        s.get_choice("provider", "webhook", ("webhook", "command"), fold=str.lower),
    )
    if "provider" not in s:
        s.error("provider", "missing: webhook or command")
    webhook = command = None
    if provider == "webhook":
        value = s.get("webhook")
        section = value.as_section(_WEBHOOK_KEYS) if value is not None else None
        if section is None:
            s.error("webhook", "missing: the HTTP endpoint (url, method, body, ...)")
        else:
            webhook = _webhook(section)
    else:
        value = s.get("command")
        section = value.as_section(_COMMAND_KEYS) if value is not None else None
        if section is None:
            s.error("command", "missing: argv of the program that sends a message")
        else:
            command = _command(section)
    d = SmsConfig(provider=provider)
    return SmsConfig(
        provider=provider,
        webhook=webhook,
        command=command,
        message=_template(s, "message", d.message, MESSAGE_FIELDS, reply=False),
        number_attribute=_attribute(s, "number_attribute", "mobile"),
        delivery=_delivery(s, "sms"),
    )


_BODY_FIELDS = frozenset({"number", "message", "user"})


def _webhook(s: Section) -> WebhookConfig:
    d = WebhookConfig(url="")
    url_value = s.get("url")
    url = url_value.as_str() if url_value is not None else None
    if url_value is None:
        s.error("url", "missing: the provider's endpoint, https://...")
    elif url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            url_value.error(f"{url!r} must be an http:// or https:// URL")
        elif parts.scheme == "http" and not _is_loopback(parts.hostname):
            url_value.warn("codes would cross the network in clear text; use https://")
    headers = _string_map(s.get("headers"), frozenset())
    body = _string_map(s.get("body"), _BODY_FIELDS) if "body" in s else d.body
    codes = d.success_codes
    codes_value = s.get("success_codes")
    if codes_value is not None:
        items = codes_value.as_list() or []
        parsed = [item.as_int(100, 599) for item in items]
        if parsed and all(c is not None for c in parsed):
            codes = tuple(cast(list[int], parsed))
        elif not parsed:
            codes_value.error("list at least one HTTP status, e.g. [200, 202]")
    method = s.get_choice("method", d.method, ("POST", "PUT", "GET"), fold=str.upper)
    return WebhookConfig(
        url=url or "",
        method=method,
        headers=headers,
        body_format=cast(
            Literal["json", "form"],
            s.get_choice("body_format", d.body_format, ("json", "form"), fold=str.lower),
        ),
        body=body,
        timeout=s.get_duration("timeout", d.timeout, 0, 60, low_exclusive=True),
        success_codes=codes,
    )


def _command(s: Section) -> CommandConfig:
    value = s.get("argv")
    argv: list[str] = []
    if value is None:
        s.error("argv", 'missing: e.g. ["/usr/local/bin/send-sms", "{number}"]')
    else:
        for item in value.as_list() or []:
            text = item.as_str()
            if text is None:
                continue
            try:
                unknown = placeholders(text) - {"number", "user"}
            except ValueError:
                item.error("has an unmatched { or }")
                continue
            if unknown:
                item.error(
                    f"unknown placeholder {{{sorted(unknown)[0]}}}; use {{number}}, {{user}}"
                )
            argv.append(text)
        if not argv:
            value.error("give the program and its arguments")
        elif not argv[0].startswith("/"):
            value.error(f"the program must be an absolute path, not {argv[0]!r}")
    return CommandConfig(
        argv=tuple(argv), timeout=s.get_duration("timeout", 10.0, 0, 120, low_exclusive=True)
    )


def _string_map(value: Value | None, allowed: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """A mapping of names to string templates (headers, body fields)."""
    if value is None or value.is_null:
        return ()
    if not isinstance(value.node, yaml.MappingNode):
        value.error("must be a mapping of 'name: value' lines")
        return ()
    pairs: list[tuple[str, str]] = []
    for key_node, value_node in value.node.value:
        name = str(key_node.value)
        item = Value(value.doc, value_node, f"{value.path}.{name}", key_node.start_mark.line + 1)
        text = item.as_str(allow_empty=True)
        if text is None:
            continue
        if allowed:
            try:
                unknown = placeholders(text) - allowed
            except ValueError:
                item.error("has an unmatched { or }; write a literal brace as {{ or }}")
                continue
            if unknown:
                fields = ", ".join("{" + f + "}" for f in sorted(allowed))
                item.error(f"unknown placeholder {{{sorted(unknown)[0]}}}; use {fields}")
                continue
        pairs.append((name, text))
    return tuple(pairs)


def parse_plugins(value: Value | None) -> dict[str, Mapping[str, Any]]:
    """``otp.plugins``: one mapping per third-party factor type, handed to it as plain data."""
    if value is None or value.is_null:
        return {}
    if not isinstance(value.node, yaml.MappingNode):
        value.error("must be a mapping of factor type to its settings")
        return {}
    plugins: dict[str, Mapping[str, Any]] = {}
    for key_node, value_node in value.node.value:
        name = str(key_node.value)
        item = Value(value.doc, value_node, f"{value.path}.{name}", key_node.start_mark.line + 1)
        plain = _plain(item)
        if plain is None:
            plain = {}
        if not isinstance(plain, dict):
            item.error("must be a mapping of settings")
            continue
        plugins[name] = plain
    return plugins


def _plain(value: Value) -> Any:
    node = value.node
    if isinstance(node, yaml.MappingNode):
        return {
            str(k.value): _plain(
                Value(value.doc, v, f"{value.path}.{k.value}", v.start_mark.line + 1)
            )
            for k, v in node.value
        }
    if isinstance(node, yaml.SequenceNode):
        return [
            _plain(Value(value.doc, v, f"{value.path}[{i}]", v.start_mark.line + 1))
            for i, v in enumerate(node.value)
        ]
    if isinstance(node, yaml.ScalarNode):  # composing makes no other kind of node
        try:
            return value.doc.construct(node)
        except yaml.YAMLError:
            pass
    value.error(f"unsupported YAML tag {node.tag}")
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
