"""The app's runtime: how an app spawns and supervises its tasks, the threads they get, and its shutdown.

`add_tasks(app)` makes one per app, for the lifespan; every request's scheduler hands it its tasks.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._callables import callable_name, is_async_callable
from ._context import RUNTIME_KEY, Serving, serving
from ._log import logger
from ._phases import Phase, TaskStatus
from ._runner import run_task, run_unshielded
from .batch import DISCARDED, OPEN, TasksBatch
from .config import TaskConfig
from .errors import FastAPITasksError, FastAPITasksShutdownError
from .task import Task

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from starlette.types import Scope

__all__ = ["DEFAULT_MAX_THREADS", "Runtime", "shutdown_error"]

# Enum members looked up once: on the per-task path, a class attribute lookup on an Enum costs
# several times a global's.
_PENDING, _RUNNING = TaskStatus.PENDING, TaskStatus.RUNNING

DEFAULT_MAX_THREADS = 40
"""Worker threads an app's sync tasks and sync `on_error` handlers may use at once, by default."""


class Runtime:
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
        from .dispatchers._registry import new_dispatch  # imported here: only apps that dispatch pay for it

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
            raise shutdown_error(task.name)
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


def _cancel_unstarted(runtime: Runtime) -> None:
    for batch in list(runtime.unbound):
        if batch._state is not OPEN:
            continue
        batch._state = DISCARDED
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


def shutdown_error(name: str) -> FastAPITasksShutdownError:
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
