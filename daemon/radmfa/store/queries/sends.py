"""Out-of-band sends: a send is recorded only within the cooldown and the hourly caps, read
and written under the locks of the user's channel (and of the channel, with a total cap)."""

from __future__ import annotations

from radmfa.store.engines.base import Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import SEND_WINDOW, SendGrant
from radmfa.store.queries.base import Queries
from radmfa.store.rules import send_verdict, total_verdict

__all__ = ["SendQueries"]

SELECT_RECENT_SENDS = Statement(
    "SELECT sent_at FROM sends WHERE username = ? AND channel = ? AND sent_at > ?"
)
#: The n-th most recent send of a channel within the window (OFFSET n - 1), for the total cap.
SELECT_NTH_SEND = Statement(
    "SELECT sent_at FROM sends WHERE channel = ? AND sent_at > ? "
    "ORDER BY sent_at DESC LIMIT 1 OFFSET ?"
)
INSERT_SEND = Statement("INSERT INTO sends (username, channel, sent_at) VALUES (?, ?, ?)")


class SendQueries(Queries):
    def reserve_send(
        self,
        user: str,
        channel: str,
        now: float,
        cooldown: float,
        per_hour: int,
        total_per_hour: int | None = None,
    ) -> SendGrant:
        def work(tx: Transaction) -> SendGrant:
            # This user's sends of this channel, and with a total cap every send of the
            # channel, wait for each other: the counts read stay true until the insert.
            keys: list[tuple[str, ...]] = [("send", user, channel)]
            if total_per_hour is not None:
                keys.append(("send-channel", channel))
            tx.lock(*keys)
            recent = [
                float(t) for (t,) in tx.all(SELECT_RECENT_SENDS, (user, channel, now - SEND_WINDOW))
            ]
            grant = send_verdict(recent, now, cooldown, per_hour)
            if grant.granted and total_per_hour is not None:
                row = tx.one(
                    SELECT_NTH_SEND, (channel, now - SEND_WINDOW, max(0, total_per_hour - 1))
                )
                grant = total_verdict(float(row[0]) if row is not None else None, now)
            if grant.granted:
                tx.execute(INSERT_SEND, (user, channel, now))
            return grant

        return self._engine.transaction(f"reserving a {channel} send for {user!r}", work)
