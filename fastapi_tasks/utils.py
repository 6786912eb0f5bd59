"""Helpers kept for code written against fastapi-tasks 0.1.0, whose API reference documents them.

New code has no need of them: `tasks.schedule(...)` already runs sync callables in a worker
thread and async ones on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from ._callables import call

__all__ = ["always_async_call"]

P = ParamSpec("P")
T = TypeVar("T")


@overload
async def always_async_call(func: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T: ...
@overload
async def always_async_call(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...
async def always_async_call(func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Any:
    """Call `func(*args, **kwargs)` and await its result: a sync `func` in a worker thread, an async one on the loop.

    As a task body is called: the same test tells sync from async (functions, `functools.partial`s
    of them, objects with an async `__call__`), and an awaitable that a sync `func` returns is
    awaited too.

    Parameters:
        func: the callable, sync or async; positional-only, so `func` can also be one of its keyword arguments.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        What `func` returned (awaited, for an async `func`).

    Raises:
        Exception: whatever `func` raised.
    """
    return await call(func, args, kwargs)
