"""The domain queries of the SQL engines, one module per area, composed by
:class:`radmfa.store.sql.SqlStore`.

Each statement is written once in the neutral spelling of
:mod:`radmfa.store.engines.dialect` and rendered for every engine when its module is imported;
each read-judge-write is written once on the :class:`~radmfa.store.engines.base.Transaction`
interface, so the SQLite and PostgreSQL engines cannot drift apart.
"""
