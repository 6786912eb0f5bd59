"""How the app's runtime starts a task on the running event loop: the loop's own `create_task`, or eagerly.

On asyncio the app's runtime starts each task as an asyncio task of its own; with
`add_tasks(app, eager_start=True)` (Python 3.12+) it starts it eagerly, bounded. On trio it
starts tasks through anyio's task group instead, and this module has nothing to offer.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from .errors import FastAPITasksError

__all__ = ["MAX_EAGER_DEPTH", "native_task_factory"]

MAX_EAGER_DEPTH = 16
"""With eager_start, how many tasks may start eagerly one inside another's first stretch (see `_EagerStart`)."""


class _EagerStart:
    """Starts a task eagerly on asyncio (Python 3.12+): it runs inside the call up to its first suspending await.

    Bounded: a task started in another's first stretch adds that stretch's frames to the stack, and a chain
    of them (each scheduling the next before its first await) would overflow it; past `MAX_EAGER_DEPTH`
    nested starts, a task starts at the loop's next turn. A `SystemExit` or `KeyboardInterrupt` that a task
    raises in its first stretch (the task has ended, and was logged) is raised again from the event loop, as
    a task started at the loop's next turn would raise it: it stops the server, and neither the request nor
    the rest of a batch being started loses anything.
    """

    __slots__ = ("depth", "loop")

    # The pragmas below: eager_start needs Python 3.12+; scripts/check_pythons.sh runs this on 3.12 and 3.13.

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:  # pragma: no cover - Python 3.12+ only
        self.loop = loop
        self.depth = 0

    def __call__(self, coro: Any, *, name: str) -> asyncio.Task[Any] | None:  # pragma: no cover - Python 3.12+ only
        if self.depth >= MAX_EAGER_DEPTH:
            return self.loop.create_task(coro, name=name)
        self.depth += 1
        try:
            return asyncio.Task(coro, loop=self.loop, name=name, eager_start=True)  # type: ignore[call-arg]
        except (KeyboardInterrupt, SystemExit) as exc:
            self.loop.call_soon(_raise, exc)
            return None
        finally:
            self.depth -= 1


def _raise(exc: BaseException) -> None:  # pragma: no cover - Python 3.12+ only
    raise exc


if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10; scripts/check_pythons.sh runs it

    class _CountedTask(asyncio.Task):  # type: ignore[type-arg]
        """Python 3.10's asyncio task with the `cancelling()` of 3.11, for the cancellations that are not anyio's.

        The runner tells a task the event loop or the server cancelled (it ended cancelled) from one that
        raised a `CancelledError` of a future it awaited (it failed) by `cancelling()`. anyio on 3.10 cancels
        a task to deliver its cancel scopes' cancellations, and takes nothing back when a scope catches it:
        those are not counted (anyio's scopes are told apart by `cancelled_by_us` anyway).
        """

        _outside_cancels = 0

        def cancel(self, msg: Any = None) -> bool:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if not self.done() and not caller.startswith("anyio."):
                self._outside_cancels += 1
            return super().cancel(msg)

        def cancelling(self) -> int:
            return self._outside_cancels

    def _counted_task_factory(loop: asyncio.AbstractEventLoop) -> Callable[..., asyncio.Task[Any]]:
        def create_task(coro: Any, *, name: str) -> asyncio.Task[Any]:
            return _CountedTask(coro, loop=loop, name=name)

        return create_task


def native_task_factory(eager_start: bool) -> Callable[..., asyncio.Task[Any] | None] | None:
    """How the app's runtime starts a task on the running event loop: `None` when it is not asyncio's.

    Raises:
        FastAPITasksError: `eager_start` was asked for, but the event loop is not asyncio's.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio
        loop = None
    if eager_start:  # pragma: no cover - Python 3.12+ only
        if loop is None:
            raise FastAPITasksError(
                "add_tasks(app, eager_start=True) needs the asyncio event loop, and the app runs on another one "
                "(trio). Leave eager_start off there."
            )
        return _EagerStart(loop)
    if loop is None:
        return None
    if sys.version_info < (3, 11) and loop.get_task_factory() is None:  # pragma: no cover - Python 3.10
        # (An app's own task factory is kept: its tasks then have no `cancelling()`, and the runner cannot tell
        # a cancel from outside from a failure there, as before.)
        return _counted_task_factory(loop)
    return loop.create_task
