"""Which LDAP servers failed lately: both engines try those last for ``retry_after`` seconds.

Kept apart from the engines so the failover order is one rule, not two copies of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger(namespace="radmfa.directory")

T = TypeVar("T")


class ServerHealth(Generic[T]):
    """Orders servers for the next attempt and remembers transport failures."""

    def __init__(
        self,
        servers: Sequence[T],
        url_of: Callable[[T], str],
        clock: IReactorTime,
        retry_after: float,
    ) -> None:
        self._servers = tuple(servers)
        self._url_of = url_of
        self._clock = clock
        self._retry_after = retry_after
        self._down_until: dict[str, float] = {}

    def order(self) -> list[T]:
        """Configured order, with servers that failed recently moved to the end."""
        if not self._down_until:
            return list(self._servers)
        now = self._clock.seconds()
        up = [s for s in self._servers if self._down_until.get(self._url_of(s), now) <= now]
        return up + [s for s in self._servers if s not in up]

    def down(self) -> list[str]:
        """URLs currently tried last (for status output and tests)."""
        now = self._clock.seconds()
        urls = (self._url_of(s) for s in self._servers)
        return [url for url in urls if self._down_until.get(url, now) > now]

    def record(self, failed: Iterable[tuple[str, str]], answered_by: str | None) -> None:
        """``failed``: (url, why) for servers that gave no usable answer; ``answered_by``: the
        server whose answer was final (it is healthy again, whatever the answer was)."""
        failed = list(failed)
        if not failed and (answered_by is None or not self._down_until):
            return
        now = self._clock.seconds()
        for url, why in failed:
            if self._down_until.get(url, now) <= now:
                log.warn(
                    "LDAP server {url} failed ({why}); trying it last for {seconds}s",
                    url=url,
                    why=why,
                    seconds=self._retry_after,
                )
            self._down_until[url] = now + self._retry_after
        if answered_by is not None and self._down_until.pop(answered_by, None) is not None:
            log.info("LDAP server {url} answers again", url=answered_by)
