"""otp.hotp / backup_codes / emergency / email / sms / plugins: parsed, defaulted, and every
mistake reported as FILE:LINE: key.path."""

from __future__ import annotations

import textwrap

import pytest

from radmfa.config import ConfigError, parse_config

BASE = """\
clients: [{name: a, address: 127.0.0.1, secret: 0123456789abcdef}]
local_users: {path: /dev/null}
"""


def parse(otp: str):
    return parse_config(BASE + "otp:\n" + textwrap.indent(textwrap.dedent(otp), "  "), "x.yaml")


def problems(otp: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(otp)
    return info.value.problems


def test_defaults_without_any_factor_section():
    otp = parse("mode: auto\n").otp
    assert (otp.hotp.window, otp.hotp.resync_window, otp.backup_codes.count) == (10, 100, 10)
    assert (otp.emergency.ttl, otp.email, otp.sms, otp.keyword_separator) == (120, None, None, ",")


def test_a_full_email_and_sms_setup():
    otp = parse(
        """
        email:
          smtp: {host: smtp.example.org, security: tls, username: u, password: "p"}
          from: "radmfa <mfa@example.org>"
          code_alphabet: letters
          code_length: 8
          code_ttl: 10m
          cooldown: 30s
          max_per_hour: 3
          keyword: Mail
        sms:
          provider: webhook
          webhook:
            url: https://sms.example.net/send
            headers: {Authorization: "Bearer x"}
            body: {to: "{number}", text: "{message}"}
            success_codes: [200]
        plugins: {yubi: {url: "https://x", retries: 2}}
        """
    ).otp
    assert otp.email is not None and otp.sms is not None
    assert (otp.email.smtp.port, otp.email.smtp.security) == (465, "tls")
    d = otp.email.delivery
    assert (d.keyword, d.alphabet, d.length, d.ttl, d.cooldown, d.max_per_hour) == (
        "mail", "letters", 8, 600, 30, 3,
    )  # fmt: skip
    assert otp.sms.webhook is not None and otp.sms.webhook.success_codes == (200,)
    assert otp.sms.webhook.headers == (("Authorization", "Bearer x"),)
    assert otp.plugins == {"yubi": {"url": "https://x", "retries": 2}}


def test_mistakes_name_their_line_and_key():
    found = problems(
        """
        keyword_separator: ab
        email:
          smtp: {port: 25}
          subject: "code {cod}"
          code_ttl: 1h
        sms:
          provider: command
          command: {argv: ["send-sms", "{phone}"]}
        """
    )
    text = "\n".join(found)
    assert "x.yaml:5: otp.keyword_separator: must be one punctuation character" in text
    assert "otp.email.smtp.host: missing" in text
    assert "otp.email.from: missing" in text
    assert "x.yaml:8: otp.email.subject: unknown placeholder {cod}" in text
    assert "otp.email.code_ttl: must be between 30s and 10m" in text
    assert "otp.sms.command.argv[0]: " not in text  # the list item is fine as a string...
    assert "must be an absolute path" in text  # ...but the program is not absolute
    assert "unknown placeholder {phone}" in text


def test_a_prompt_too_long_for_a_reply_message_is_refused():
    found = problems(
        f"""
        email:
          smtp: {{host: 127.0.0.1, security: none}}
          from: a@example.org
          prompt: "{"x" * 240} {{destination}}"
        """
    )
    assert any("otp.email.prompt: is 254 bytes" in p for p in found)


def test_caps_on_open_challenges_and_on_sends_for_everyone():
    otp = parse(
        """
        max_open_challenges: 3
        email: {smtp: {host: 127.0.0.1, security: none}, from: a@example.org,
                max_per_hour_total: 50}
        sms: {provider: command, command: {argv: [/bin/true]}}
        """
    ).otp
    assert otp.max_open_challenges == 3
    assert otp.email is not None and otp.email.delivery.max_per_hour_total == 50
    assert otp.sms is not None and otp.sms.delivery.max_per_hour_total == 1000
    assert parse("mode: auto\n").otp.max_open_challenges == 5
    found = "\n".join(
        problems(
            """
            max_open_challenges: 0
            sms: {provider: command, command: {argv: [/bin/true]}, max_per_hour_total: 0}
            """
        )
    )
    assert "x.yaml:5: otp.max_open_challenges: must be between 1 and 100" in found
    assert "x.yaml:6: otp.sms.max_per_hour_total: must be between 1 and 1000000" in found
