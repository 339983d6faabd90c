"""Email through an SMTP server: STARTTLS, implicit TLS or (local relay only) cleartext.

smtplib is blocking, so each message is sent on a thread of the given runner (the reactor's
own thread pool in the daemon). Server certificates are always verified, against ``ca_file``
or the system store; the connection and every reply have ``timeout``.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from radmfa.config import SmtpConfig
from radmfa.factors.base import DeliveryError
from radmfa.threads import BlockingRunner


def build_message(
    sender: str, to: str, subject: str, body: str, *, now: float | None = None
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(now, usegmt=True)
    domain = sender.rpartition("@")[2].strip(" >") or None
    message["Message-ID"] = make_msgid("radmfa", domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


class SmtpTransport:
    def __init__(self, config: SmtpConfig, runner: BlockingRunner | None) -> None:
        self.config = config
        self.runner = runner
        self._tls: ssl.SSLContext | None = None
        if config.security != "none":
            self._tls = ssl.create_default_context(cafile=config.ca_file)

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def send(self, message: EmailMessage) -> Deferred[None]:
        if self.runner is None:
            raise DeliveryError("email can only be sent by the daemon")
        d = self.runner.run(self._send_now, message)

        def explain(failure: Failure) -> Failure:
            if failure.check(DeliveryError):
                return failure
            return Failure(DeliveryError(f"SMTP {self.where}: {failure.getErrorMessage()}"))

        d.addErrback(explain)
        return d

    def _send_now(self, message: EmailMessage) -> None:
        """Blocking: runs on a runner thread."""
        c = self.config
        try:
            if c.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    c.host, c.port, timeout=c.timeout, context=self._tls
                )
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            with smtp:
                smtp.ehlo()
                if c.security == "starttls":
                    smtp.starttls(context=self._tls)
                    smtp.ehlo()
                if c.username is not None and c.password is not None:
                    smtp.login(c.username, c.password)
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as e:
            raise DeliveryError(f"SMTP {self.where}: login refused ({e.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError(f"SMTP {self.where}: the recipient was refused") from None
        except smtplib.SMTPResponseException as e:
            raise DeliveryError(f"SMTP {self.where}: server answered {e.smtp_code}") from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as e:
            detail = str(e) or type(e).__name__
            raise DeliveryError(f"SMTP {self.where}: {detail}") from None
