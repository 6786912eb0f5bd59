"""Where the recorder runs a request's tasks: the production scheduler, with tasks run one at a time.

In "run" and "record" mode a request's tasks are scheduled, bound to FastAPI's exit stacks,
started, discarded and refused by the production `TasksScheduler` and its batches, unchanged.
What this module substitutes is the app's runtime, and only where it starts a task: instead of
a task of its own per task, a request's tasks queue up and one worker runs them in the order
production starts them, in the app's task group, where their bodies begin when production's
would: at the request's next checkpoint. The request waits for them at the bottom of FastAPI's
request exit stack, after everything production lets run before its last tasks get going, so
that a test client's call returns once every task of the request has ended.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.lowlevel import current_token
from starlette.types import Scope

from fastapi_tasks import Phase, Task, TaskConfig
from fastapi_tasks._seam import RUNTIME_KEY, TG_KEY, Runtime, Serving, push_at_bottom, run_task, serving

from ._records import RequestInfo, TaskRecord

if TYPE_CHECKING:
    from anyio.abc import TaskGroup


class Recorder(Protocol):
    """What the engine needs of the recorder that uses it (the recorder itself, in `recorder.py`)."""

    @property
    def mode(self) -> str:
        """ "run", "record" or "spy"."""
        ...

    def _runs(self, record: TaskRecord) -> bool:
        """Whether the recorder lets `record` run now (not in record mode, not held)."""
        ...

    def _record(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        phase: Phase,
        request: RequestInfo | None,
    ) -> TaskRecord:
        """Record a scheduled task; the record is its handle."""
        ...

    def _record_dispatch(
        self,
        job: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        phase: Phase,
        request: RequestInfo | None,
    ) -> Task[..., Any]:
        """Record an enqueued job; the record is its handle."""
        ...


__all__ = ["RequestRuntime", "run_recorded", "runtime_of_the_request", "wait_at_bottom"]

ExitCallback = Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], Any]


class RequestRuntime(Runtime):
    """The app's runtime as one request's tasks see it under the recorder.

    The same task group, threads, live tasks and shutdown as the app's real runtime; what differs
    is that every task it is handed is recorded, and where tasks run: in "run" mode one at a
    time, in order, by a worker of the request's own; in "spy" mode as production runs them
    (this very class's production `spawn`). Tasks the recorder holds back (record mode,
    `hold()`) stay pending until `run_pending()` runs them.
    """

    __slots__ = ("_idle_event", "_queue", "_working", "real", "recorder", "request")

    def __init__(self, real: Runtime, recorder: Recorder, config: TaskConfig, request: RequestInfo | None) -> None:
        # Not Runtime.__init__: everything but the recording and the queue is the real runtime's.
        self.real = real
        self.recorder = recorder
        self.request = request
        self.config = config
        self.shutdown_timeout = real.shutdown_timeout
        self.token = real.token
        self.thread = real.thread
        self.limiter = real.limiter
        self._create_task = real._create_task  # spy mode starts tasks as production does
        self.live = real.live
        self.unbound = real.unbound
        self._idle = None
        # A task's "current request" is this runtime: a scheduler it builds records its tasks too.
        self.task_scope: Scope = {"type": "fastapi_tasks.task", "state": {RUNTIME_KEY: self, TG_KEY: real.tg}}
        self._queue: deque[Task[..., Any]] = deque()
        self._working = False
        self._idle_event: anyio.Event | None = None

    @property
    def tg(self) -> TaskGroup:  # type: ignore[override]
        return self.real.tg

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return self.real.closed

    def new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self.recorder._record(func, args, kwargs, config, phase, self.request)

    def new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self.recorder._record_dispatch(job, args, kwargs, config, phase, self.request)

    def spawn(self, task: Task[..., Any]) -> None:
        if self.recorder.mode == "spy":
            super().spawn(task)
            return
        if task._status.ended:
            return  # cancelled while it waited for its batch
        task._runtime = self
        if not isinstance(task, TaskRecord) or not self.recorder._runs(task):
            return  # record mode, or held: pending until run_pending()
        # One of the app's live tasks, so that its shutdown waits for (or cancels) this one too.
        self.live.add(task)
        self._queue.append(task)
        if not self._working:
            self._working = True
            token = serving.set(Serving(self.task_scope))
            try:
                self.real.tg.start_soon(self._work, name="tasks_recorder worker")
            finally:
                serving.reset(token)

    async def _work(self) -> None:
        try:
            while self._queue:
                task = self._queue.popleft()
                if task._status.ended:
                    # Cancelled while it waited in the queue (Task.cancel(), or the app's shutdown, which
                    # waits until its live tasks are gone: task_ended() tells it, a bare discard would not).
                    self.task_ended(task)
                    continue
                await _run_in_own_scope(task, self)
        finally:
            self._working = False
            for task in self._queue:  # the app's task group was cancelled under the worker
                self.task_ended(task)
            if self._idle_event is not None:
                self._idle_event.set()
                self._idle_event = None

    def task_ended(self, task: Task[..., Any], /) -> None:
        self.real.task_ended(task)

    async def wait_idle(self) -> None:
        """Wait until every task queued so far, and every task they queue, has ended."""
        while self._working:
            if self._idle_event is None:
                self._idle_event = anyio.Event()
            await self._idle_event.wait()


async def _run_in_own_scope(task: Task[..., Any], runtime: RequestRuntime) -> None:
    # A cancel scope of its own: Task.cancel() and the app's shutdown cancel this task only.
    with anyio.CancelScope() as scope:
        task._handle = scope
        await run_task(task, runtime)


def wait_at_bottom(stack: AsyncExitStack, runtime: RequestRuntime, *, shielded: bool = False) -> None:
    """Make `stack`, once unwound, wait for the request's tasks (after the batch bound at its bottom).

    `shielded`: wait even when the request is cancelled. Starlette's `TestClient` cancels a
    WebSocket session as its `websocket_connect()` block ends: without the shield, the session's
    tasks would still be running when the test goes on.
    """

    async def wait_for_tasks(
        exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not runtime._working:
            return  # nothing queued, nothing running: no cancel scope to pay for
        with anyio.CancelScope(shield=shielded):
            await runtime.wait_idle()

    push_at_bottom(stack, wait_for_tasks, is_async=True)


async def runtime_of_the_request(scope: Scope, config: TaskConfig) -> tuple[Runtime, ExitCallback]:
    """A runtime for one request of an app whose lifespan is not running (a bare `TestClient(app)`).

    Production has no such thing: run mode runs a request's tasks before the request ends, so a
    task group of the request's own can stand in for the lifespan's. It is what lets a test skip
    the lifespan; see the documented differences. Returned with the exit callback that closes it,
    to be pushed at the very bottom of the request stack, after `wait_at_bottom`.
    """
    tg = anyio.create_task_group()
    await tg.__aenter__()

    async def close(exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        # The endpoint's own exception must reach FastAPI's handlers unchanged, not wrapped in the
        # task group's exception group; only a cancellation is the task group's business.
        if exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class()):
            return bool(await tg.__aexit__(exc_type, exc, tb))
        # Never suppress: trio's task group returns True from a clean exit, which would swallow the
        # endpoint's exception (FastAPI then raises "Response not awaited").
        await tg.__aexit__(None, None, None)
        return False

    return Runtime(tg, config, None), close


async def run_recorded(task: Task[..., Any]) -> None:
    """Run a pending recorded task now, in the current task (`run_pending()`), as its runtime would."""
    runtime = task._runtime
    if not isinstance(runtime, RequestRuntime) or runtime.token.native_token != current_token().native_token:
        # Scheduled outside a request, or on an event loop that has ended (run_pending_sync() after
        # the app's lifespan): nothing of the app's runtime can be used here.
        await run_task(task)
        return
    runtime.live.add(task)
    token = serving.set(Serving(runtime.task_scope))
    try:
        await _run_in_own_scope(task, runtime)
    finally:
        serving.reset(token)
