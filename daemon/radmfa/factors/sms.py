"""SMS codes: ``sms`` at the prompt sends a one-time code through the configured provider.
NIST SP 800-63B calls SMS a RESTRICTED authenticator: keep an app or hardware token on offer."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from radmfa.config import SmsConfig
from radmfa.delivery.sms import CommandProvider, SmsProvider, WebhookProvider
from radmfa.factors.base import Destination, SendContext
from radmfa.factors.codes import mask_number
from radmfa.factors.outofband import OutOfBandCodeFactor, message_fields

if TYPE_CHECKING:
    from radmfa.factors.plugins import FactorContext

_NUMBER = re.compile(r"\+?[0-9]{6,15}")
_SEPARATORS = str.maketrans("", "", " -./()")


def clean_number(text: str) -> str | None:
    """A phone number as digits with an optional leading +, spaces and dashes removed."""
    number = text.strip().translate(_SEPARATORS)
    return number if _NUMBER.fullmatch(number) else None


class SmsFactor(OutOfBandCodeFactor):
    type = "sms"
    label = "SMS"

    def __init__(self, config: SmsConfig, provider: SmsProvider, attribute: str | None) -> None:
        super().__init__(config.delivery, attribute)
        self.config = config
        self.provider = provider

    def clean_address(self, text: str) -> str | None:
        return clean_number(text)

    def mask(self, address: str) -> str:
        return mask_number(address)

    def send(self, destination: Destination, code: str, context: SendContext) -> Deferred[None]:
        text = self.config.message.format(**message_fields(code, context))
        return self.provider.send(destination.address, text, context.user)


def create(context: FactorContext) -> SmsFactor | None:
    """Entry point ``radmfa.factors: sms``; off (None) without an ``otp.sms`` section."""
    config = context.config.otp.sms
    if config is None:
        return None
    provider: SmsProvider
    if config.provider == "webhook":
        assert config.webhook is not None
        provider = WebhookProvider(config.webhook, context.reactor)
    else:
        assert config.command is not None
        provider = CommandProvider(config.command, context.reactor)
    attribute = config.number_attribute if context.directory_attributes else None
    return SmsFactor(config, provider, attribute)
