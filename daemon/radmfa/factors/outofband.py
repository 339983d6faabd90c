"""What email and SMS codes share: the enrolment token, its address, re-validation, the code.

A user has the factor when a token of its type exists. The token's sealed ``secret`` is a
small JSON document: the address, where it comes from (``cli``: registered with ``radmfa
token add``; ``directory``: the LDAP attribute, read after each bind) and whether the token has
ever had an address. ``last_step`` is None while the address is unconfirmed and 1 once
confirmed.

Re-validation: the first address a token gets is trusted (an administrator typed it, or the
directory had it at enrolment). Any later change - through the CLI, or a different value in
the directory - creates a *new* token (new id) whose address is unconfirmed: codes sent for
the old token die with it (a challenge names the token it sent to), and the new address must
be confirmed with a code sent to it before it counts as a factor (see the pipeline's
"confirm" phase).
"""

from __future__ import annotations

import abc
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from radmfa.config import CodeDelivery
from radmfa.factors.base import BaseFactor, Destination, SendContext
from radmfa.factors.codes import DIGITS, LETTERS, random_code
from radmfa.store.base import TokenRecord

SOURCE_CLI = "cli"
SOURCE_DIRECTORY = "directory"


@dataclass(frozen=True, slots=True)
class AddressInfo:
    address: str | None
    source: str
    #: The token has had an address before (a new one then needs confirming).
    had_address: bool


def read_info(token: TokenRecord) -> AddressInfo:
    try:
        data = json.loads(token.secret.decode("utf-8"))
        address = data.get("address")
        return AddressInfo(
            address if isinstance(address, str) and address else None,
            str(data.get("source", SOURCE_CLI)),
            bool(data.get("had_address", False)),
        )
    except (ValueError, AttributeError):
        return AddressInfo(None, SOURCE_CLI, True)


def _secret(info: AddressInfo) -> bytes:
    return json.dumps(
        {"address": info.address, "source": info.source, "had_address": info.had_address},
        sort_keys=True,
    ).encode("utf-8")


def address_token(
    token_type: str,
    user: str,
    address: str | None,
    source: str,
    now: float,
    previous: TokenRecord | None = None,
) -> TokenRecord:
    """A new enrolment token. Confirmed only when it is the first address this user's factor
    ever had, or the same address the previous token had (confirmed) already."""
    before = read_info(previous) if previous is not None else None
    had = before is not None and (before.had_address or before.address is not None)
    unchanged = (
        previous is not None
        and before is not None
        and before.address == address
        and previous.last_step is not None
    )
    confirmed = address is not None and (not had or unchanged)
    return TokenRecord(
        token_id={"email": "ml", "sms": "sm"}.get(token_type, "ob") + secrets.token_hex(6),
        user=user,
        type=token_type,
        secret=_secret(AddressInfo(address, source, had or address is not None)),
        digits=0,
        algorithm="",
        period=0,
        created_at=now,
        last_step=1 if confirmed else None,
        description=f"{token_type} ({source})",
    )


class OutOfBandCodeFactor(BaseFactor, abc.ABC):
    """The shared half of :class:`~radmfa.factors.base.OutOfBandFactor` implementations."""

    #: Attribute name for the address in directory results; None when the directory cannot
    #: return attributes (direct bind, local users) or the admin turned it off.
    attribute: str | None = None

    def __init__(self, delivery: CodeDelivery, attribute: str | None) -> None:
        self.keyword = delivery.keyword
        self.code_ttl = delivery.ttl
        self.cooldown = delivery.cooldown
        self.max_per_hour = delivery.max_per_hour
        self.max_per_hour_total = delivery.max_per_hour_total
        self.prompt = delivery.prompt
        self.confirm_prompt = delivery.confirm_prompt
        self.code_length = delivery.length
        self.alphabet = DIGITS if delivery.alphabet == "digits" else LETTERS
        self.attribute = attribute

    # -- to be provided by email / sms --

    @abc.abstractmethod
    def clean_address(self, text: str) -> str | None:
        """The address in canonical form, or None when it is not one."""

    @abc.abstractmethod
    def mask(self, address: str) -> str:
        """The address as a prompt may show it (a***@example.org, ******1234)."""

    # -- the shared part --

    def usable(self, token: TokenRecord, now: float) -> bool:
        """An address to send to, or the directory may give one at the next bind."""
        if self.destination(token) is not None:
            return True
        return self.attribute is not None and read_info(token).source == SOURCE_DIRECTORY

    def destination(self, token: TokenRecord) -> Destination | None:
        address = read_info(token).address
        if address is None:
            return None
        return Destination(address, self.mask(address), token.last_step is not None)

    def refresh(
        self, token: TokenRecord, attributes: Mapping[str, Sequence[str]], now: float
    ) -> TokenRecord | None:
        info = read_info(token)
        if self.attribute is None or info.source != SOURCE_DIRECTORY:
            return None
        wanted = self.attribute.lower()
        values = next((v for k, v in attributes.items() if k.lower() == wanted), ())
        value = self.clean_address(values[0]) if values else None
        if value == info.address:
            return None
        return address_token(self.type, token.user, value, SOURCE_DIRECTORY, now, token)

    def new_code(self) -> str:
        return random_code(self.code_length, self.alphabet)

    def normalize(self, code: str) -> str | None:
        text = code.strip().upper()
        if len(text) != self.code_length or any(c not in self.alphabet for c in text):
            return None
        return text


def message_fields(code: str, context: SendContext) -> dict[str, str]:
    """Template fields for email and SMS texts (see radmfa.config.factors.MESSAGE_FIELDS)."""
    return {
        "code": code,
        "user": context.user,
        "service": context.service,
        "client": context.client,
        "minutes": str(max(1, math.ceil(context.ttl / 60))),
        "expires": datetime.fromtimestamp(context.expires_at, UTC).strftime("%H:%M"),
    }
