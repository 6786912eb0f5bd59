"""What the scheduler needs to know of a callable: sync or async, its readable name, whether it can be a task.

Shared by the task handle, the runner and the testing toolkit, so that all of them tell sync from
async, and name a callable, the same way.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR
from types import FunctionType
from typing import Any

import anyio
import anyio.to_thread

__all__ = ["call", "callable_name", "generator_function", "is_async_callable", "is_generator_function", "not_callable"]


def is_async_callable(obj: object) -> bool:
    """Whether calling `obj` returns a coroutine (functions, partials of them, objects with async `__call__`)."""
    # Fast path, asked once per task run: a plain `async def` function, without inspect's unwrapping.
    if type(obj) is FunctionType and obj.__code__.co_flags & CO_COROUTINE:
        return True
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004
    )


def callable_name(func: object) -> str:
    """A readable name for `func`: its qualified name, looking through `functools.partial`."""
    if type(func) is FunctionType:  # fast path, asked once per task started: a plain function
        return func.__qualname__
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    if isinstance(name, str):
        return name
    return type(func).__qualname__


async def call(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    limiter: anyio.CapacityLimiter | None = None,
) -> Any:
    """Call `func` on the event loop if it is async, else in a worker thread, and return its result.

    `limiter` bounds the worker threads (anyio's default limiter when `None`).
    """
    if is_async_callable(func):
        return await func(*args, **kwargs)
    # The result comes back boxed: trio refuses a worker-thread function that returns a coroutine.
    [result] = await anyio.to_thread.run_sync(lambda: [func(*args, **kwargs)], limiter=limiter)
    if inspect.isawaitable(result):
        # A sync callable that returns an awaitable (a lambda wrapping a coroutine function, say).
        result = await result
    return result


def not_callable(func: object) -> TypeError:
    return TypeError(
        f"Cannot schedule {func!r}: it is not callable. "
        "Pass the function and its arguments separately: schedule(func, *args, **kwargs), "
        "not schedule(func(*args, **kwargs))."
    )


_GENERATOR_FLAGS = CO_GENERATOR | CO_ASYNC_GENERATOR


def is_generator_function(func: object) -> bool:
    if type(func) is FunctionType:  # fast path, asked once per task scheduled: a plain function
        return bool(func.__code__.co_flags & _GENERATOR_FLAGS)
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


def generator_function(func: object) -> TypeError:
    return TypeError(
        f"Cannot schedule {func!r}: it is a generator function, and calling it would only create a "
        "generator without running its body. Schedule a function that returns (or an async function "
        "that awaits) instead, e.g. one that iterates over the generator."
    )
