"""One module per database: connections, transactions, errors, migrations, dialect.

The domain queries (:mod:`radmfa.store.queries`) run on the small interface of
:mod:`radmfa.store.engines.base`; :mod:`radmfa.store.engines.dialect` spells their statements
for each database. Nothing here knows what a token or a lockout is.
"""
