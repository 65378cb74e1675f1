"""Synchronous SQLAlchemy code run from a coroutine, on greenlets that are reused.

SQLAlchemy's asyncio API runs its synchronous code (a pool checkout, a commit) in a greenlet
that waits for the driver with `await_`: `greenlet_spawn` makes a new greenlet for every call.
On Python 3.13 a new greenlet costs ~9 us against ~0.7 us for a switch into one that exists:
the interpreter maps a fresh frame stack for it (one mmap, one page fault and one munmap per
call, measured with strace and perf on GET /users/me). The request path makes one to three such
calls per request (core/statements.py), so it runs them here instead, on greenlets kept for the
next call.

`run_in_greenlet(fn, *args)` behaves as `greenlet_spawn(fn, *args)`:

- `fn` runs in the calling task's context (contextvars read and set inside are the task's);
- `await_(awaitable)` inside it suspends `fn` while the caller awaits the awaitable, and hands
  back its result or raises its exception inside `fn` (cancellation included);
- what `fn` returns is returned, what it raises is raised, with its traceback.

A greenlet goes back to its thread's idle list only once `fn` has ended; one whose call was
abandoned (its task destroyed while `fn` waited) is never lent again. At most `MAX_IDLE` are kept
per thread: a greenlet can only be switched to from the thread that made it (a test client that
runs the app on its own thread and event loop gets its own).

SQLAlchemy's `await_` accepts any greenlet whose class sets `__sqlalchemy_greenlet_provider__`
and switches to its parent: tests/core/test_pool_private_api.py fails if that changes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, cast

from greenlet import GreenletExit, getcurrent, greenlet

# Greenlets kept per thread. A call holds at most one pooled connection, so more calls at once
# than this needs a pool above the default 10 + 5; past it, a greenlet is made for the call as
# greenlet_spawn would, and dropped afterwards.
MAX_IDLE = 64


class _Done:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error: BaseException | None = error


type _Call = tuple[Callable[..., Any], tuple[Any, ...]]


class _Worker(greenlet):
    # What SQLAlchemy's await_ checks before switching to the parent with the awaitable.
    __sqlalchemy_greenlet_provider__ = True


def _work(call: _Call) -> None:
    """The worker's whole life: run a call, hand its outcome to the parent, wait for the next."""
    while True:
        fn, args = call
        del call
        outcome: _Done | _Failed
        try:
            outcome = _Done(fn(*args))
        except GreenletExit:
            raise  # the worker is being destroyed (garbage collected while a call was abandoned)
        except BaseException as error:
            outcome = _Failed(error)
        del fn, args
        caller = getcurrent().parent
        assert caller is not None  # run_in_greenlet sets it before every call
        call = cast("_Call", caller.switch(outcome))


class _Idle(threading.local):
    def __init__(self) -> None:
        self.workers: list[_Worker] = []


_idle = _Idle()


async def run_in_greenlet[T](fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a reused greenlet, where it may `await_` (see the module docstring)."""
    caller = getcurrent()
    idle = _idle.workers
    worker = idle.pop() if idle else _Worker(_work)
    worker.parent = caller
    worker.gr_context = caller.gr_context
    result: Any = worker.switch((fn, args))
    while True:
        # The outcome is emptied before the worker parks: the parked frame still refers to it,
        # and must keep neither the last result nor an error's traceback alive.
        if type(result) is _Done:
            value: T = result.value
            result.value = None
            _park(worker, idle)
            return value
        if type(result) is _Failed:
            error = result.error
            result.error = None
            assert error is not None
            _park(worker, idle)
            try:
                raise error
            finally:
                del error, result
        try:
            awaited = await result
        except BaseException:
            result = worker.throw(*sys.exc_info())
        else:
            result = worker.switch(awaited)


def _park(worker: _Worker, idle: list[_Worker]) -> None:
    # The context goes with the call: an idle worker keeps no request's contextvars alive.
    worker.gr_context = None
    if len(idle) < MAX_IDLE:
        idle.append(worker)
