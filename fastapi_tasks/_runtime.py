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

from ._callables import callable_name, is_async_callable
from ._cancelling import in_shielded_section
from ._compat import NATIVE_TASKS, current_token, run_sync_on_loop, task_group_starter
from ._context import RUNTIME_KEY, Serving
from ._log import listing, logger, name_list
from ._phases import Phase, TaskStatus
from ._runner import run_task, run_unshielded
from ._starting import native_task_factory
from .batch import DISCARDED, OPEN, TasksBatch
from .config import TaskConfig
from .errors import BacklogFullError, FastAPITasksShutdownError
from .task import Task

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from starlette.types import Scope

__all__ = ["DEFAULT_MAX_THREADS", "Runtime", "runtime_of", "shutdown_error"]

# Enum members looked up once: on the per-task path, a class attribute lookup on an Enum costs
# several times a global's.
_PENDING, _RUNNING = TaskStatus.PENDING, TaskStatus.RUNNING

DEFAULT_MAX_THREADS = 40
"""Worker threads an app's sync tasks and sync `on_error` handlers may use at once, by default."""

_UNBOUND_PRUNE = 64
"""How many batches of schedulers built outside a request a runtime holds before it lets go of the started ones."""

# The app's runtime of each app's task group: `TasksScheduler(request.state.fastapi_tasks_tg)` shares it
# wherever it is built (the lifespan, a helper task, a thread of the app's own).
_BY_TASK_GROUP: weakref.WeakKeyDictionary[Any, Runtime] = weakref.WeakKeyDictionary()


def runtime_of(tg: TaskGroup) -> Runtime | None:
    """The app's runtime whose task group is `tg`, if `tg` is the task group of an app's lifespan."""
    try:
        return _BY_TASK_GROUP.get(tg)
    except TypeError:  # pragma: no cover - a task group that cannot be weakly referenced
        return None


class Runtime:
    """The app-wide state behind every request's scheduler: task group, config, threads, live tasks, shutdown."""

    __slots__ = (
        "_create_task",
        "_idle",
        "_shutting_down",
        "_start_in_group",
        "_unbound_limit",
        "closed",
        "config",
        "limiter",
        "live",
        "log_exception_messages",
        "max_pending",
        "shields",
        "shutdown_timeout",
        "stopped_waiting",
        "task_scope",
        "task_serving",
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
        max_pending: int | None = None,
        log_exception_messages: bool = True,
    ) -> None:
        self.tg = tg
        self.config = config
        self.shutdown_timeout = shutdown_timeout
        self.token = current_token()
        self.thread = get_ident()
        # Sync task bodies and handlers get threads of their own: they never starve FastAPI's sync
        # endpoints and dependencies, which use anyio's default limiter.
        self.limiter = anyio.CapacityLimiter(max_threads)
        self.live: set[Task[..., Any]] = set()
        # The shielded cancel scopes of the running shielded tasks started through the task group (`run_task`).
        self.shields: dict[Task[..., Any], anyio.CancelScope] = {}
        # The batches of schedulers built outside a request (in a task, in the lifespan), which their
        # code starts by hand: those it never started are cancelled and named at shutdown. Held strongly
        # (`hold_unbound`): a batch whose scheduler the code dropped must still be found, whenever the
        # garbage collector happens to run; the started and discarded ones are let go as the set grows.
        self.unbound: set[TasksBatch] = set()
        self._unbound_limit = _UNBOUND_PRUNE
        self.closed = False
        self._idle: anyio.Event | None = None
        # What a task sees as its "current request": none, only the app's runtime. A task copies the
        # context it was started from, and a scheduler built inside it must not bind to the exit
        # stacks of that request, which close while the task runs (its batches would never start).
        self.task_scope: Scope = {"type": "fastapi_tasks.task", "state": {RUNTIME_KEY: self}}
        # What each task's runner says, in the task's own context, that the task serves (one box for all).
        self.task_serving = Serving(self.task_scope)
        # At most this many tasks pending or running (`None`: no bound): past it, schedule() refuses.
        self.max_pending = max_pending
        # Whether failure log lines quote the exception's text (and carry its traceback).
        self.log_exception_messages = log_exception_messages
        # Set when the server stopped waiting for the shutdown (it cancelled the lifespan).
        self.stopped_waiting = False
        self._shutting_down = False
        # On asyncio, the app's own runtime (`native`) starts each task as an asyncio task of its own
        # and supervises it itself: anyio's task group costs several times as much per task, in time
        # and memory. On trio, and for a task group the app passed in, tasks go through anyio.
        # (On an anyio too old for `_cancelling.py`, through anyio too: see `_compat.NATIVE_TASKS`.)
        self._create_task = native_task_factory(eager_start) if native and NATIVE_TASKS else None
        self._start_in_group = task_group_starter(tg)
        if native:
            _BY_TASK_GROUP[tg] = self

    def hold_unbound(self, batch: TasksBatch) -> None:
        """Keep `batch`, of a scheduler built outside a request, until it is started or the app shuts down."""
        unbound = self.unbound
        unbound.add(batch)
        if len(unbound) >= self._unbound_limit:
            # Amortized: each batch is looked at a bounded number of times however many are made. In place:
            # the set is the one the shutdown reads, whoever else holds it.
            unbound.difference_update([held for held in unbound if held._state is not OPEN])
            self._unbound_limit = max(_UNBOUND_PRUNE, 2 * len(unbound))

    def new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        """The handle of a task scheduled by one of this app's schedulers (the testing toolkit records it).

        Raises:
            BacklogFullError: `max_pending` tasks are pending or running already.
        """
        if self.max_pending is not None:
            self.check_backlog(config.name or callable_name(func))
        return Task(func, args, kwargs, config, phase=phase)

    def new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        """The handle of a job enqueued by one of this app's schedulers.

        Raises:
            BacklogFullError: `max_pending` tasks are pending or running already.
        """
        if self.max_pending is not None:
            self.check_backlog(config.name or callable_name(job))
        from .dispatchers._registry import new_dispatch  # imported here: only apps that dispatch pay for it

        return new_dispatch(job, args, kwargs, config, phase)

    def check_backlog(self, name: str) -> None:
        """Refuse the task `name` if `max_pending` tasks are pending or running already.

        Raises:
            BacklogFullError: they are.
        """
        if self.max_pending is not None and len(self.live) >= self.max_pending:
            raise BacklogFullError(
                f"Cannot schedule {name!r}: the app already has {len(self.live):,} background tasks pending or "
                f"running, its limit (add_tasks(app, max_pending={self.max_pending})). Answer 503 Service "
                "Unavailable: handle BacklogFullError with an exception handler, and let the client retry later."
            )

    def submit(self, task: Task[..., Any]) -> None:
        """Start `task` now, from any thread.

        Raises:
            FastAPITasksShutdownError: the app has shut down.
        """
        if get_ident() != self.thread:
            # A sync endpoint or task runs in a worker thread; task groups are not thread-safe.
            run_sync_on_loop(self.token, self.submit, task)
            return
        if self.closed:
            raise shutdown_error(task.name)
        self.spawn(task)

    def start_tasks(self, tasks: list[Task[..., Any]], phase: Phase) -> None:
        """Start a batch's tasks; after shutdown, cancel them (logged at WARNING), never raise."""
        if get_ident() != self.thread:
            run_sync_on_loop(self.token, self.start_tasks, tasks, phase)
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
                name_list(task.name for task in cancelled),
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
            # the request's context as it is: its runner says, in the task's own copy, that it serves this
            # runtime (see `run_unshielded`); setting that around each start, in the caller's context, cost a
            # context variable's set and reset per task, and the objects they allocate.
            handle = self._create_task(run_unshielded(task, self), name=name)
        else:
            runner = run_task if task.config.shield else run_unshielded
            handle = self._start_in_group(runner(task, self), name=name)
        status = task._status
        # Ended already: only an eagerly started task (Python 3.12+), hence the pragma.
        if status is _PENDING or status is _RUNNING:  # pragma: no branch - an eager task may have run to its end
            task._handle = handle
            if task._cancel_requested and status is _RUNNING:  # pragma: no cover - eager_start: Python 3.12+
                task._cancel_requested = False
                task._cancel()  # cancelled in its eager first stretch, before it had a handle

    def task_ended(self, task: Task[..., Any], /) -> None:
        """Called last by the runner of each task, however it ended; idempotent."""
        # Nothing can cancel an ended task: let go of its handle (anyio's holds a coroutine, cancel scope, event).
        task._handle = None
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
        If the server stops waiting first (it cancels the lifespan), the unfinished tasks are named
        at WARNING, the unshielded ones cancelled, and the shutdown returns at once.
        """
        if self.closed:
            if not self.stopped_waiting:
                await self._wait_idle()
            return
        self._watch_ends()
        self._shutting_down = True
        try:
            if self.shutdown_timeout and self.live:
                with anyio.move_on_after(self.shutdown_timeout):
                    await self._wait_idle()
            self._close(_SHUTTING_DOWN)
            await self._wait_idle()
        except anyio.get_cancelled_exc_class():
            self.server_stopped_waiting()
            raise

    def server_stopped_waiting(self) -> None:
        """The server cancelled the shutdown: name the unfinished tasks, saying so, and cancel the unshielded ones.

        Called by the shutdown, or first by the runner of a task the same cancellation reached (on trio, and
        wherever tasks run in the app's task group, the server's cancel reaches the tasks and the shutdown in
        the same step, in no set order): the summary comes before any task's own line. Once only.
        """
        if self.stopped_waiting or not self._shutting_down:
            return
        self.stopped_waiting = True
        self._close(_STOPPED_WAITING.format(grace=_seconds(self.shutdown_timeout)))

    def _close(self, summary: str) -> None:
        # Refuse new tasks, cancel the never-started batches, name the unfinished tasks and cancel the
        # unshielded ones. A second call (the server stopped waiting after the grace period) names those
        # still unfinished, saying so.
        self.closed = True
        _cancel_unstarted(self)
        self._watch_ends()
        # A task cancelled before its coroutine first ran (trio may not have stepped it yet) has ended,
        # though it stays live until its runner's `finally`: it is not one to name as unfinished.
        unfinished = sorted((task for task in self.live if not task._status.ended), key=lambda task: task.name)
        if not unfinished:
            return
        logger.warning(summary, len(unfinished), listing(_describe_unfinished(task) for task in unfinished))
        for task in unfinished:
            if not task.config.shield:
                task._cancel()
            elif self.stopped_waiting:
                # The server is exiting: that cancellation is the shutdown's. On asyncio the event loop cancels
                # the app's own tasks as it closes; a task in the task group (trio) would keep the lifespan, and
                # the process, waiting for ever: its shield is cancelled now.
                task._cancel_requested = True
                shield = self.shields.get(task)
                if shield is not None:
                    shield.cancel()

    def _watch_ends(self) -> None:
        # On asyncio, a task cancelled by something else before its first step (the event loop tearing down
        # after a task raised SystemExit, say) never runs its runner's `finally`: its asyncio task's done
        # callback, which always runs, ends it instead (idempotent with the runner's task_ended). Attached at
        # shutdown only, to the tasks still live: none of the other tasks pays for it.
        for task in list(self.live):
            handle = task._handle
            if isinstance(handle, asyncio.Task):
                handle.add_done_callback(functools.partial(self._asyncio_task_done, task))

    def _asyncio_task_done(self, task: Task[..., Any], handle: asyncio.Task[Any]) -> None:
        if task not in self.live:
            return  # its runner ended it
        if not task._status.ended:
            task._set_ended(TaskStatus.CANCELLED)
            logger.warning("Background task %r was cancelled before it started", task.name)
        self.task_ended(task)


_SHUTTING_DOWN = (
    "Shutting down with %d background task(s) unfinished: %s. Cancelling the unshielded ones; waiting without "
    "a time limit for the shielded ones and for sync ones in a thread, which cannot be interrupted"
)
_STOPPED_WAITING = (
    "The server stopped waiting for the app's shutdown (grace period: {grace}) with %d background task(s) "
    "unfinished: %s. Cancelling them: the unshielded ones now, the shielded ones as the server exits. Give the server "
    "a shutdown timeout longer than add_tasks(app, shutdown_timeout=...): see docs/shutdown.md"
)


def _seconds(timeout: float | None) -> str:
    return "none" if not timeout else f"shutdown_timeout={timeout:g} s"


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
                name_list(task.name for task in never),
            )


def shutdown_error(name: str) -> FastAPITasksShutdownError:
    return FastAPITasksShutdownError(f"Cannot start {name!r}: the app is shutting down and its tasks were cancelled.")


def _describe_unfinished(task: Task[..., Any]) -> str:
    notes = []
    if task.config.shield:
        notes.append("shielded")
    if task._status is _PENDING:
        notes.append("not started")
    elif task._exception is not None:
        handler = task._error_handler()
        sync = handler is not None and not is_async_callable(handler)
        notes.append("in its on_error handler, sync, in a thread" if sync else "in its on_error handler")
    elif not is_async_callable(task._target()):
        notes.append("sync, in a thread")
    elif in_shielded_section(task._handle):
        notes.append("in a shielded section or waiting for a thread")
    name = repr(task.name)
    return f"{name} ({', '.join(notes)})" if notes else name
