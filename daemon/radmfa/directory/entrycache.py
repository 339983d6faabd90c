"""A brief memory of user entries found by search-then-bind (``ldap.user_cache``).

A repeat login (Wi-Fi re-authentication, sudo over pam_radius) would otherwise search for the
same entry again as the service account. The cache only saves that search: the user bind still
happens on every check, so a cached entry never lets anybody in by itself.

Bounded two ways: every entry lives ``ttl`` seconds at most, and at most ``max_entries`` are
kept (the oldest insertion goes first; a dict keeps insertion order, so that is cheap). Stored
values are tuples, and :meth:`EntryCache.get` hands out fresh dicts and lists, so no caller can
change what another one reads. Thread-safe: the ldap3 engine calls it from its worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_ENTRIES", "EntryCache"]

#: Entries kept at most: a few tens of megabytes even with many attributes per entry.
DEFAULT_MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class _Entry:
    stored: float
    dn: str
    attributes: tuple[tuple[str, tuple[str, ...]], ...]


class EntryCache:
    """username -> (DN, attributes), each for ``ttl`` seconds on ``clock`` (e.g.
    ``reactor.seconds``). Counts :attr:`hits` and :attr:`misses` of :meth:`get`."""

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float],
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if not ttl > 0:
            raise ValueError("the entry cache needs a time to live above 0")
        if max_entries < 1:
            raise ValueError("the entry cache needs room for at least one entry")
        self.ttl = float(ttl)
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, username: str) -> tuple[str, dict[str, list[str]]] | None:
        """The entry stored for ``username`` and still fresh, as copies; None otherwise (an
        expired entry is removed)."""
        now = self._clock()
        with self._lock:
            found = self._entries.get(username)
            if found is not None and not self._fresh(found, now):
                del self._entries[username]
                found = None
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
        return found.dn, {name: list(values) for name, values in found.attributes}

    def put(self, username: str, dn: str, attributes: Mapping[str, Sequence[str]]) -> None:
        """Remember the one entry a search found for ``username`` (replacing an older one)."""
        frozen = tuple((str(name), tuple(values)) for name, values in attributes.items())
        now = self._clock()
        with self._lock:
            self._entries.pop(username, None)  # re-inserted last: it is the newest now
            self._drop_stale(now)
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[username] = _Entry(now, dn, frozen)

    def drop(self, username: str) -> None:
        """Forget ``username`` (its bind was refused: the next check searches again)."""
        with self._lock:
            self._entries.pop(username, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _fresh(self, entry: _Entry, now: float) -> bool:
        # A clock that went backwards must not stretch an entry's life.
        return entry.stored <= now < entry.stored + self.ttl

    def _drop_stale(self, now: float) -> None:
        """Expired entries from the oldest end (entries expire in insertion order)."""
        while self._entries:
            oldest = next(iter(self._entries))
            if self._fresh(self._entries[oldest], now):
                return
            del self._entries[oldest]
