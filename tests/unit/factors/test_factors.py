"""HOTP (RFC 4226 Appendix D), backup and emergency codes, masks, and the plugin registry."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from radmfa.factors import backup
from radmfa.factors.base import FactorRegistry, MatchKind
from radmfa.factors.codes import mask_email, mask_number
from radmfa.factors.emergency import EmergencyCodeFactor, issue
from radmfa.factors.hotp import HotpFactor, last_step_for, make_hotp
from radmfa.factors.totp import TotpFactor
from radmfa.store.base import TokenRecord

RFC4226_SECRET = b"12345678901234567890"
#: RFC 4226 Appendix D: HOTP values for counts 0..9 of the secret above.
RFC4226_CODES = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]


def hotp_token(last_step: int | None = None) -> TokenRecord:
    return TokenRecord("h", "u", "hotp", RFC4226_SECRET, 6, "SHA1", 0, 0.0, last_step)


@pytest.mark.parametrize(("count", "expected"), list(enumerate(RFC4226_CODES)))
def test_rfc4226_appendix_d(count: int, expected: str):
    assert make_hotp(hotp_token()).at(count) == expected
    # a fresh token (next counter 0) with a window of 9 finds every one at its counter
    match = HotpFactor(window=9).verify(hotp_token(), expected, 0.0)
    assert (match.kind, match.step) == (MatchKind.MATCH, count)


def test_hotp_counter_window_and_replay():
    factor = HotpFactor(window=3)
    used_two = hotp_token(last_step=2)  # the next expected counter is 3
    assert factor.verify(used_two, RFC4226_CODES[2], 0).kind is MatchKind.REPLAY
    assert factor.verify(used_two, RFC4226_CODES[1], 0).kind is MatchKind.REPLAY
    assert factor.verify(used_two, RFC4226_CODES[3], 0).step == 3
    assert factor.verify(used_two, RFC4226_CODES[6], 0).step == 6  # 3 + window
    assert factor.verify(used_two, RFC4226_CODES[7], 0).kind is MatchKind.NO_MATCH
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in RFC4226_CODES[3])
    assert factor.verify(used_two, fullwidth, 0).kind is MatchKind.NO_MATCH


def test_hotp_resync_needs_two_consecutive_codes():
    factor = HotpFactor(window=1, resync_window=100)
    token = hotp_token()
    assert factor.find_consecutive(token, RFC4226_CODES[7], RFC4226_CODES[8]) == 8
    assert factor.find_consecutive(token, RFC4226_CODES[7], RFC4226_CODES[9]) is None
    assert factor.find_consecutive(hotp_token(8), RFC4226_CODES[7], RFC4226_CODES[8]) is None


def test_initial_counter_is_stored_as_the_last_used_one():
    assert last_step_for(0) is None
    assert last_step_for(5) == 4
    assert HotpFactor().verify(hotp_token(last_step_for(5)), RFC4226_CODES[5], 0).step == 5


# -- backup codes -------------------------------------------------------------------------


def test_backup_codes_are_distinct_long_and_stored_only_as_hashes():
    codes, tokens = backup.generate("alice", 10, 0.0)
    assert len(set(codes)) == 10 and len({c[:3] for c in codes}) == 10
    for code, token in zip(codes, tokens, strict=True):
        raw = code.replace("-", "")
        assert len(raw) == 16 and raw.encode() not in token.secret
        assert token.secret[:3] == raw[:3].encode()  # the lookup prefix, not secret


def test_backup_codes_are_checked_without_a_slow_hash(no_scrypt: list[bytes]):
    codes, tokens = backup.generate("alice", 10, 0.0)
    registry = FactorRegistry([backup.BackupCodeFactor()])
    token, match = registry.verify(tokens, codes[7], 0.0)
    assert match.kind is MatchKind.MATCH and token is tokens[7]
    wrong = codes[7][:-1] + ("0" if codes[7][-1] != "0" else "1")
    assert registry.verify(tokens, wrong, 0.0)[1].kind is MatchKind.NO_MATCH
    assert no_scrypt == []  # neither generating nor checking ran the KDF


def test_backup_codes_stored_by_an_earlier_version_still_work_at_one_hash_at_most(
    no_scrypt: list[bytes],
):
    from radmfa.factors.codes import seal_code

    raw = ["ab0defghjkmnpqrs", "cd1efghjkmnpqrst"]
    legacy = [
        TokenRecord(f"bk{i}", "alice", "backup", c[:3].encode() + seal_code(c), 16, "", 0, 0.0)
        for i, c in enumerate(raw)
    ]
    no_scrypt.clear()
    registry = FactorRegistry([backup.BackupCodeFactor()])
    token, match = registry.verify(legacy, backup.format_code(raw[1]), 0.0)
    assert match.kind is MatchKind.MATCH and token is legacy[1]
    assert len(no_scrypt) == 1  # the lookup prefix found the one code to hash


@pytest.mark.parametrize(
    ("typed", "ok"),
    [("ab0d-efgh-jkmn-pqrs", True), ("AB0D EFGH JKMN PQRS", True), ("abOd-efgh-jkmn-pqrs", True),
     ("ab0defghjkmnpqr", False), ("ab0d-efgh-jkmn-pqru", False), ("ab0d-éfgh-jkmn-pqrs", False)],
)  # fmt: skip
def test_backup_code_input_is_forgiving_about_form_not_content(typed: str, ok: bool):
    assert (backup.normalize(typed) == "ab0defghjkmnpqrs") is ok


def test_spent_backup_code_reports_replay():
    codes, tokens = backup.generate("alice", 1, 0.0)
    spent = dataclasses.replace(tokens[0], last_step=1)
    factor = backup.BackupCodeFactor()
    assert factor.verify(spent, codes[0], 0.0).kind is MatchKind.REPLAY
    assert not factor.usable(spent, 0.0)


# -- emergency codes ----------------------------------------------------------------------


def test_emergency_code_lifetime_is_exact():
    code, token = issue("alice", 120, "ann", 1000.0)
    factor = EmergencyCodeFactor()
    assert factor.verify(token, code, 1119.9).kind is MatchKind.MATCH
    assert factor.verify(token, code, 1120.0).kind is MatchKind.NO_MATCH
    assert not factor.usable(token, 1120.0)
    assert "issued by ann" in factor.audit(token)


@pytest.fixture
def no_scrypt(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every scrypt call, recorded (and still computed)."""
    import hashlib

    calls: list[bytes] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kw: object) -> bytes:
        calls.append(password)
        return real(password, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return calls


def test_emergency_code_is_checked_without_scrypt_and_accepted_once(no_scrypt: list[bytes]):
    from radmfa.store.memory import MemoryStore

    store = MemoryStore()
    code, token = issue("alice", 120, "ann", 1000.0)
    store.add_token(token)
    factor = EmergencyCodeFactor()
    wrong = f"{(int(code) + 1) % 10**8:08d}"
    assert factor.verify(token, wrong, 1001.0).kind is MatchKind.NO_MATCH
    accepted = 0
    for _ in range(3):  # as the pipeline: verify the stored token, then spend it
        (stored,) = store.list_tokens("alice")
        match = factor.verify(stored, code, 1001.0)
        if match.kind is MatchKind.MATCH and match.step is not None:
            accepted += store.advance_step(stored.token_id, match.step)
    assert accepted == 1
    assert factor.verify(store.list_tokens("alice")[0], code, 1001.0).kind is MatchKind.REPLAY
    assert no_scrypt == []  # neither issuing nor checking ran the KDF
    assert code.encode() not in token.secret


def test_an_emergency_code_stored_by_an_earlier_version_counts_as_expired(
    no_scrypt: list[bytes],
):
    from radmfa.factors.codes import seal_code

    code = "12345678"
    legacy = TokenRecord("em1", "alice", "emergency", seal_code(code), 8, "", 120, 1000.0)
    no_scrypt.clear()
    factor = EmergencyCodeFactor()
    assert not factor.usable(legacy, 1001.0)
    assert factor.verify(legacy, code, 1001.0).kind is MatchKind.NO_MATCH
    assert no_scrypt == []


# -- masks --------------------------------------------------------------------------------


def test_masks_show_little():
    assert mask_email("alice@example.org") == "a***@example.org"
    assert mask_number("+49 151 2345 1234") == "******1234"
    assert mask_number("+491512341234") == "******1234"


# -- registry and plugins -----------------------------------------------------------------


def test_registry_refuses_two_factors_for_one_type():
    with pytest.raises(ValueError, match="totp"):
        FactorRegistry([TotpFactor(), TotpFactor()])


def test_builtin_factors_load_through_entry_points():
    from radmfa.config import parse_config
    from radmfa.factors.plugins import FactorContext, load_factors

    config = parse_config(
        "clients: [{name: a, address: 127.0.0.1, secret: 0123456789abcdef}]\n"
        "local_users: {path: /dev/null}\n"
    )
    registry = load_factors(FactorContext(config=config))
    # email and sms are off without their sections
    assert registry.types() == ["backup", "emergency", "hotp", "totp"]


def test_a_third_party_factor_on_sys_path_is_found(tmp_path: Path, monkeypatch):
    from radmfa.config import parse_config
    from radmfa.factors.plugins import FactorContext, FactorLoadError, load_factors

    write_plugin(tmp_path, "reverse")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = parse_config(
        "clients: [{name: a, address: 127.0.0.1, secret: 0123456789abcdef}]\n"
        "local_users: {path: /dev/null}\n"
        "otp: {plugins: {reverse: {suffix: '!'}}}\n"
    )
    registry = load_factors(FactorContext(config=config))
    factor = registry.get("reverse")
    assert factor is not None and factor.options == {"suffix": "!"}  # type: ignore[attr-defined]
    token = TokenRecord("r", "u", "reverse", b"abc", 4, "SHA1", 0, 0.0)
    assert factor.verify(token, "cba!", 0.0).kind is MatchKind.MATCH

    (tmp_path / "radmfa_reverse.py").write_text("raise RuntimeError('broken plugin')\n")
    sys.modules.pop("radmfa_reverse", None)
    with pytest.raises(FactorLoadError, match=r"'reverse'.*broken plugin"):
        load_factors(FactorContext(config=config))
    sys.modules.pop("radmfa_reverse", None)


def write_plugin(root: Path, name: str) -> None:
    """A throw-away distribution: one module and a dist-info with an entry point."""
    (root / f"radmfa_{name}.py").write_text(PLUGIN_SOURCE)
    info = root / f"radmfa_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: radmfa-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[radmfa.factors]\n{name} = radmfa_{name}:create\n")


#: A third-party factor as small as they come: the code is the secret, reversed, plus a
#: configurable suffix; each code works once per minute (the step is the minute).
PLUGIN_SOURCE = """
import hmac


class ReverseFactor:
    type = "reverse"
    label = "reversed word"

    def __init__(self, options):
        self.options = dict(options)

    def code_lengths(self, token):
        return (len(token.secret) + len(self.options.get("suffix", "")),)

    def verify(self, token, code, now):
        from radmfa.factors.base import NO_MATCH, CodeMatch, MatchKind

        expected = token.secret.decode()[::-1] + self.options.get("suffix", "")
        if not hmac.compare_digest(code.encode(), expected.encode()):
            return NO_MATCH
        step = int(now // 60)
        if token.last_step is not None and step <= token.last_step:
            return CodeMatch(MatchKind.REPLAY, step)
        return CodeMatch(MatchKind.MATCH, step)


def create(context):
    return ReverseFactor(context.options)
"""
