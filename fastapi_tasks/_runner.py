"""Running one task: loop or worker thread, logging, `on_error` containment, shielding.

Both the production scheduler and the testing toolkit's recorder run task bodies through
`run_task`, so a task behaves the same under test as in production.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from inspect import CO_COROUTINE
from logging import ERROR, WARNING
from types import FunctionType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.lowlevel import RunVar

from ._callables import call, callable_name, is_async_callable
from ._context import Serving, serving
from ._log import describe_exception, log, one_line
from ._phases import TaskStatus
from .task import Task

if TYPE_CHECKING:
    from starlette.types import Scope

__all__ = [
    "TaskHost",
    "cancelled_by_us",
    "handle_error",
    "run_task",
    "run_unshielded",
]


class TaskHost(Protocol):
    """What runs tasks for an app: the threads sync bodies get, and a call at the end of each task."""

    @property
    def limiter(self) -> anyio.CapacityLimiter | None:
        """The worker threads of sync task bodies and handlers (`None`: anyio's default limiter)."""
        ...

    def task_ended(self, task: Task[..., Any], /) -> None:
        """Called last, however the task ended."""
        ...

    @property
    def task_scope(self) -> Scope:
        """What a scheduler built in one of these tasks binds to (its batches are started by hand)."""
        ...


async def run_task(task: Task[..., Any], host: TaskHost | None = None) -> None:
    """Run `task`'s body, record its outcome on the handle, and contain whatever it raises.

    A failure is logged (with the task's name, never its argument values) and handed to the
    task's `on_error` handler; an `on_error` that raises is logged and contained. Every
    `BaseException` is contained the same way (it is not passed to `on_error`, whose signature
    takes an `Exception`), but for two kinds: our own cancellation (shutdown, `Task.cancel()`),
    logged at WARNING and re-raised so the task group can finish cancelling, and
    `KeyboardInterrupt` / `SystemExit`, re-raised after the task ended and was logged. A shielded
    task (`config.shield`) runs in a shielded cancel scope. `host`, when given, provides the
    threads of sync bodies and handlers, and `host.task_ended(task)` is called last.
    """
    if task.config.shield:
        with anyio.CancelScope(shield=True) as shield:
            # Known to the host while it runs: once the server stopped waiting for the shutdown, nothing else
            # would end it (trio, or a task group the app passed in), and the process could not exit.
            shields = getattr(host, "shields", None)
            if shields is None:
                await run_unshielded(task, host)
                return
            shields[task] = shield
            try:
                await run_unshielded(task, host)
            finally:
                del shields[task]
    else:
        await run_unshielded(task, host)


async def run_unshielded(task: Task[..., Any], host: TaskHost | None = None) -> None:
    """`run_task` without the shielded cancel scope: what the scheduler starts for an unshielded task.

    The scheduler starts this coroutine itself as the task (`run_task` for a shielded one), and
    it stays allocated for as long as the task is pending: the body is awaited from this very
    frame, not through helper coroutines, and the frame keeps few locals (each costs memory).
    """
    try:
        # A task cancelled while it waited to be started (Task.cancel() on a pending task) never starts.
        if task._status is _PENDING:
            if host is not None:
                # The task's own context (a copy of its request's) says that it serves the app's runtime,
                # not its request: a scheduler built here, or in a helper task or thread it starts (which
                # copy this context), binds to the runtime, never to the request's exit stacks.
                serving.set(getattr(host, "task_serving", None) or Serving(host.task_scope))
            func = task._target()
            # is_async_callable's fast path, inlined: this runs once per task.
            if (type(func) is FunctionType and func.__code__.co_flags & CO_COROUTINE) or is_async_callable(func):
                task._set_running()
                task._result = await func(*task.args, **task.kwargs)
            else:
                task._result = await _call_in_thread(task, func, host)
            if task._status is _RUNNING:  # else Task.cancel() ended it while it waited for a thread
                task._set_ended(_SUCCEEDED)
    except Exception as exc:
        await _failed(task, exc, host)
    except BaseException as exc:
        _ended_by(task, exc, host)
    finally:
        if host is not None:
            host.task_ended(task)


async def _call_in_thread(task: Task[..., Any], func: Callable[..., Any], host: TaskHost | None) -> Any:
    # A task waiting for one of its app's threads is still pending: it is running once it has a thread.
    limiter = None if host is None else host.limiter
    if limiter is None:
        task._set_running()
        return await call(func, task.args, task.kwargs)
    async with limiter:
        if task._status is not _PENDING:
            return None  # Task.cancel() ended it while it waited (a shielded wait is not interrupted)
        task._set_running()
        return await call(func, task.args, task.kwargs, _unlimited_threads())


def _unlimited_threads() -> anyio.CapacityLimiter:
    # The task already holds one of its app's tokens when its body goes to a thread: the thread itself
    # is not limited a second time. One limiter per event loop (a limiter binds to its loop).
    try:
        return _UNLIMITED_THREADS.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(math.inf)
        _UNLIMITED_THREADS.set(limiter)
        return limiter


_UNLIMITED_THREADS: RunVar[anyio.CapacityLimiter] = RunVar("fastapi_tasks_unlimited_threads")

# Enum members looked up once: a class attribute lookup on an Enum costs several times a global's.
_PENDING, _RUNNING, _SUCCEEDED = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED


def cancelled_by_us(exc: BaseException, task: Task[..., Any] | None = None) -> bool:
    """Whether `exc` is a cancellation we asked for: of `task` itself, or by a cancel scope around the current code.

    A task of the app's runtime on asyncio is an asyncio task of its own, which the runtime cancels
    directly (and says so on the handle); elsewhere tasks run in anyio cancel scopes. On asyncio a
    `CancelledError` can also come from a future that something else cancelled: that one is a
    failure of the task, not a cancellation of it.
    """
    return _is_cancellation(exc) and (
        (task is not None and task._cancel_requested) or anyio.current_effective_deadline() == -math.inf
    )


# BaseExceptionGroup is a builtin from Python 3.11 on; on 3.10 anyio raises exceptiongroup's backport,
# which the lookup by name does not need to import.
_GROUPS: tuple[type[BaseException], ...] = tuple(
    getattr(module, "BaseExceptionGroup")  # noqa: B009
    for module in (sys.modules["builtins"], sys.modules.get("exceptiongroup"))
    if module is not None and hasattr(module, "BaseExceptionGroup")
)


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return True
    # A group holding nothing but cancellations (a task's own task group, cancelled with it).
    return isinstance(exc, _GROUPS) and all(_is_cancellation(inner) for inner in getattr(exc, "exceptions", ()))


def _ended_by(task: Task[..., Any], exc: BaseException, host: TaskHost | None) -> None:
    if cancelled_by_us(exc, task):
        if not task._cancel_requested:
            # Neither Task.cancel() nor the runtime: the task group's own scope, which the server cancelled
            # while the app shut down.
            _server_stopped_waiting(host)
        if not task._status.ended:  # else Task.cancel() ended it while it waited for a thread
            task._set_ended(TaskStatus.CANCELLED)
            log(WARNING, "Background task %s was cancelled before it finished", _name(task))
        raise exc
    if _cancelled_from_outside(exc):
        # Its asyncio task itself was cancelled, by something other than the app's runtime: the event loop
        # tearing down as the server exits, say, once it stopped waiting for the app's shutdown. Not a failure.
        _server_stopped_waiting(host)
        task._set_ended(TaskStatus.CANCELLED)
        log(
            WARNING,
            "Background task %s was cancelled from outside the app before it finished (the server or the event "
            "loop shutting down cancelled it)",
            _name(task),
        )
        raise exc
    fatal = isinstance(exc, KeyboardInterrupt | SystemExit)
    _log_failure(task, exc, "Background task %s raised %s; ending it and re-raising" if fatal else _FAILED, host)
    task._set_ended(TaskStatus.FAILED)
    if fatal:
        raise exc


def _server_stopped_waiting(host: TaskHost | None) -> None:
    # A cancellation from outside during the app's shutdown: the server stopped waiting, and its cancel (or the
    # event loop's teardown) reaches the tasks and the shutdown in no set order. The shutdown's summary of the
    # unfinished tasks is logged first, by whichever sees it first (nothing, outside a shutdown).
    stopped_waiting = getattr(host, "server_stopped_waiting", None)
    if stopped_waiting is not None:
        stopped_waiting()


def _cancelled_from_outside(exc: BaseException) -> bool:
    # On asyncio, a CancelledError of a task that is being cancelled (Task.cancelling(), Python 3.11+); one
    # that came out of a future something else cancelled is a failure of the task, not its cancellation.
    if not isinstance(exc, asyncio.CancelledError):
        return False
    try:
        running = asyncio.current_task()
    except RuntimeError:  # trio
        return False
    cancelling = getattr(running, "cancelling", None)
    return cancelling is not None and cancelling() > 0


_FAILED = "Background task %s failed: %s"


def _name(task: Task[..., Any]) -> str:
    return one_line(repr(task.name), 200)


def _log_failure(task: Task[..., Any], exc: BaseException, message: str, host: TaskHost | None) -> None:
    # The exception is kept on the handle first: whatever logging does, the task's end is recorded.
    # The line names the task, never its argument values; the exception's text is escaped and capped,
    # or left out (add_tasks(app, log_exception_messages=False)) with the traceback it would be part of.
    task._exception = exc
    if getattr(host, "log_exception_messages", True):
        log(ERROR, message, _name(task), describe_exception(exc), exc_info=(type(exc), exc, exc.__traceback__))
    else:
        log(ERROR, message, _name(task), describe_exception(exc, message=False) + _raised_at(exc))


def _raised_at(exc: BaseException) -> str:
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f" (raised at {one_line(code.co_filename, 300)}:{tb.tb_lineno} in {one_line(code.co_name, 200)})"


async def _failed(task: Task[..., Any], exc: Exception, host: TaskHost | None) -> None:
    # The status stays "running" until on_error has returned: `done` / `wait()` mean "after on_error".
    try:
        _log_failure(task, exc, _FAILED, host)
        await handle_error(
            task, exc, None if host is None else host.limiter, message=getattr(host, "log_exception_messages", True)
        )
    finally:
        task._set_ended(TaskStatus.FAILED)


async def handle_error(
    task: Task[..., Any], exc: Exception, limiter: anyio.CapacityLimiter | None = None, *, message: bool = True
) -> None:
    """Call `task`'s `on_error(task, exc)` handler, if any; log and contain what the handler raises.

    Only our own cancellation, `KeyboardInterrupt` and `SystemExit` leave it (after being logged).
    `message=False` leaves the handler's exception message out of the log line.
    """
    handler = task._error_handler()
    if handler is None:
        return
    try:
        if limiter is None or is_async_callable(handler):
            await call(handler, (task, exc), {})
        else:
            async with limiter:
                await call(handler, (task, exc), {}, _unlimited_threads())
    except BaseException as handler_exc:
        if cancelled_by_us(handler_exc, task):
            raise
        log(
            ERROR,
            "The on_error handler %s of background task %s raised: %s",
            one_line(callable_name(handler), 200),
            _name(task),
            describe_exception(handler_exc, message=message),
            exc_info=(type(handler_exc), handler_exc, handler_exc.__traceback__) if message else None,
        )
        if isinstance(handler_exc, KeyboardInterrupt | SystemExit):
            raise
