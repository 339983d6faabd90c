"""Building the pipeline's Decisions: the one reject every refusal looks like on the wire, and
tagging a decision with how it was reached (method, factor, rule) for logs and audit."""

from __future__ import annotations

from dataclasses import replace

from radmfa.auth.model import GENERIC_REJECT_MESSAGE, Decision, Outcome, Reason


def reject(
    reason: Reason,
    user: str | None = None,
    *,
    message: str = GENERIC_REJECT_MESSAGE,
    method: str | None = None,
    factor: str | None = None,
) -> Decision:
    return Decision(
        Outcome.REJECT, reason, user=user, reply_message=message, method=method, factor=factor
    )


def ruled(decision: Decision, rule: str | None, reply: tuple[bytes, ...] = ()) -> Decision:
    """``decision`` naming the rule that decided and, when it accepts, carrying the rule's
    reply attributes (a plain constructor call: dataclasses.replace is several times slower,
    and this runs on every request)."""
    d = decision
    return Decision(
        d.outcome,
        d.reason,
        d.user,
        d.reply_message,
        d.state,
        d.method,
        d.factor,
        rule,
        d.trusted_device,
        reply if d.outcome is Outcome.ACCEPT else (),
    )


def tagged(
    decision: Decision,
    *,
    method: str | None,
    factor: str | None = None,
    rule: str | None = None,
) -> Decision:
    """``decision`` with its method; factor and rule only where it has none of its own."""
    return replace(
        decision,
        method=method,
        factor=factor or decision.factor,
        rule=rule or decision.rule,
    )
