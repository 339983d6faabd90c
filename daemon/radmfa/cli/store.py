"""radmfa store migrate | copy: the schema of the configured store, and moving a SQLite store
into PostgreSQL."""

from __future__ import annotations

import argparse
import contextlib

from radmfa.audit import operator
from radmfa.cli.common import config_from, now, store_from
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.store import describe
from radmfa.store.base import AUDIT_ADMIN, AuditEvent, StoreError, VersionedStore
from radmfa.store.crypto import SecretBox, SecretBoxError
from radmfa.store.snapshot import StoreNotEmpty


def run_migrate(args: argparse.Namespace) -> int:
    """Opening a store migrates it (under the database's lock, so nodes starting meanwhile
    take turns); this says from which version to which."""
    config = config_from(args)
    store = store_from(config)
    try:
        if not isinstance(store, VersionedStore):  # pragma: no cover - every engine is
            raise CommandFailed("this store engine has no schema versions")
        before, after = store.schema_at_open, store.schema_version()
    except StoreError as e:
        raise CommandFailed(str(e)) from None
    finally:
        store.close()
    done = (
        f"schema {after} (up to date)" if before == after else f"migrated from {before} to {after}"
    )
    print(f"store: {describe(config.store)}: {done}")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    """Copy a SQLite store file into the configured PostgreSQL store, which must be empty:
    in one transaction, so a failure anywhere leaves it empty."""
    from radmfa.store.postgres import PostgresStore
    from radmfa.store.sqlite_export import read_sqlite_snapshot

    config = config_from(args)
    if config.store.engine != "postgresql":
        raise UsageError(
            "store copy needs store.engine: postgresql (the configured store is the "
            f"destination, and it is SQLite: {config.store.path})"
        )
    key_file = args.key_file or config.store.key_file
    try:
        # Never created here: a new key could open nothing in the source.
        source_box = SecretBox.from_key_file(key_file, create=False)
    except SecretBoxError as e:
        raise CommandFailed(f"the key file of {args.source}: {e}") from None
    with contextlib.ExitStack() as stack:
        try:
            snapshot = stack.enter_context(read_sqlite_snapshot(args.source, source_box))
        except StoreError as e:
            raise CommandFailed(f"nothing copied: {e}") from None
        store = store_from(config)
        stack.callback(store.close)
        assert isinstance(store, PostgresStore)
        summary = snapshot.counts.copy_summary()
        note = AuditEvent(
            at=now(),
            kind=AUDIT_ADMIN,
            user=None,
            actor=operator(),
            action="store-copy",
            after=f"from {args.source}: {summary}",
            reason=args.reason,
        )
        try:
            store.import_snapshot(snapshot, [note])
        except StoreNotEmpty as e:
            raise CommandFailed(
                f"nothing copied: {store.name} is not empty ({e}); store copy only fills an "
                "empty store"
            ) from None
        except StoreError as e:
            raise CommandFailed(f"nothing copied: {e}") from None
    print(summary)
    print(f"into {describe(config.store)}, from {args.source}")
    return 0
