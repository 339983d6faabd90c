"""Getting a code to a person: SMTP for email, an HTTP webhook or a command for SMS.

Transports only deliver; what to send and when is the factors' and the pipeline's business.
Every transport returns a Deferred and never blocks the reactor: SMTP runs smtplib through a
:class:`~radmfa.threads.BlockingRunner`, the webhook uses Twisted's HTTP client and the
command runs under ``spawnProcess``. Failures are :class:`radmfa.factors.base.DeliveryError`
with a message for the log (never the code).
"""
