"""gradfix.lsp.fixstore: fixes kept by focus, and the jobs computing them in two lanes."""

from __future__ import annotations

import asyncio

from gradfix.lsp.analysis import FocusedFix, FocusFixes
from gradfix.lsp.fixstore import DONE, MISSING, WHOLE, FixStore, Job
from gradfix.lsp.text import Edit

KEY = ("m.py", "settings", "focus text", ())
OTHER = ("m.py", "settings", "another focus", ())
FIX = FocusedFix((Edit(3, 5, "x"),), companions=1)


def _result(**quick) -> FocusFixes:
    return FocusFixes(True, {(name,): fix for name, fix in quick.items()}, fix_all_done=True, fix_all=(Edit(0, 0, "y"),))


def test_results_are_kept_by_focus_and_target():
    store = FixStore()
    assert store.quick(KEY, ("a",)) == (MISSING, None) and store.fix_all(KEY) == (MISSING, None)
    assert store.verified(KEY) is None
    store.record(KEY, _result(a=FIX, b=None))
    assert store.quick(KEY, ("a",)) == (DONE, FIX)
    assert store.quick(KEY, ("b",)) == (DONE, None)  # no fix there
    assert store.quick(KEY, ("c",)) == (MISSING, None)
    assert store.fix_all(KEY) == (DONE, (Edit(0, 0, "y"),))
    assert store.verified(KEY) is True and store.known(KEY, ("a",), fix_all=True) and not store.known(KEY, ("c",))
    assert store.quick(OTHER, ("a",)) == (MISSING, None)

    store.record(OTHER, FocusFixes(False))  # the engine reads that focus differently
    assert store.quick(OTHER, ("a",)) == (WHOLE, None) and store.fix_all(OTHER) == (WHOLE, None)
    assert store.known(OTHER, ("a",), fix_all=True)
    store.record(OTHER, FocusFixes(True, fix_all_done=True, fix_all=None))  # the fix-all share did not map
    assert store.fix_all(OTHER) == (WHOLE, None)


def test_the_least_recently_used_results_go_first():
    store = FixStore(capacity=2)
    for name in ("a", "b"):
        store.record(KEY, FocusFixes(True, {(name,): FIX}))
    assert store.quick(KEY, ("a",))[0] == DONE  # used: now the newest
    store.record(KEY, FocusFixes(True, {("c",): FIX}))
    assert [store.quick(KEY, (n,))[0] for n in ("a", "b", "c")] == [DONE, MISSING, DONE]


def test_the_first_lane_to_finish_wins_and_the_other_job_is_dropped():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        store = FixStore()
        ahead = Job(KEY, frozenset({("a",)}), True, False, True, loop.create_future())
        now = Job(KEY, frozenset(), True, True, False, loop.create_future())
        store.add(ahead)
        store.add(now)
        assert store.job(KEY, ("a",)) is ahead and store.job(KEY, fix_all=True, background=False) is now
        waiting = asyncio.ensure_future(store.settled(KEY, fix_all=True))
        await asyncio.sleep(0)
        assert not waiting.done()
        ahead.future.set_result(_result(a=FIX))
        await asyncio.wait_for(waiting, 1)
        assert store.fix_all(KEY)[0] == DONE and store.quick(KEY, ("a",)) == (DONE, FIX)
        assert now.future.cancelled()  # what it would compute is known
        assert store.job(KEY, fix_all=True) is None

        # A job that ends without a result: the waiter is told (and finds nothing).
        other = Job(OTHER, frozenset({("b",)}), False, True, False, loop.create_future())
        store.add(other)
        waiting = asyncio.ensure_future(store.settled(OTHER, ("b",)))
        await asyncio.sleep(0)
        other.future.set_exception(RuntimeError("worker failed"))
        await asyncio.wait_for(waiting, 1)
        assert store.quick(OTHER, ("b",)) == (MISSING, None)

    asyncio.run(scenario())


def test_stale_jobs_computed_ahead_are_cancelled_but_not_those_someone_waits_for():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        store = FixStore()

        def job(key: tuple, urgent: bool) -> Job:
            made = Job(key, frozenset({("a",)}), False, urgent, not urgent, loop.create_future())
            store.add(made)
            return made

        kept, stale, waited = job(KEY, False), job(OTHER, False), job(OTHER, True)
        elsewhere = job(("n.py", "settings", "focus text", ()), False)
        store.cancel_ahead("m.py", keep={KEY})
        await asyncio.sleep(0)
        assert [j.future.cancelled() for j in (kept, stale, waited, elsewhere)] == [False, True, False, False]
        store.cancel_all()
        await asyncio.sleep(0)
        assert all(j.future.cancelled() for j in (kept, waited, elsewhere))

    asyncio.run(scenario())
