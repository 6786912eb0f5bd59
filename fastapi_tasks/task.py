"""The `Task` handle: where a scheduled task is in its life, how it ended, and how to wait for or cancel it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from threading import get_ident
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast

import anyio

from ._callables import callable_name, generator_function, is_async_callable, is_generator_function, not_callable
from ._cancelling import cancel_asyncio_task
from ._compat import new_event, run_sync_on_loop
from ._log import logger
from ._phases import Phase, TaskStatus
from .config import DEFAULT_CONFIG, TaskConfig, TaskErrorHandler
from .errors import TaskNotFinishedError

if TYPE_CHECKING:
    from anyio.lowlevel import EventLoopToken

__all__ = ["Task"]

P = ParamSpec("P")
T = TypeVar("T")


class TaskOwner(Protocol):
    """The app's runtime, as a task it started sees it: the event loop it runs on, and its thread."""

    @property
    def thread(self) -> int:
        """The identity of the event loop's thread."""
        ...

    @property
    def token(self) -> EventLoopToken:
        """The event loop, for a `cancel()` from another thread."""
        ...


class TaskSubmitter(Protocol):
    """What `task.__start__(scheduler)` starts a task on (fastapi-tasks 0.1.0's API)."""

    def _submit(self, task: Task[..., Any], /) -> None: ...


# Enum members looked up once: on the per-task path, a class attribute lookup on an Enum costs
# several times a global's.
_PENDING, _RUNNING = TaskStatus.PENDING, TaskStatus.RUNNING


class Task(Generic[P, T]):
    """A handle on one scheduled task.

    It tells where the task is (`status`, `started`, `finished`), how it ended (`result`,
    `exception`) and can be awaited (`await task.wait()`).

    Parameters:
        func: the function to run, sync (run in a worker thread) or async (run on the event loop).
        args: its positional arguments.
        kwargs: its keyword arguments.
        config: its effective configuration.
        phase: when it is started relative to its request.

    Raises:
        TypeError: `func` is not callable.
    """

    __slots__ = (
        "__weakref__",
        "_cancel_requested",
        "_exception",
        "_finished",
        "_handle",
        "_result",
        "_runtime",
        "_started",
        "_status",
        "args",
        "config",
        "func",
        "kwargs",
        "phase",
    )

    def __init__(
        self,
        func: Callable[P, T],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        config: TaskConfig | None = None,
        *,
        phase: Phase = Phase.IMMEDIATE,
    ) -> None:
        if not callable(func):
            raise not_callable(func)
        if is_generator_function(func):
            raise generator_function(func)
        self.func = func
        self.args = args
        self.kwargs: dict[str, Any] = {} if kwargs is None else kwargs
        self.config = DEFAULT_CONFIG if config is None else config
        self.phase = phase
        self._status = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        # Events are created on first use: most tasks are never waited on, and an event costs memory.
        self._started: anyio.Event | None = None
        self._finished: anyio.Event | None = None
        self._handle: Any = None
        # Set when the runtime cancels the task's own asyncio task: that CancelledError is ours.
        self._cancel_requested = False
        # The app's runtime once the task was handed to a scheduler: cancel() from a thread goes through it.
        self._runtime: TaskOwner | None = None

    def __repr__(self) -> str:
        # Never the argument values: they can hold secrets and be megabytes long.
        return f"<Task {self.name!r} phase={self.phase.value} status={self._status.value}>"

    @property
    def name(self) -> str:
        """The configured name, else the function's qualified name."""
        return self.config.name or callable_name(self.func)

    @property
    def status(self) -> TaskStatus:
        """Where the task is: pending, running, succeeded, failed, cancelled or discarded."""
        return self._status

    @property
    def started(self) -> anyio.Event:
        """An event set when the task's body begins."""
        if self._started is None:
            self._started = _new_event(
                self._status is not TaskStatus.PENDING and self._status is not TaskStatus.DISCARDED
            )
        return self._started

    @property
    def finished(self) -> anyio.Event:
        """An event set when the task has ended: succeeded, failed (after `on_error`), cancelled or discarded."""
        if self._finished is None:
            self._finished = _new_event(self._status.ended)
        return self._finished

    @property
    def done(self) -> bool:
        """Whether the task has ended."""
        return self._status.ended

    @property
    def result(self) -> T:
        """The value the task's body returned.

        Raises:
            TaskNotFinishedError: the task has not succeeded (it is still pending or running, or it
                failed, was cancelled or discarded).
        """
        if self._status is not TaskStatus.SUCCEEDED:
            raise TaskNotFinishedError(
                f"Task {self.name!r} has no result: it is {self._status.value}. "
                "Await task.wait() first, and check task.status or task.exception."
            )
        return self._result  # type: ignore[no-any-return]

    @property
    def exception(self) -> BaseException | None:
        """The exception the task's body raised, or `None`.

        Usually an `Exception`; a contained `BaseException` (a custom subclass, `GeneratorExit`, a
        foreign `CancelledError` on asyncio) is kept here too.
        """
        return self._exception

    async def wait(self) -> None:
        """Wait until the task has ended, whatever the outcome."""
        if not self._status.ended:
            await self.finished.wait()

    def cancel(self) -> None:
        """Cancel the task, from any thread; it does nothing once the task has ended.

        A pending task (an `after_route` / `after_response` task whose batch has not started, or one
        waiting for a thread) ends `cancelled` and never starts; a running one is cancelled at its
        next checkpoint (a sync body in a thread runs to its end). A shielded task that is running
        runs on regardless.
        """
        if self._status.ended:
            return  # without going through the event loop, which may have ended with the app
        runtime = self._runtime
        if runtime is not None and get_ident() != runtime.thread:
            run_sync_on_loop(runtime.token, self._cancel)
        else:
            self._cancel()

    def _cancel(self) -> None:
        if self._status.ended:
            return
        handle = self._handle
        pending = self._status is _PENDING
        if pending:
            self._set_ended(TaskStatus.CANCELLED)
            logger.info("Background task %r was cancelled before it started", self.name)
        if handle is None:
            if not pending and not self.config.shield and is_async_callable(self._target()):
                # In its eager first stretch (add_tasks(app, eager_start=True)): its runtime has no handle on
                # it yet, and cancels it as soon as it has one, at the await that ends the stretch.
                self._cancel_requested = True  # pragma: no cover - eager_start: Python 3.12+ only
            return
        if not isinstance(handle, asyncio.Task):
            self._cancel_requested = True  # the runner tells this cancellation from the server's
            handle.cancel()  # anyio's: the task's cancel scope, inside which a shielded task runs on
        elif pending:
            # A task whose coroutine has not begun needs no cancelling: its runner sees that it ended
            # and returns at once. (Cancelled before its first step, the coroutine would never enter
            # the runner's `finally`, and the runtime would wait for it forever.)
            if inspect.getcoroutinestate(cast("Coroutine[Any, Any, Any]", handle.get_coro())) != inspect.CORO_CREATED:
                self._cancel_requested = True
                cancel_asyncio_task(handle)  # it waits for a thread
        elif not self.config.shield and is_async_callable(self._target()):
            # Running: cancelled at its next checkpoint outside anyio's shields (a shielded section, a thread it
            # waits for, a sync on_error handler in a thread). A sync body in a worker thread runs to its end, as
            # under anyio, where the wait for a thread is shielded.
            self._cancel_requested = True
            cancel_asyncio_task(handle)

    # Hooks for the testing toolkit's recorder, which runs tasks through the same runner.
    def _target(self) -> Callable[..., Any]:
        return self.func

    def _error_handler(self) -> TaskErrorHandler | None:
        return self.config.on_error

    def _set_running(self) -> None:
        self._status = _RUNNING
        if self._started is not None:
            self._started.set()

    def _set_ended(self, status: TaskStatus) -> None:
        if self._started is None and self._status is _PENDING and status is not TaskStatus.DISCARDED:
            # Ended before its body began (cancelled while pending): `started`, made later, would infer
            # from the final status that the body had begun.
            self._started = _new_event(False)
        self._status = status
        # The handle is let go of when the runner has returned (the runtime's task_ended): until then, the
        # runtime's shutdown may need it to learn that a task cancelled before its first step is gone.
        if self._finished is not None:
            self._finished.set()

    # Compatibility with fastapi-tasks 0.1.0: `task.__start__(scheduler)` starts the task.
    def __start__(self, scheduler: TaskSubmitter, /) -> None:
        scheduler._submit(self)


def _new_event(is_set: bool) -> anyio.Event:
    # Made in a worker thread (a sync endpoint or task), anyio gives an event that binds to the
    # event loop on first use.
    event = new_event()
    if is_set:
        event.set()
    return event
