"""Tasks, their configuration, and the per-request scheduler with its two deferred batches."""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from inspect import CO_ASYNC_GENERATOR, CO_GENERATOR
from threading import get_ident
from types import FunctionType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeAlias, TypeVar, cast, overload

import anyio
import anyio.from_thread
import anyio.lowlevel
from starlette.requests import ClientDisconnect
from starlette.websockets import WebSocketDisconnect

from ._context import RUNTIME_KEY, Serving, serving
from ._phases import Phase, TaskStatus
from ._runner import callable_name, current_task_scope, is_async_callable, logger, run_task, run_unshielded
from .errors import BatchClosedError, FastAPITasksError, FastAPITasksShutdownError, TaskNotFinishedError

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from starlette.types import Scope

    from ._dispatch import DispatchTask

__all__ = [
    "Task",
    "TaskConfig",
    "TaskDefinition",
    "TaskErrorHandler",
    "TasksBatch",
    "TasksScheduler",
]

P = ParamSpec("P")
T = TypeVar("T")
JobP = ParamSpec("JobP")

TaskErrorHandler: TypeAlias = Callable[["Task[..., Any]", Exception], "Awaitable[Any] | Any"]
"""`on_error(task, exc)`: called after a task raised; sync handlers run in a worker thread."""


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """How a task is run. Every field left `None` is inherited from the config it is merged over.

    Parameters:
        name: the name used in logs and test reports; defaults to the function's qualified name.
        shield: when true, the task survives the shutdown cancellation and is awaited at shutdown.
        on_error: `on_error(task, exc)`, called (sync or async) after the task raised `exc`.
        dispatch_timeout: for jobs handed to a distributed queue with `enqueue()`, the seconds a
            dispatch may take before it fails with `DispatchError`; `None` inherits (default 5 s).
    """

    name: str | None = None
    shield: bool | None = None
    on_error: TaskErrorHandler | None = None
    dispatch_timeout: float | None = None

    @property
    def shielded(self) -> bool:
        """Whether the task is shielded from the shutdown cancellation (`shield=None` means no)."""
        return bool(self.shield)

    def merge(self, other: TaskConfig | None) -> TaskConfig:
        """Return this config overridden by every field that `other` sets (is not `None`).

        `app_config.merge(task_config)` is the config a task runs with.
        """
        if other is None or (
            other.name is None and other.shield is None and other.on_error is None and other.dispatch_timeout is None
        ):
            return self
        return TaskConfig(
            name=self.name if other.name is None else other.name,
            shield=self.shield if other.shield is None else other.shield,
            on_error=self.on_error if other.on_error is None else other.on_error,
            dispatch_timeout=self.dispatch_timeout if other.dispatch_timeout is None else other.dispatch_timeout,
        )


_DEFAULT_CONFIG = TaskConfig()


def _not_callable(func: object) -> TypeError:
    return TypeError(
        f"Cannot schedule {func!r}: it is not callable. "
        "Pass the function and its arguments separately: schedule(func, *args, **kwargs), "
        "not schedule(func(*args, **kwargs))."
    )


_GENERATOR_FLAGS = CO_GENERATOR | CO_ASYNC_GENERATOR


def _is_generator_function(func: object) -> bool:
    if type(func) is FunctionType:  # fast path, asked once per task scheduled: a plain function
        return bool(func.__code__.co_flags & _GENERATOR_FLAGS)
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


def _generator_function(func: object) -> TypeError:
    return TypeError(
        f"Cannot schedule {func!r}: it is a generator function, and calling it would only create a "
        "generator without running its body. Schedule a function that returns (or an async function "
        "that awaits) instead, e.g. one that iterates over the generator."
    )


# Enum members looked up once: on the per-task path, a class attribute lookup on an Enum costs
# several times a global's.
_PENDING, _RUNNING = TaskStatus.PENDING, TaskStatus.RUNNING
_IMMEDIATE, _AFTER_ROUTE, _AFTER_RESPONSE = Phase.IMMEDIATE, Phase.AFTER_ROUTE, Phase.AFTER_RESPONSE


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
            raise _not_callable(func)
        if _is_generator_function(func):
            raise _generator_function(func)
        self.func = func
        self.args = args
        self.kwargs: dict[str, Any] = {} if kwargs is None else kwargs
        self.config = _DEFAULT_CONFIG if config is None else config
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
        self._runtime: _Runtime | None = None

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
        runtime = self._runtime
        if runtime is not None and get_ident() != runtime.thread:
            anyio.from_thread.run_sync(self._cancel, token=runtime.token)
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
            return
        if not isinstance(handle, asyncio.Task):
            handle.cancel()  # anyio's: the task's cancel scope, inside which a shielded task runs on
        elif pending:
            # A task whose coroutine has not begun needs no cancelling: its runner sees that it ended
            # and returns at once. (Cancelled before its first step, the coroutine would never enter
            # the runner's `finally`, and the runtime would wait for it forever.)
            if inspect.getcoroutinestate(cast("Coroutine[Any, Any, Any]", handle.get_coro())) != inspect.CORO_CREATED:
                self._cancel_requested = True
                handle.cancel()  # it waits for a thread
        elif not self.config.shield and is_async_callable(self._target()):
            # Running: cancelled at its next checkpoint. A sync body in a worker thread runs to its end, as
            # under anyio, where the wait for a thread is shielded: cancelling its wait would only let go of it.
            self._cancel_requested = True
            handle.cancel()

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
        # Nothing can cancel an ended task: let go of anyio's handle (its coroutine, cancel scope and event).
        self._handle = None
        if self._finished is not None:
            self._finished.set()

    # Compatibility with fastapi-tasks 0.1.0: `task.__start__(scheduler)` starts the task.
    def __start__(self, scheduler: TasksScheduler, /) -> None:
        scheduler._submit(self)


def _new_event(is_set: bool) -> anyio.Event:
    # Made in a worker thread (a sync endpoint or task), anyio gives an event that binds to the
    # event loop on first use.
    event = anyio.Event()
    if is_set:
        event.set()
    return event


# `TaskDefinition.schedule` binds these from the function it is given. With the class's own P and T,
# a definition typed `TaskDefinition[..., Any]` (what `task()` returns) took any arguments unchecked.
FuncP = ParamSpec("FuncP")
FuncT = TypeVar("FuncT")


class TaskDefinition(Generic[P, T]):
    """A configured way to schedule: what `tasks.task(name=..., shield=..., on_error=...)` returns.

    Its `schedule(func, *args, **kwargs)` is type-checked against `func`'s signature, as
    `tasks.schedule(...)` is; the class's type parameters only keep `TaskDefinition[..., Any]`
    annotations valid.
    """

    __slots__ = ("_config", "_target")

    def __init__(self, target: _Schedulable, config: TaskConfig) -> None:
        self._target = target
        self._config = config

    @overload
    def schedule(
        self, func: Callable[FuncP, Coroutine[Any, Any, FuncT]], /, *args: FuncP.args, **kwargs: FuncP.kwargs
    ) -> Task[FuncP, FuncT]: ...
    @overload
    def schedule(
        self, func: Callable[FuncP, FuncT], /, *args: FuncP.args, **kwargs: FuncP.kwargs
    ) -> Task[FuncP, FuncT]: ...
    def schedule(self, func: Callable[FuncP, Any], /, *args: FuncP.args, **kwargs: FuncP.kwargs) -> Task[FuncP, Any]:
        """Schedule `func(*args, **kwargs)` with this definition's configuration.

        Raises:
            TypeError: `func` is not callable.
        """
        return cast("Task[FuncP, Any]", self._target._add(func, args, kwargs, self._config))

    def enqueue(self, job: Callable[JobP, Any], /, *args: JobP.args, **kwargs: JobP.kwargs) -> DispatchTask:
        """Hand `job(*args, **kwargs)` to its distributed queue, with this definition's configuration.

        See `TasksScheduler.enqueue`.
        """
        return cast("DispatchTask", self._target._add(job, args, kwargs, self._config, dispatch=True))


class _Schedulable:
    """What the scheduler and its batches share: `schedule()` and `task()`."""

    __slots__ = ()

    def _base_config(self) -> TaskConfig:
        raise NotImplementedError

    def _new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return Task(func, args, kwargs, config, phase=phase)

    def _new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        from ._dispatch import new_dispatch  # imported here: only apps that dispatch pay for it

        return new_dispatch(job, args, kwargs, config, phase)

    def _add(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        dispatch: bool = False,
    ) -> Task[..., Any]:
        raise NotImplementedError

    # An async function's task holds what the coroutine returns, not the coroutine.
    @overload
    def schedule(
        self, func: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[P, T]: ...
    @overload
    def schedule(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Task[P, T]: ...
    def schedule(self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Task[P, Any]:
        """Schedule `func(*args, **kwargs)`; it inherits the app-wide configuration.

        Returns:
            The task's handle.

        Raises:
            TypeError: `func` is not callable.
        """
        return cast("Task[P, Any]", self._add(func, args, kwargs, self._base_config()))

    def enqueue(self, job: Callable[JobP, Any], /, *args: JobP.args, **kwargs: JobP.kwargs) -> DispatchTask:
        """Hand `job(*args, **kwargs)` to its distributed queue (taskiq or Celery) in this phase.

        The dispatch is a task like any other: it inherits the app-wide configuration, is
        discarded with its batch when the endpoint raises, and never changes the response. A
        dispatch that fails or outlasts `dispatch_timeout` ends with a `DispatchError`, which is
        logged and passed to `on_error`.

        Returns:
            The dispatch's handle; its `job_id` is known at once.

        Raises:
            TypeError: `job` is not a job of a supported queue (a taskiq or Celery task).
            DispatchBackendError: the queue cannot run on the current async library (taskiq under trio).
        """
        return cast("DispatchTask", self._add(job, args, kwargs, self._base_config(), dispatch=True))

    def task(
        self,
        *,
        name: str | None = None,
        shield: bool | None = None,
        on_error: TaskErrorHandler | None = None,
        dispatch_timeout: float | None = None,
    ) -> TaskDefinition[..., Any]:
        """Return a definition whose `.schedule(...)` uses this configuration merged over the app-wide one.

        Parameters:
            name: the task's name in logs and test reports.
            shield: whether the task survives the shutdown cancellation.
            on_error: `on_error(task, exc)`, called after the task raised.
            dispatch_timeout: seconds an `.enqueue(...)` dispatch may take before it fails.
        """
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {name!r}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be a callable taking (task, exc), not {on_error!r}")
        if dispatch_timeout is not None and (
            isinstance(dispatch_timeout, bool) or not isinstance(dispatch_timeout, int | float) or dispatch_timeout <= 0
        ):
            raise ValueError(f"dispatch_timeout must be a positive number of seconds or None, not {dispatch_timeout!r}")
        config = TaskConfig(name=name, shield=shield, on_error=on_error, dispatch_timeout=dispatch_timeout)
        return TaskDefinition(self, self._base_config().merge(config))


_OPEN, _STARTED, _DISCARDED = 0, 1, 2
# What a scheduler is bound to: nothing (built outside any request), a request's exit stacks, or a task's
# or the lifespan's scope (its batches are started by hand, and cancelled at shutdown if never started).
_FREE, _BOUND, _UNBOUND = 0, 1, 2


def _ended_normally(exc_type: type[BaseException] | None) -> bool:
    # A WebSocket session that ends with the client disconnecting has ended normally.
    return exc_type is None or issubclass(exc_type, WebSocketDisconnect)


def _end_phase(
    batch: TasksBatch | None, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
) -> int:
    """End a phase: start or discard its batch, if it has one; return how it ended (as the batch's state)."""
    if batch is None:
        return _STARTED if _ended_normally(exc_type) else _DISCARDED
    batch.__exit__(exc_type, exc, tb)
    return batch._state


DEFAULT_MAX_THREADS = 40
"""Worker threads an app's sync tasks and sync `on_error` handlers may use at once, by default."""


class TasksBatch(_Schedulable):
    """Tasks collected during a request and started together later (`after_route` or `after_response`).

    When the endpoint raises, the batch is discarded: its tasks never start, and their status
    says so.
    """

    __slots__ = ("__weakref__", "_config", "_owner", "_state", "phase", "scheduled")

    def __init__(self, scheduled: list[Task[..., Any]] | None = None, *, phase: Phase = Phase.AFTER_RESPONSE) -> None:
        self.scheduled: list[Task[..., Any]] = [] if scheduled is None else scheduled
        self.phase = phase
        self._owner: TasksScheduler | None = None
        # The config tasks inherit when the batch has no owner (any more, see __exit__).
        self._config = _DEFAULT_CONFIG
        self._state = _OPEN

    def __repr__(self) -> str:
        return f"<TasksBatch {self.phase.value} tasks={len(self.scheduled)}>"

    def _base_config(self) -> TaskConfig:
        return self._config if self._owner is None else self._owner.config

    def _add(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        dispatch: bool = False,
    ) -> Task[..., Any]:
        if self._state is not _OPEN:
            # Refused before a task (or a test's record of one) exists: a refused task never existed.
            raise BatchClosedError(
                f"Cannot add {config.name or callable_name(func)!r} to the {self.phase.value} batch: "
                f"it was already {self._closed_as()}. Schedule it with tasks.schedule(...) to start it now."
            )
        owner = self if self._owner is None else self._owner
        if dispatch:
            task = owner._new_dispatch(func, args, kwargs, config, self.phase)
        else:
            task = owner._new_task(func, args, kwargs, config, self.phase)
        self.scheduled.append(task)
        return task

    def __start__(self, scheduler: TasksScheduler, /) -> None:
        """Start every collected task on `scheduler` (what the `Tasks` dependency does for you).

        Tasks cancelled while they waited (`task.cancel()`) stay cancelled. After the app shut
        down, the tasks end `cancelled` and are logged at WARNING by name.

        Raises:
            BatchClosedError: the batch was already started or discarded.
        """
        if self._state is not _OPEN:
            raise BatchClosedError(
                f"The {self.phase.value} batch was already {self._closed_as()}: its tasks start once."
            )
        self._state = _STARTED
        scheduler._start_tasks(self.scheduled, self.phase)

    def _closed_as(self) -> str:
        return "started" if self._state is _STARTED else "discarded"

    def _discard(self, reason: BaseException | None, why: str | None = None) -> None:
        self._state = _DISCARDED
        if not self.scheduled:
            return
        discarded = [task for task in self.scheduled if not task._status.ended]
        for task in discarded:
            task._set_ended(TaskStatus.DISCARDED)
        if not discarded:
            return
        if why is None:
            why = f"the endpoint or one of its dependencies raised {type(reason).__name__}"
        logger.info(
            "Discarded %d %s task(s) because %s: %s",
            len(discarded),
            self.phase.value,
            why,
            ", ".join(repr(task.name) for task in discarded),
        )

    # An exit callback at the bottom of FastAPI's per-request exit stacks: it runs when the endpoint
    # returned and its function-scoped dependencies were torn down (after_route), or when the response
    # was sent and the request-scoped ones were torn down (after_response).
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        owner = self._owner
        if owner is not None and self._state is _OPEN:
            if _ended_normally(exc_type):
                owner._start_batch(self)
            elif self.phase is _AFTER_RESPONSE and owner._route_started():
                self._discard(exc, _after_the_endpoint(exc))
            elif isinstance(exc, anyio.get_cancelled_exc_class()):
                self._discard(exc, f"the request was cancelled before the endpoint returned ({type(exc).__name__})")
            else:
                self._discard(exc)
        if type(owner) is TasksScheduler:
            # The phase is over: from now on the batch only refuses tasks, which takes its scheduler's
            # config and nothing else of a plain TasksScheduler. Letting go of the scheduler breaks the
            # scheduler <-> batch reference cycle, so that when the request ends its scheduler, batches and
            # tasks are freed at once by reference counting. Left to the cyclic garbage collector (which,
            # with deferred tasks, they made run about twice as often) they cost microseconds per request.
            self._config = owner.config
            self._owner = None


def _after_the_endpoint(exc: BaseException | None) -> str:
    # The endpoint returned (its after_route batch started): what failed came after it.
    name = type(exc).__name__
    if isinstance(exc, OSError | ClientDisconnect | anyio.get_cancelled_exc_class()):
        return f"the client went away before the response was sent ({name})"
    return f"sending the response or tearing down a request-scoped dependency raised {name} after the endpoint returned"


class _Runtime:
    """The app-wide state behind every request's scheduler: task group, config, threads, live tasks, shutdown."""

    __slots__ = (
        "_create_task",
        "_idle",
        "closed",
        "config",
        "limiter",
        "live",
        "shutdown_timeout",
        "task_scope",
        "tg",
        "thread",
        "token",
        "unbound",
    )

    def __init__(
        self,
        tg: TaskGroup,
        config: TaskConfig,
        shutdown_timeout: float | None,
        max_threads: int = DEFAULT_MAX_THREADS,
        *,
        native: bool = False,
        eager_start: bool = False,
    ) -> None:
        self.tg = tg
        self.config = config
        self.shutdown_timeout = shutdown_timeout
        self.token = anyio.lowlevel.current_token()
        self.thread = get_ident()
        # Sync task bodies and handlers get threads of their own: they never starve FastAPI's sync
        # endpoints and dependencies, which use anyio's default limiter.
        self.limiter = anyio.CapacityLimiter(max_threads)
        self.live: set[Task[..., Any]] = set()
        # The batches of schedulers built outside a request (in a task, in the lifespan), which their
        # code starts by hand: those it never started are cancelled and named at shutdown.
        self.unbound: weakref.WeakSet[TasksBatch] = weakref.WeakSet()
        self.closed = False
        self._idle: anyio.Event | None = None
        # What a task sees as its "current request": none, only the app's runtime. A task copies the
        # context it was started from, and a scheduler built inside it must not bind to the exit
        # stacks of that request, which close while the task runs (its batches would never start).
        self.task_scope: Scope = {"type": "fastapi_tasks.task", "state": {RUNTIME_KEY: self}}
        # On asyncio, the app's own runtime (`native`) starts each task as an asyncio task of its own
        # and supervises it itself: anyio's task group costs several times as much per task, in time
        # and memory. On trio, and for a task group the app passed in, tasks go through anyio.
        self._create_task = _native_task_factory(eager_start) if native else None

    def new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        """The handle of a task scheduled by one of this app's schedulers (the testing toolkit records it)."""
        return Task(func, args, kwargs, config, phase=phase)

    def new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        """The handle of a job enqueued by one of this app's schedulers."""
        from ._dispatch import new_dispatch  # imported here: only apps that dispatch pay for it

        return new_dispatch(job, args, kwargs, config, phase)

    def submit(self, task: Task[..., Any]) -> None:
        """Start `task` now, from any thread.

        Raises:
            FastAPITasksShutdownError: the app has shut down.
        """
        if get_ident() != self.thread:
            # A sync endpoint or task runs in a worker thread; task groups are not thread-safe.
            anyio.from_thread.run_sync(self.submit, task, token=self.token)
            return
        if self.closed:
            raise _shutdown_error(task.name)
        self.spawn(task)

    def start_tasks(self, tasks: list[Task[..., Any]], phase: Phase) -> None:
        """Start a batch's tasks; after shutdown, cancel them (logged at WARNING), never raise."""
        if get_ident() != self.thread:
            anyio.from_thread.run_sync(self.start_tasks, tasks, phase, token=self.token)
            return
        if not self.closed:
            for task in tasks:
                self.spawn(task)
            return
        cancelled = [task for task in tasks if not task._status.ended]
        for task in cancelled:
            task._set_ended(TaskStatus.CANCELLED)
        if cancelled:
            logger.warning(
                "Cancelled %d %s task(s) of a request that ended after the app shut down: %s",
                len(cancelled),
                phase.value,
                ", ".join(repr(task.name) for task in cancelled),
            )

    def spawn(self, task: Task[..., Any]) -> None:
        if task._status is not _PENDING:
            return  # cancelled while it waited for its batch
        self.live.add(task)
        task._runtime = self
        # The runner itself is the task's coroutine (a wrapper coroutine would cost memory per pending
        # task), and the name is one that already exists: str(task) would build a string per task.
        name = task.config.name or callable_name(task.func)
        handle: Any
        if self._create_task is not None:
            # Nothing but the runtime cancels this task, and never a running shielded one. The task copies
            # the request's context as it is: a scheduler built in the task finds out that it is in a task
            # from the task's runner (see `current_task_scope`), which costs nothing per task, where setting
            # the "current request" around each start cost a context variable's set and reset, and the
            # objects they allocate.
            handle = self._create_task(run_unshielded(task, self), name=name)
        else:
            # The task is created in a context whose "current request" is this runtime's task scope: neither
            # the task nor anyio's done callback (which keeps the context it was added in) holds on to the
            # request.
            token = serving.set(Serving(self.task_scope))
            try:
                runner = run_task if task.config.shield else run_unshielded
                handle = self.tg.create_task(runner(task, self), name=name)
            finally:
                serving.reset(token)
        status = task._status
        if status is _PENDING or status is _RUNNING:  # an eagerly started task may have run to its end already
            task._handle = handle

    def task_ended(self, task: Task[..., Any], /) -> None:
        self.live.discard(task)
        if not self.live and self._idle is not None:
            self._idle.set()

    async def _wait_idle(self) -> None:
        while self.live:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def shutdown(self) -> None:
        """End every task before the app's own lifespans tear down.

        Running tasks get the grace period; then the unshielded ones are cancelled, and shielded
        ones (and sync bodies in threads, which cannot be interrupted) are waited for until they end.
        """
        if self.closed:
            await self._wait_idle()
            return
        if self.shutdown_timeout and self.live:
            with anyio.move_on_after(self.shutdown_timeout):
                await self._wait_idle()
        self.closed = True
        _cancel_unstarted(self)
        # A task cancelled before its coroutine first ran (trio may not have stepped it yet) has ended,
        # though it stays live until its runner's `finally`: it is not one to name as unfinished.
        unfinished = sorted((task for task in self.live if not task._status.ended), key=lambda task: task.name)
        if unfinished:
            logger.warning(
                "Shutting down with %d background task(s) unfinished: %s. Cancelling the unshielded ones; "
                "waiting without a time limit for the shielded ones and for sync ones in a thread, which "
                "cannot be interrupted",
                len(unfinished),
                ", ".join(_describe_unfinished(task) for task in unfinished),
            )
            for task in unfinished:
                if not task.config.shield:
                    task._cancel()
        await self._wait_idle()


def _native_task_factory(eager_start: bool) -> Callable[..., asyncio.Task[Any]] | None:
    """How the app's runtime starts a task on the running event loop: `None` when it is not asyncio's.

    Raises:
        FastAPITasksError: `eager_start` was asked for, but the event loop is not asyncio's.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio
        loop = None
    if eager_start:
        if loop is None:
            raise FastAPITasksError(
                "add_tasks(app, eager_start=True) needs the asyncio event loop, and the app runs on another one "
                "(trio). Leave eager_start off there."
            )
        return functools.partial(asyncio.Task, loop=loop, eager_start=True)  # type: ignore[call-arg]  # 3.12+
    return None if loop is None else loop.create_task


def _cancel_unstarted(runtime: _Runtime) -> None:
    for batch in list(runtime.unbound):
        if batch._state is not _OPEN:
            continue
        batch._state = _DISCARDED
        never = [task for task in batch.scheduled if not task._status.ended]
        for task in never:
            task._set_ended(TaskStatus.CANCELLED)
        if never:
            logger.warning(
                "Cancelled %d %s task(s) whose batch was never started: %s. A TasksScheduler built outside "
                "a request (in a task, or in the lifespan) starts its batches by hand: batch.__start__(scheduler)",
                len(never),
                batch.phase.value,
                ", ".join(repr(task.name) for task in never),
            )


def _shutdown_error(name: str) -> FastAPITasksShutdownError:
    return FastAPITasksShutdownError(f"Cannot start {name!r}: the app is shutting down and its tasks were cancelled.")


def _describe_unfinished(task: Task[..., Any]) -> str:
    notes = []
    if task.config.shield:
        notes.append("shielded")
    if task._status is _PENDING:
        notes.append("not started")
    elif not is_async_callable(task._target()):
        notes.append("sync, in a thread")
    return f"{task.name!r} ({', '.join(notes)})" if notes else repr(task.name)


def push_at_bottom(stack: AsyncExitStack, callback: Callable[..., Any], *, is_async: bool = False) -> None:
    """Push an exit callback at the bottom of `stack`: it runs after everything already on it.

    A batch's exit there runs after every teardown of the dependencies on the stack, whatever the
    order in which the endpoint declared them: a teardown that raises discards the batch, whether its
    dependency was declared before or after `Tasks`. The testing toolkit waits for tasks there too.
    """
    callbacks = getattr(stack, "_exit_callbacks", None)
    if isinstance(callbacks, deque):
        callbacks.appendleft((not is_async, callback))
    elif is_async:  # pragma: no cover - contextlib has kept its callbacks in this deque since Python 3.7
        stack.push_async_exit(callback)
    else:  # pragma: no cover - likewise
        stack.push(callback)


class TasksScheduler(_Schedulable):
    """Schedules background tasks for one request; what the `Tasks` dependency gives an endpoint.

    `schedule()` starts a task at once; `after_route` and `after_response` collect tasks started
    when the endpoint returns and after the response was sent.

    Parameters:
        tg: the task group the tasks run in (`request.state.fastapi_tasks_tg`).
        config: the configuration every task inherits; defaults to the app-wide one.

    Raises:
        TypeError: no task group was given and none can be found.
        FastAPITasksError: created while serving a request whose scope holds no FastAPI exit stacks
            (a middleware passed a copy of the scope on): its batches could never start.
    """

    __slots__ = ("_kind", "_response", "_response_state", "_route", "_route_state", "_runtime", "config")

    def __init__(
        self,
        tg: TaskGroup | None = None,
        config: TaskConfig | None = None,
        *,
        _runtime: Any = None,
        _scope: Scope | None = None,
    ) -> None:
        scope = _current_scope() if _scope is None else _scope
        if _runtime is None:
            _runtime = _find_runtime(scope, tg, config)
        self._runtime = _runtime
        self.config: TaskConfig = _runtime.config if config is None else _runtime.config.merge(config)
        # The batches are made when first used: most requests never defer a task.
        self._route: TasksBatch | None = None
        self._response: TasksBatch | None = None
        # How each phase ended, for a batch first used after its phase was over.
        self._route_state = self._response_state = _OPEN
        self._kind = _FREE
        if scope is not None:
            self._bind(scope)

    def _init_batches(self) -> None:
        # For subclasses that are no request's scheduler (the testing toolkit's recorder): both batches now.
        self._kind = _FREE
        self._route_state = self._response_state = _OPEN
        self._route = self._new_batch(_AFTER_ROUTE)
        self._response = self._new_batch(_AFTER_RESPONSE)

    @property
    def after_route(self) -> TasksBatch:
        """The tasks started once the endpoint has returned and its function-scoped dependencies are torn down."""
        batch = self._route
        if batch is None:
            batch = self._route = self._new_batch(_AFTER_ROUTE)
        return batch

    @property
    def after_response(self) -> TasksBatch:
        """The tasks started once the response was sent and the request-scoped dependencies are torn down."""
        batch = self._response
        if batch is None:
            batch = self._response = self._new_batch(_AFTER_RESPONSE)
        return batch

    def _new_batch(self, phase: Phase) -> TasksBatch:
        batch = TasksBatch(phase=phase)
        state = self._route_state if phase is _AFTER_ROUTE else self._response_state
        if state is not _OPEN:
            # First used once its phase was over: it refuses tasks, as the batch would have had it existed.
            batch._state = state
            batch._config = self.config
            return batch
        batch._owner = self
        if self._kind is _UNBOUND:
            self._runtime.unbound.add(batch)
        return batch

    def _bind(self, scope: Scope) -> None:
        # FastAPI closes the function stack when the endpoint returns and the request stack once the
        # response is sent; an exit callback on each starts the phase's batch, or discards it if the
        # request failed. Exit callbacks cost far less per request than a generator dependency, and
        # these cost little more than a call while no task was deferred: the batches are made on first use.
        if scope["type"] != "http" and scope["type"] != "websocket":
            # A task's or the lifespan's: batches are started by hand, and cancelled at shutdown if not.
            self._kind = _UNBOUND
            return
        function_stack = scope.get("fastapi_function_astack")
        request_stack = scope.get("fastapi_inner_astack")
        if function_stack is None or request_stack is None:
            raise FastAPITasksError(
                f"Cannot bind a TasksScheduler to {scope['type']} {scope.get('path', '')!r}: the scope has no "
                "FastAPI exit stacks, so its after_route and after_response tasks could never start. "
                "A middleware between add_tasks() and the endpoint passed a copy of the scope on: take the "
                "scheduler from the Tasks dependency, which sees the endpoint's own scope."
            )
        self._kind = _BOUND
        push_at_bottom(function_stack, self._route_exit)
        push_at_bottom(request_stack, self._response_exit)

    def _route_started(self) -> bool:
        batch = self._route
        return (self._route_state if batch is None else batch._state) is _STARTED

    # The exit callbacks on FastAPI's two stacks: each ends its phase's batch, if there is one, and notes
    # how the phase ended, for a batch first used after it.
    def _route_exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._route_state = _end_phase(self._route, exc_type, exc, tb)

    def _response_exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._response_state = _end_phase(self._response, exc_type, exc, tb)

    def __repr__(self) -> str:
        route = 0 if self._route is None else len(self._route.scheduled)
        response = 0 if self._response is None else len(self._response.scheduled)
        return f"<{type(self).__name__} after_route={route} after_response={response}>"

    @property
    def tg(self) -> TaskGroup:
        """The task group the tasks run in."""
        return self._runtime.tg  # type: ignore[no-any-return]

    def _base_config(self) -> TaskConfig:
        return self.config

    def _new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._runtime.new_task(func, args, kwargs, config, phase)  # type: ignore[no-any-return]

    def _new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._runtime.new_dispatch(job, args, kwargs, config, phase)  # type: ignore[no-any-return]

    def _add(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        dispatch: bool = False,
    ) -> Task[..., Any]:
        runtime = self._runtime
        if runtime is not None and runtime.closed:
            # Refused before a task (or a test's record of one) exists, like a schedule into a closed batch.
            raise _shutdown_error(config.name or callable_name(func))
        if dispatch:
            task = self._new_dispatch(func, args, kwargs, config, _IMMEDIATE)
        else:
            task = self._new_task(func, args, kwargs, config, _IMMEDIATE)
        self._submit(task)
        return task

    def _submit(self, task: Task[..., Any]) -> None:
        self._runtime.submit(task)

    def _start_tasks(self, tasks: list[Task[..., Any]], phase: Phase) -> None:
        self._runtime.start_tasks(tasks, phase)

    def _start_batch(self, batch: TasksBatch) -> None:
        batch.__start__(self)


def _current_scope() -> Scope | None:
    """What a scheduler built here binds to: the request being served, or the scope of the task running here."""
    holder = serving.get()
    if holder is None:
        return None
    scope = holder.scope
    if scope is None or scope["type"] == "http" or scope["type"] == "websocket":
        # A task started on the asyncio-native path keeps the context of its request (which may have
        # ended, and let go of its scope): is this one?
        return current_task_scope() or scope
    return scope


def _find_runtime(scope: Scope | None, tg: TaskGroup | None, config: TaskConfig | None) -> _Runtime:
    # Direct use, `TasksScheduler(request.state.fastapi_tasks_tg)`: share the app's runtime so the
    # app-wide config, the threads and the shutdown bookkeeping apply; a foreign task group gets its own.
    runtime = None if scope is None else scope.get("state", {}).get(RUNTIME_KEY)
    if isinstance(runtime, _Runtime) and (tg is None or runtime.tg is tg):
        return runtime
    if tg is None:
        raise TypeError("TasksScheduler needs a task group: TasksScheduler(request.state.fastapi_tasks_tg)")
    return _Runtime(tg, _DEFAULT_CONFIG, None)
