"""Running one task: loop or worker thread, logging, `on_error` containment, shielding.

Both the production scheduler and the testing toolkit's recorder run task bodies through
`run_task`, so a task behaves the same under test as in production.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from inspect import CO_COROUTINE
from types import FunctionType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from ._context import current_scope
from ._phases import TaskStatus

if TYPE_CHECKING:
    from starlette.types import Scope

    from .tasks import Task

__all__ = ["TaskHost", "callable_name", "is_async_callable", "logger", "run_task", "run_unshielded"]

logger = logging.getLogger("fastapi_tasks")


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


async def call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call `func` on the event loop if it is async, else in a worker thread, and return its result."""
    if is_async_callable(func):
        return await func(*args, **kwargs)
    # The result comes back boxed: trio refuses a worker-thread function that returns a coroutine.
    [result] = await anyio.to_thread.run_sync(lambda: [func(*args, **kwargs)])
    if inspect.isawaitable(result):
        # A sync callable that returns an awaitable (a lambda wrapping a coroutine function, say).
        result = await result
    return result


class TaskHost(Protocol):
    """What starts tasks for an app: the scope their bodies see as the "current request", and a call at their end."""

    @property
    def task_scope(self) -> Scope: ...

    def task_ended(self) -> None: ...


async def run_task(task: Task[..., Any], host: TaskHost | None = None) -> None:
    """Run `task`'s body, record its outcome on the handle, and contain whatever it raises.

    A failure is logged (with the task's name, never its argument values) and handed to the
    task's `on_error` handler; an `on_error` that raises is logged and contained. Cancellation
    is logged at WARNING and re-raised so the task group can finish cancelling. A shielded task
    (`config.shield`) runs in a shielded cancel scope. `host`, when given, provides the "current
    request" the body sees (`host.task_scope`, set in the task's own copy of the context, so it
    needs no reset), and `host.task_ended()` is called last, however the run ended.
    """
    if task.config.shield:
        with anyio.CancelScope(shield=True):
            await run_unshielded(task, host)
    else:
        await run_unshielded(task, host)


async def run_unshielded(task: Task[..., Any], host: TaskHost | None = None) -> None:
    """`run_task` without the shielded cancel scope: what the scheduler starts for an unshielded task.

    The scheduler starts this coroutine itself as the task (`run_task` for a shielded one), and
    it stays allocated for as long as the task is pending: the body is awaited from this very
    frame, not through helper coroutines, and the frame keeps few locals (each costs memory).
    """
    if host is not None:
        current_scope.set(host.task_scope)
    task._set_running()
    try:
        try:
            func = task._target()
            # is_async_callable's fast path, inlined: this runs once per task.
            if (type(func) is FunctionType and func.__code__.co_flags & CO_COROUTINE) or is_async_callable(func):
                task._result = await func(*task.args, **task.kwargs)
            else:
                task._result = await call(func, task.args, task.kwargs)
        except Exception as exc:
            await _failed(task, exc)
        else:
            task._set_ended(_SUCCEEDED)
    except anyio.get_cancelled_exc_class():
        task._set_ended(TaskStatus.CANCELLED)
        logger.warning("Background task %r was cancelled before it finished", task.name)
        raise
    finally:
        if host is not None:
            host.task_ended()


# Enum members looked up once: a class attribute lookup on an Enum costs several times a global's.
_SUCCEEDED = TaskStatus.SUCCEEDED


async def _failed(task: Task[..., Any], exc: Exception) -> None:
    # The status stays "running" until on_error has returned: `done` / `wait()` mean "after on_error".
    task._exception = exc
    logger.error(
        "Background task %r failed: %s",
        task.name,
        describe_exception(exc),
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    await handle_error(task, exc)
    task._set_ended(TaskStatus.FAILED)


async def handle_error(task: Task[..., Any], exc: Exception) -> None:
    """Call `task`'s `on_error(task, exc)` handler, if any; log and contain what the handler raises."""
    handler = task._error_handler()
    if handler is None:
        return
    try:
        await call(handler, (task, exc), {})
    except Exception as handler_exc:
        logger.error(
            "The on_error handler %s of background task %r raised: %s",
            callable_name(handler),
            task.name,
            describe_exception(handler_exc),
            exc_info=(type(handler_exc), handler_exc, handler_exc.__traceback__),
        )


def describe_exception(exc: BaseException) -> str:
    """`TypeName: message`, or just `TypeName` for an exception without a message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
