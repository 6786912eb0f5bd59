"""Calling the recorder's async verbs from a sync test: on the app's event loop, never inside one."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio

from fastapi_tasks._seam import NoEventLoopError, RunFinishedError, Runtime, run_on_loop

__all__ = ["check_no_running_loop", "on_the_apps_loop"]

T = TypeVar("T")


def on_the_apps_loop(real: Runtime | None, func: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `func()` on the loop of the app's runtime `real` while it runs, else in an event loop of its own."""
    if real is not None and not real.closed:
        try:
            return run_on_loop(real.token, func)  # type: ignore[no-any-return]
        except RunFinishedError:
            pass  # the app's loop has ended since
    return anyio.run(func)


def check_no_running_loop(name: str, async_name: str) -> None:
    """Refuse a sync helper called inside an event loop.

    Raises:
        RuntimeError: naming `name()` and the `await async_name()` to use instead.
    """
    try:
        anyio.get_current_task()
    except NoEventLoopError:
        return
    raise RuntimeError(
        f"{name}() was called inside an event loop; in an async test use `await {async_name}()` instead."
    )
