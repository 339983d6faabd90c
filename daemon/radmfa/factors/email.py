"""Email codes: ``email`` at the prompt sends a one-time code through the configured SMTP
server. NIST SP 800-63B does not accept email as an out-of-band authenticator; offer it as a
convenience next to stronger factors, not instead of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from radmfa.config import EmailConfig
from radmfa.delivery.smtp import SmtpTransport, build_message
from radmfa.factors.base import Destination, SendContext
from radmfa.factors.codes import mask_email
from radmfa.factors.outofband import OutOfBandCodeFactor, message_fields

if TYPE_CHECKING:
    from radmfa.factors.plugins import FactorContext

_FORBIDDEN = set(' \t\r\n,;<>()[]\\"')


def clean_email(text: str) -> str | None:
    """A single plain address (``local@domain``), or None. No display names, no lists: the
    value ends up in a To header, so nothing that could add a second recipient passes."""
    address = text.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or len(address) > 254:
        return None
    if any(c in _FORBIDDEN or not c.isprintable() for c in address):
        return None
    return address


class EmailFactor(OutOfBandCodeFactor):
    type = "email"
    label = "email"

    def __init__(self, config: EmailConfig, transport: SmtpTransport, attribute: str | None):
        super().__init__(config.delivery, attribute)
        self.config = config
        self.transport = transport

    def clean_address(self, text: str) -> str | None:
        return clean_email(text)

    def mask(self, address: str) -> str:
        return mask_email(address)

    def send(self, destination: Destination, code: str, context: SendContext) -> Deferred[None]:
        fields = message_fields(code, context)
        message = build_message(
            self.config.sender,
            destination.address,
            self.config.subject.format(**fields),
            self.config.body.format(**fields),
        )
        return self.transport.send(message)


def create(context: FactorContext) -> EmailFactor | None:
    """Entry point ``radmfa.factors: email``; off (None) without an ``otp.email`` section."""
    config = context.config.otp.email
    if config is None:
        return None
    attribute = config.address_attribute if context.directory_attributes else None
    return EmailFactor(config, SmtpTransport(config.smtp, context.send_runner), attribute)
