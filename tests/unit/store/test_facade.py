"""The async facade mirrors the Store contract: same methods, same parameters, run on the
runner, results and store errors passed through as Deferreds."""

from __future__ import annotations

import inspect

import pytest

from radmfa.store.base import Store, StoreError, TokenRecord
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import InlineRunner

#: Store methods the reactor never calls (blocking shutdown).
_SYNC_ONLY = {"close"}


def _contract_methods() -> list[str]:
    return sorted(
        name
        for name, member in vars(Store).items()
        if callable(member) and not name.startswith("_") and name not in _SYNC_ONLY
    )


@pytest.mark.parametrize("name", _contract_methods())
def test_every_store_method_has_an_async_twin_with_the_same_parameters(name: str) -> None:
    contract = inspect.signature(getattr(Store, name))
    twin = inspect.signature(getattr(AsyncStore, name))
    assert list(twin.parameters.values()) == list(contract.parameters.values())


def test_calls_run_on_the_runner_and_fire_with_the_result() -> None:
    store, runner = MemoryStore(), InlineRunner()
    facade = AsyncStore(store, runner)
    token = TokenRecord("t1", "alice", "totp", b"k" * 20, 6, "SHA1", 30, 1.0)
    results: list[object] = []
    facade.add_token(token).addCallback(results.append)
    facade.advance_step("t1", 5).addCallback(results.append)
    facade.advance_step("t1", 5).addCallback(results.append)
    assert results == [True, True, False]
    assert runner.calls == 3
    assert store.list_tokens("alice")[0].last_step == 5


def test_an_interaction_is_one_trip_with_the_blocking_store() -> None:
    store, runner = MemoryStore(), InlineRunner()
    facade = AsyncStore(store, runner)

    def two_calls(s: Store, user: str) -> int:
        s.set_preferred(user, "totp")
        return len(s.list_tokens(user))

    results: list[object] = []
    facade.interaction(two_calls, "alice").addCallback(results.append)
    assert results == [0] and runner.calls == 1
    assert store.user_settings("alice").preferred == "totp"


def test_store_errors_arrive_as_failed_deferreds() -> None:
    store = MemoryStore()
    store._closed = True  # the database went away
    failures: list[object] = []
    AsyncStore(store, InlineRunner()).lock_state("alice").addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(StoreError)  # type: ignore[attr-defined]


def test_another_lane_shares_the_store() -> None:
    store, lane = MemoryStore(), InlineRunner()
    facade = AsyncStore(store, InlineRunner()).on(lane)
    facade.set_notice("alice", "hello")
    assert facade.store is store and lane.calls == 1
