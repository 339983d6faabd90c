"""One-time enrolment links: an admin (``radmfa enroll-link``) or the help desk makes one for
a user without a factor, who then signs in to the portal with their directory password and
enrolls, whatever the enrolment grace period says.

A link is ``{portal.public_url}link/{secret}``. The store keeps the SHA-256 of the secret,
never the secret: a copy of the database opens no enrolment. The link works for its user
alone, until it expires, once (spent in the same transaction as the factor it enrolls:
:meth:`radmfa.store.base.Store.change_tokens`), and never for a user who has a factor.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from radmfa.admin.actor import Actor
from radmfa.store.base import EnrolLink, Store

__all__ = [
    "DEFAULT_LINK_TTL",
    "LINK_PATH",
    "MAX_LINK_TTL",
    "LinkError",
    "NewLink",
    "create_enrol_link",
    "link_hash",
    "link_secret",
    "link_url",
]

#: Where a link points under ``portal.public_url``.
LINK_PATH = "link/"
#: A week: long enough for a user to find the mail, short enough to be worth little later.
DEFAULT_LINK_TTL = 7 * 86400.0
MAX_LINK_TTL = 90 * 86400.0
#: Bytes of randomness in a link.
LINK_BYTES = 32
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")


def link_hash(secret: str) -> bytes:
    """What the store keys a link by."""
    return hashlib.sha256(secret.encode("ascii", "replace")).digest()


def link_secret(text: str) -> str | None:
    """The secret part of a link as a browser sent it back, or None when it cannot be one."""
    return text if _SECRET.fullmatch(text) else None


def link_url(public_url: str, secret: str) -> str:
    return f"{public_url.rstrip('/')}/{LINK_PATH}{secret}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NewLink:
    #: The secret part (shown once: only its hash is stored).
    secret: str
    record: EnrolLink


class LinkError(ValueError):
    """A link that cannot be made as asked; the message says why."""


def create_enrol_link(
    store: Store,
    actor: Actor,
    user: str,
    *,
    now: float,
    ttl: float = DEFAULT_LINK_TTL,
    has_factor: bool = False,
) -> NewLink:
    """A new link for ``user`` and its admin row (``enroll-link``). ``has_factor``: the
    caller found a factor the user can sign in with: a link would be refused at use, so
    none is made (:class:`LinkError`)."""
    if has_factor:
        raise LinkError(
            f"{user} has a second factor already: a link enrolls a first one only "
            "(the user adds more on the portal after signing in with it)"
        )
    if not 0 < ttl <= MAX_LINK_TTL:
        raise LinkError("a link lasts more than nothing and at most 90 days")
    secret = secrets.token_urlsafe(LINK_BYTES)
    record = EnrolLink(link_hash(secret), user, now, now + ttl, actor.name)
    store.add_enrol_link(record)
    store.append_audit(
        [actor.event(now, user, "enroll-link", after=f"valid until {_iso(record.expires_at)}")]
    )
    return NewLink(secret, record)
