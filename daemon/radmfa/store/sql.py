"""The store on an SQL engine: every query area composed on one engine.

:class:`SqlStore` is the :class:`~radmfa.store.base.Store` of both SQL engines: the domain
logic of :mod:`radmfa.store.queries` on the connections, transactions and dialect of an
engine (:mod:`radmfa.store.engines`). :class:`~radmfa.store.sqlite.SqliteStore` and
:class:`~radmfa.store.postgres.PostgresStore` only open their engine.
"""

from __future__ import annotations

from radmfa.store.crypto import SecretBox
from radmfa.store.engines.base import Engine
from radmfa.store.queries.attempts import AttemptQueries
from radmfa.store.queries.audit import AuditQueries
from radmfa.store.queries.challenges import ChallengeQueries
from radmfa.store.queries.devices import DeviceQueries
from radmfa.store.queries.maintenance import MaintenanceQueries
from radmfa.store.queries.metrics import MetricsQueries
from radmfa.store.queries.portal import PortalQueries
from radmfa.store.queries.sends import SendQueries
from radmfa.store.queries.throttles import ThrottleQueries
from radmfa.store.queries.tokens import TokenQueries
from radmfa.store.queries.users import UserQueries

__all__ = ["SqlStore"]


class SqlStore(
    TokenQueries,
    UserQueries,
    AttemptQueries,
    DeviceQueries,
    ThrottleQueries,
    AuditQueries,
    SendQueries,
    ChallengeQueries,
    MaintenanceQueries,
    MetricsQueries,
    PortalQueries,
):
    """:class:`~radmfa.store.base.Store` on an opened (and migrated) SQL engine; token
    secrets sealed with ``box`` before they reach the database."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box
        self._opened = {}
        self._use_returning = engine.returning
        #: The schema version found when this store was opened, before migrating it.
        self.schema_at_open = engine.schema_at_open

    def schema_version(self) -> int:
        return self._engine.schema_version()

    def close(self) -> None:
        """Close every connection of the engine. Call at shutdown only."""
        self._engine.close()
