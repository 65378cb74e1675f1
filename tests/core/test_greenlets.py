"""core/greenlets.run_in_greenlet: SQLAlchemy's greenlet_spawn, on greenlets that are reused."""

from __future__ import annotations

import asyncio
import contextvars
import traceback
import weakref

import pytest
from greenlet import getcurrent
from sqlalchemy.util import await_

from service.core import greenlets
from service.core.greenlets import run_in_greenlet

_value: contextvars.ContextVar[str] = contextvars.ContextVar("value")


class Boom(Exception):
    pass


def _raise_boom() -> None:
    raise Boom("from inside")


async def test_a_call_returns_what_the_function_returns_and_the_next_call_reuses_its_greenlet() -> (
    None
):
    first = await run_in_greenlet(getcurrent)
    second = await run_in_greenlet(getcurrent)

    assert first is second  # greenlet_spawn makes a new greenlet for every call
    assert first is not getcurrent()
    assert await run_in_greenlet(lambda a, b: a + b, 2, 3) == 5


async def test_await_inside_suspends_the_function_while_the_caller_awaits() -> None:
    order: list[str] = []

    async def slow() -> str:
        order.append("awaited")
        await asyncio.sleep(0.01)
        return "result"

    def uses_the_driver() -> tuple[str, str]:
        order.append("before")
        first = await_(slow())
        second = await_(slow())
        order.append("after")
        return first, second

    other = asyncio.create_task(asyncio.sleep(0, result="other ran"))
    assert await run_in_greenlet(uses_the_driver) == ("result", "result")
    assert order == ["before", "awaited", "awaited", "after"]
    assert other.done()  # the event loop ran other tasks while the function waited


async def test_an_error_keeps_its_type_and_traceback_and_the_greenlet_is_used_again() -> None:
    worker = await run_in_greenlet(getcurrent)

    with pytest.raises(Boom, match="from inside") as raised:
        await run_in_greenlet(_raise_boom)

    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert "_raise_boom" in frames
    assert await run_in_greenlet(getcurrent) is worker


async def test_an_awaited_error_is_raised_inside_the_function_where_it_can_be_handled() -> None:
    async def fails() -> None:
        raise Boom("awaited")

    def handles() -> str:
        try:
            await_(fails())
        except Boom as error:
            return f"handled {error}"
        return "not raised"

    assert await run_in_greenlet(handles) == "handled awaited"


async def test_cancelling_the_caller_cancels_the_wait_inside_the_function() -> None:
    started = asyncio.Event()
    seen: list[str] = []

    def waits_forever() -> None:
        started.set()
        try:
            await_(asyncio.Event().wait())
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    task = asyncio.create_task(run_in_greenlet(waits_forever))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert seen == ["cancelled inside"]
    assert await run_in_greenlet(lambda: "still usable") == "still usable"


async def test_the_function_runs_in_the_callers_context() -> None:
    def reads_and_sets() -> str:
        seen = _value.get()
        _value.set("set inside")
        return seen

    async def request(name: str) -> tuple[str, str]:
        _value.set(name)
        seen = await run_in_greenlet(reads_and_sets)
        return seen, _value.get()

    # Two tasks with their own contexts, interleaved on the reused greenlets.
    assert list(await asyncio.gather(request("a"), request("b"))) == [
        ("a", "set inside"),
        ("b", "set inside"),
    ]
    # An idle greenlet keeps no caller's context.
    assert all(worker.gr_context is None for worker in greenlets._idle.workers)


async def test_concurrent_calls_never_share_a_greenlet() -> None:
    release = asyncio.Event()

    def holds() -> object:
        await_(release.wait())
        return getcurrent()

    calls = [asyncio.create_task(run_in_greenlet(holds)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    workers = await asyncio.gather(*calls)

    assert len({id(worker) for worker in workers}) == 3
    assert len(greenlets._idle.workers) <= greenlets.MAX_IDLE


async def test_a_call_in_progress_is_never_lent_to_another() -> None:
    release = asyncio.Event()

    def holds() -> object:
        await_(release.wait())
        return getcurrent()

    held = asyncio.create_task(run_in_greenlet(holds))
    await asyncio.sleep(0)
    other = await run_in_greenlet(getcurrent)
    release.set()

    assert await held is not other


async def test_each_thread_has_its_own_greenlets() -> None:
    """A greenlet runs only on the thread that made it: an app served on another thread's
    event loop (a sync test client) must never be handed one of this thread's."""
    here = await run_in_greenlet(getcurrent)

    def on_another_thread() -> tuple[object, object]:
        async def twice() -> tuple[object, object]:
            return await run_in_greenlet(getcurrent), await run_in_greenlet(getcurrent)

        return asyncio.run(twice())

    first, second = await asyncio.to_thread(on_another_thread)

    assert first is second
    assert first is not here
    assert await run_in_greenlet(getcurrent) is here


class _Payload:
    pass


async def test_a_parked_greenlet_keeps_neither_its_last_result_nor_its_last_error() -> None:
    """An idle greenlet's frame still refers to the outcome it handed over: emptied, it keeps no
    request's rows, connection or traceback alive."""

    def returns() -> _Payload:
        return _Payload()

    result = await run_in_greenlet(returns)
    returned = weakref.ref(result)
    del result
    assert returned() is None

    payload = _Payload()
    referenced = weakref.ref(payload)

    def raises(held: _Payload) -> None:
        raise Boom("with a local")

    with pytest.raises(Boom):
        await run_in_greenlet(raises, payload)
    del payload
    assert referenced() is None
