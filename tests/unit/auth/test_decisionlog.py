"""sanitize: the fast path gives exactly what the per-character escaping gave."""

from __future__ import annotations

import random

import pytest

from radmfa.auth.decisionlog import sanitize


def reference_sanitize(value: str | bytes | None, limit: int = 128) -> str:
    """The implementation before the fast path, kept as the reference."""
    if value is None:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    out = []
    for ch in value[:limit]:
        if ch.isprintable() and ch not in '"\\':
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii") if ch != '"' else '\\"')
    text = "".join(out)
    if len(value) > limit:
        text += "..."
    return text


#: Characters the escaping treats differently: printable ASCII, quote, backslash, controls
#: (CR, LF, NUL, tab, ESC, DEL), C1 and Unicode format/separator characters, a lone
#: surrogate, Latin-1, CJK, non-BMP (emoji, a private use plane, the last code point).
SPECIAL = [
    '"', "\\", "\r", "\n", "\x00", "\t", "\x1b", "\x7f", "\x85", "\xa0", "\xad", "é", "ß",
    "\u200b", "\u2028", "\u2029", "\ufeff", "\ud800", "中", "\U0001f600", "\U000f0000",
    "\U0010ffff", "'", " ", "%", "{", "}", "=",
]  # fmt: skip
ASCII = [chr(c) for c in range(32, 127)]


def random_strings(rng: random.Random, count: int) -> list[str]:
    values = []
    for _ in range(count):
        length = rng.choice([0, 1, 2, 5, 20, 127, 128, 129, 200, 300])
        weight = rng.random()  # from almost all-ASCII to mostly special
        values.append(
            "".join(
                rng.choice(SPECIAL) if rng.random() < weight * 0.3 else rng.choice(ASCII)
                for _ in range(length)
            )
        )
    return values


def random_bytes(rng: random.Random, count: int) -> list[bytes]:
    """Valid and invalid UTF-8: stray continuation bytes, truncated and overlong sequences."""
    pieces = [
        b"a", b"Z", b"0", b'"', b"\\", b"\r\n", b"\x00", b"\x80", b"\xbf", b"\xc0\xaf",
        b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"\xf0\x9f", b"\xff", b"\xfe",
        "é".encode(), "中".encode(),
    ]  # fmt: skip
    return [
        b"".join(rng.choice(pieces) for _ in range(rng.choice([0, 1, 3, 40, 127, 128, 129, 250])))
        for _ in range(count)
    ]


FIXED: list[str | bytes | None] = [
    None,
    "",
    b"",
    "alice",
    "alice@example.com",
    "DOMAIN\\alice",
    'say "hi"',
    "alice\r\nforged line",
    "nul\x00byte",
    "tab\there",
    "\U0001f600 smile",
    b"alice\xff\xfe",
    b"\xc3\xa9t\xc3\xa9",
    "x" * 127,
    "x" * 128,
    "x" * 129,
    "x" * 10_000,
    '"' * 200,
    "\\" * 129,
    "é" * 128 + "\n",
]


@pytest.mark.parametrize("value", FIXED, ids=range(len(FIXED)))
def test_fixed_values_match_the_reference(value):
    assert sanitize(value) == reference_sanitize(value)


@pytest.mark.parametrize("limit", [0, 1, 7, 128, 253])
def test_generated_values_match_the_reference(limit):
    rng = random.Random(limit)
    for value in [*random_strings(rng, 2000), *random_bytes(rng, 1000)]:
        assert sanitize(value, limit) == reference_sanitize(value, limit), repr(value)


def test_every_bmp_character_and_a_sample_beyond_match_the_reference():
    for start in range(0, 0x10000, 64):
        chunk = "".join(chr(c) for c in range(start, start + 64))
        assert sanitize(chunk) == reference_sanitize(chunk)
        for ch in chunk:
            assert sanitize(f"a{ch}b") == reference_sanitize(f"a{ch}b")
    for c in range(0x10000, 0x110000, 97):
        assert sanitize(chr(c)) == reference_sanitize(chr(c))


def test_plain_values_come_back_unchanged_and_unsafe_ones_escaped():
    assert sanitize("alice.example") == "alice.example"
    assert sanitize('a"b\\c\r\n') == 'a\\"b\\\\c\\r\\n'
    assert sanitize("y" * 130) == "y" * 128 + "..."
