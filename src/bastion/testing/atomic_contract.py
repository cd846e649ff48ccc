"""Contract tests of the two atomic capabilities of a store, mixed into
:class:`~bastion.testing.store_contract.StoreContract`.

* :class:`~bastion.engine.flows.CompareAndSetRead` (the flow command): every store runs it,
  natively (:class:`~bastion.stores.base.SupportsCompareAndSetRead`, one Redis script) or by the
  drivers' fallback (a compare-and-set, then gets); the results must agree.
* :class:`~bastion.stores.base.SupportsTransaction` (SQLite): a transaction commits on return,
  rolls back on an exception, and no other writer comes between its calls. Skipped for stores
  that do not offer it.
"""

from __future__ import annotations

import asyncio

import pytest

from bastion.engine.flows import CompareAndSetRead, Flow, drive_async, drive_sync
from bastion.stores.base import Store, SupportsCompareAndSetRead, SupportsTransaction, SyncStore

__all__ = ["AtomicContract"]


def _check(ok: bool, what: str = "an atomic-capability contract check failed") -> None:
    __tracebackhide__ = True
    if not ok:
        raise AssertionError(what)


def _cas_read(
    key: str, expected: bytes | None, value: bytes, read: str
) -> Flow[tuple[bool, bytes | None, bytes | None]]:
    result: tuple[bool, bytes | None, bytes | None] = yield CompareAndSetRead(
        key, expected, value, 60.0, read
    )
    return result


class AtomicContract:
    """Mixin: the ``store`` fixture comes from the contract class it is mixed into."""

    @pytest.mark.asyncio
    async def test_cas_read_creates_and_reads(self, store: Store) -> None:
        await store.set("other", b"o")
        result = await drive_async(_cas_read("k", None, b"v", "other"), store)
        _check(result == (True, b"v", b"o"), f"got {result!r}")
        _check(await store.get("k") == b"v")

    @pytest.mark.asyncio
    async def test_cas_read_lost_returns_the_current_value(self, store: Store) -> None:
        await store.set("k", b"now")
        result = await drive_async(_cas_read("k", b"old", b"v", "missing"), store)
        _check(result == (False, b"now", None), f"got {result!r}")
        result = await drive_async(_cas_read("k", None, b"v", "k"), store)
        _check(result == (False, b"now", b"now"), f"got {result!r}")
        _check(await store.get("k") == b"now")

    @pytest.mark.asyncio
    async def test_cas_read_swaps(self, store: Store) -> None:
        await store.set("k", b"old")
        result = await drive_async(_cas_read("k", b"old", b"new", "k"), store)
        _check(result == (True, b"new", b"new"), f"got {result!r}")

    @pytest.mark.asyncio
    async def test_cas_read_has_one_winner(self, store: Store) -> None:
        results = await asyncio.gather(
            *(drive_async(_cas_read("race", None, b"%d" % i, "x"), store) for i in range(16))
        )
        winners = [r for r in results if r[0]]
        _check(len(winners) == 1, f"{len(winners)} winners")
        stored = await store.get("race")
        _check(all(r[1] == stored for r in results), "a caller saw another value than stored")

    @pytest.mark.asyncio
    async def test_native_cas_read_matches_the_protocol(self, store: Store) -> None:
        if not isinstance(store, SupportsCompareAndSetRead):
            pytest.skip("the store has no native compare_and_set_read (the fallback is tested)")
        result = await store.compare_and_set_read("n", None, b"v", None, "n")
        _check(result == (True, b"v", b"v"), f"got {result!r}")

    @pytest.mark.asyncio
    async def test_transaction_commits_and_rolls_back(self, store: Store) -> None:
        if not isinstance(store, SupportsTransaction):
            pytest.skip("the store offers no transactions (SupportsTransaction)")

        def write(tx: SyncStore) -> bytes | None:
            tx.set("t", b"1")
            return tx.get("t")

        _check(await store.transaction(write) == b"1")

        def fail(tx: SyncStore) -> None:
            tx.set("t", b"2")
            raise LookupError("undo")

        with pytest.raises(LookupError):
            await store.transaction(fail)
        _check(await store.get("t") == b"1", "a failed transaction's write stayed")
        with pytest.raises(LookupError):
            await asyncio.to_thread(store.transaction_sync, fail)
        _check(await store.get("t") == b"1", "a failed transaction's write stayed")

    @pytest.mark.asyncio
    async def test_transactions_serialise_read_modify_write(self, store: Store) -> None:
        if not isinstance(store, SupportsTransaction):
            pytest.skip("the store offers no transactions (SupportsTransaction)")
        await store.set("n", b"0")

        def bump(tx: SyncStore) -> None:
            current = tx.get("n")
            _check(current is not None)
            # a plain set, no compare-and-set: only the transaction keeps it exact
            tx.set("n", b"%d" % (int(current or b"0") + 1))

        def flow_bump(tx: SyncStore) -> None:
            drive_sync(_cas_read("other", None, b"x", "n"), tx)
            bump(tx)

        await asyncio.gather(
            *(store.transaction(bump) for _ in range(10)),
            *(asyncio.to_thread(store.transaction_sync, bump) for _ in range(10)),
            asyncio.to_thread(store.transaction_sync, flow_bump),
        )
        _check(await store.get("n") == b"21", f"lost updates: {await store.get('n')!r}")
