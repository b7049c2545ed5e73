"""RequestBudget: the broker-wide budget of request bytes. Takers get in while it is not spent
(the last may overshoot it by what it takes), wait while it is, and are woken in order."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.server.budget import RequestBudget

HANG_S = 30.0  # a bound against a hang, never a synchronisation device


async def started(budget: RequestBudget, nbytes: int, order: list[int]) -> asyncio.Task[None]:
    """A task taking ``nbytes``, run until it either took them or waits for them."""

    async def take() -> None:
        await budget.take(nbytes)
        order.append(nbytes)

    task = asyncio.create_task(take())
    await asyncio.sleep(0)  # one loop turn: the task takes, or parks on its waiter
    return task


def test_takers_get_in_while_the_budget_is_not_spent_and_may_overshoot_it() -> None:
    async def main() -> None:
        budget = RequestBudget(100)
        order: list[int] = []
        first = await started(budget, 60, order)
        second = await started(budget, 60, order)  # 60 < 100: in, to 120
        third = await started(budget, 1, order)
        assert order == [60, 60] and first.done() and second.done()
        assert not third.done() and budget.used == 120
        budget.release(60)  # 60 < 100: the waiter gets in
        await third
        assert order == [60, 60, 1] and budget.used == 61 and budget.peak == 120

    asyncio.run(main())


def test_waiters_are_woken_in_arrival_order_while_there_is_room() -> None:
    async def main() -> None:
        budget = RequestBudget(10)
        order: list[int] = []
        await started(budget, 10, order)
        waiting = [await started(budget, n, order) for n in (3, 4, 2)]
        # A newcomer queues behind the waiters, even once there is room.
        budget.release(10)
        late = await started(budget, 1, order)
        await asyncio.gather(*waiting, late)
        assert order == [10, 3, 4, 2, 1]
        assert budget.waits == 4

    asyncio.run(main())


@pytest.mark.parametrize("when", ["while it waits", "after its wake-up", "as a release passes"])
def test_a_cancelled_waiter_takes_nothing_and_holds_no_one_up(when: str) -> None:
    async def main() -> None:
        budget = RequestBudget(10)
        order: list[int] = []
        await started(budget, 10, order)
        cancelled = await started(budget, 5, order)
        after = await started(budget, 2, order)
        if when == "while it waits":
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            budget.release(10)
        elif when == "after its wake-up":
            budget.release(10)  # wakes it; it is cancelled before it runs
            cancelled.cancel()
        else:
            cancelled.cancel()  # its waiter is cancelled at once, the task runs later
            budget.release(10)  # and the wake-up passes it over
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await asyncio.wait_for(after, HANG_S)  # never woken: the turn was lost
        assert order == [10, 2] and budget.used == 2 and not budget._waiters

    asyncio.run(main())
