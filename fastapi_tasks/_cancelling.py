"""Cancelling a task's own asyncio task the way an anyio cancel scope around it would.

On asyncio the app's runtime starts each task as an asyncio task of its own, without a cancel scope
around it (one per task would cost about as much as the task itself). `asyncio.Task.cancel()` does
not stop at anyio's shields: it would interrupt a `with anyio.CancelScope(shield=True):` section, a
pending `anyio.to_thread.run_sync()` (abandoning its thread) and a sync `on_error` handler in a
thread. So a task is cancelled here only when it is asked to, as anyio would: a cancelled cancel
scope is put around the outermost scope the task is in, and anyio's own delivery then cancels the
task at its next checkpoint outside every shielded scope. This reads anyio's asyncio backend
(anyio 4); where that is not what this module expects, it falls back to `asyncio.Task.cancel()`.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_asyncio_task", "in_shielded_section"]

try:
    from anyio._backends._asyncio import CancelScope as _CancelScope
    from anyio._backends._asyncio import _task_states
except ImportError:  # pragma: no cover - anyio 4's layout
    _CancelScope = None  # type: ignore[assignment,misc]
    _task_states = None  # type: ignore[assignment]


def _current_scope(task: asyncio.Task[Any]) -> Any:
    state = None if _task_states is None else _task_states.get(task)
    return None if state is None else getattr(state, "cancel_scope", None)


def cancel_asyncio_task(task: asyncio.Task[Any]) -> None:
    """Cancel `task` at its next checkpoint that is not inside a shielded anyio cancel scope."""
    scope = _current_scope(task)
    if scope is None or _CancelScope is None:
        task.cancel()  # in no anyio cancel scope: nothing to stop at
        return
    try:
        root = scope
        while root._parent_scope is not None:
            root = root._parent_scope
        if root._host_task is not task:  # pragma: no cover - a scope of another task: not one of the runtime's
            task.cancel()
            return
        outer = _CancelScope()
        outer.cancel()  # no host task yet: nothing is delivered until it is the task's outermost scope
        outer._host_task = task
        root._reparent(outer)  # anyio delivers the cancellation, now or once the task leaves its shields
    except AttributeError:  # pragma: no cover - another anyio than this module knows
        task.cancel()


def in_shielded_section(task: object) -> bool:
    """Whether the asyncio task `task` is inside a shielded anyio cancel scope (or a thread it waits for)."""
    if not isinstance(task, asyncio.Task):
        return False
    scope = _current_scope(task)
    while scope is not None:
        if getattr(scope, "_shield", False):
            return True
        scope = getattr(scope, "_parent_scope", None)
    return False
