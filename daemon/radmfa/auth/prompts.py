"""Reply-Message texts for challenges: what to type, within one RADIUS attribute.

pam_radius shows only the first Reply-Message and a RADIUS attribute holds 253 bytes, so every
prompt is built to fit: a notice is dropped first, then the masked addresses, then the text is
cut at a character boundary and still ends in ": ".
"""

from __future__ import annotations

from collections.abc import Sequence

from radmfa.config import MAX_REPLY_MESSAGE, OtpConfig
from radmfa.factors.base import FactorRegistry
from radmfa.store.base import TokenRecord


def fit(text: str, limit: int = MAX_REPLY_MESSAGE) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    cut = data[: limit - 2].decode("utf-8", "ignore").rstrip(" :")
    return cut + ": "


def with_notice(notice: str | None, prompt: str) -> str:
    """The notice in front of the prompt when both fit, else the prompt alone."""
    if notice:
        combined = f"{notice} {prompt}"
        if len(combined.encode()) <= MAX_REPLY_MESSAGE:
            return combined
    return fit(prompt)


def menu(
    otp: OtpConfig,
    factors: FactorRegistry,
    tokens: Sequence[TokenRecord],
    *,
    exclude: str | None = None,
    preferred: str | None = None,
) -> str:
    """The prompt of a challenge: a code, or a keyword for each out-of-band factor."""
    ordered = sorted(tokens, key=lambda t: t.type != preferred)
    choices: list[tuple[str, str]] = []
    has_codes = False
    for token in ordered:
        if token.type == exclude:
            continue
        oob = factors.out_of_band(token.type)
        if oob is None:
            has_codes = True
            continue
        destination = oob.destination(token)
        if destination is not None and all(word != oob.keyword for word, _ in choices):
            choices.append((oob.keyword, destination.masked))
    if not choices:
        return fit(otp.challenge_prompt)

    def listing(detailed: bool) -> str:
        words = [f"{w} ({m})" if detailed else w for w, m in choices]
        listed = " or ".join(words)
        if has_codes:
            return otp.choice_prompt.format(choices=listed)
        return f"Type {listed} to get a verification code: "

    text = listing(detailed=True)
    if len(text.encode()) <= MAX_REPLY_MESSAGE:
        return text
    return fit(listing(detailed=False))
