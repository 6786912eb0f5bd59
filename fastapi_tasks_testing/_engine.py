"""Where the recorder's tasks run: production's own spawn, with the recorder recording and tracking them.

In "run", "record" and "spy" mode a request's tasks are scheduled, bound to FastAPI's exit stacks,
started, discarded and refused by the production `TasksScheduler` and its batches, unchanged, and
each task that runs is started by the production runtime's own `spawn`: an asyncio task (or a
task-group task on trio) of its own, with its own copy of the context, concurrent with the request
and with the other tasks, with production's cancel and shield semantics, threads and limiter.
What this module adds is the recording (a task's handle is its record) and the tracking of which
tasks of each client call are still unfinished, for the wait outside the app (`_outside.py`).

A task the recorder holds back (record mode, `hold()`) stays pending until `run_pending()` starts
it, through the same spawn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from starlette.types import Scope

from fastapi_tasks import Phase, Task, TaskConfig
from fastapi_tasks._seam import RUNTIME_KEY, TG_KEY, Runtime, Serving, callable_name, current_token

from ._records import RequestInfo, TaskRecord

if TYPE_CHECKING:
    from fastapi_tasks import TasksBatch

__all__ = ["Call", "Recorder", "RequestRuntime", "run_recorded"]


class Recorder(Protocol):
    """What the engine needs of the recorder that uses it."""

    @property
    def mode(self) -> str:
        """ "run", "record" or "spy"."""
        ...

    def _runs(self, record: TaskRecord) -> bool:
        """Whether the recorder lets `record` run now (not in record mode, not held)."""
        ...

    def _waits_for(self, record: TaskRecord) -> bool:
        """Whether the client's call waits for `record` (it was not `detach()`ed)."""
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


_GATE_LOCK = threading.Lock()


class Call:
    """One call of a test client into the app, as the wait outside the app sees it.

    It knows which of the call's tasks (and of the tasks they schedule) are unfinished, and
    whether the app's ASGI call has returned: a sync `after_route` task's body waits for that
    (see `TaskRecord._gate`).
    """

    __slots__ = ("_gate", "_idle", "returned", "unfinished")

    def __init__(self) -> None:
        self.unfinished: set[Task[..., Any]] = set()
        self._idle: anyio.Event | None = None
        self.returned = False
        # Made on first use (few calls have a sync after_route task): a thread's event costs as much as the rest.
        self._gate: threading.Event | None = None

    def mark_returned(self) -> None:
        """Note that the app's ASGI call has returned: a sync after_route body may begin."""
        self.returned = True
        if self._gate is not None:
            self._gate.set()

    def gate(self) -> threading.Event:
        """What a sync after_route body waits for in its worker thread: set once the app's ASGI call has returned."""
        gate = self._gate
        if gate is None:
            with _GATE_LOCK:  # asked for from a worker thread too (task.cancel() there looks at the target)
                gate = self._gate = self._gate or threading.Event()
            # After publishing it: mark_returned() either sets it, or has noted the return, seen here.
            if self.returned:
                gate.set()
        return gate

    def track(self, task: Task[..., Any]) -> None:
        self.unfinished.add(task)

    def ended(self, task: Task[..., Any]) -> None:
        self.unfinished.discard(task)
        if not self.unfinished and self._idle is not None:
            self._idle.set()

    async def wait(self) -> None:
        """Wait until every tracked task has ended (tasks may be tracked while it waits)."""
        while self.unfinished:
            self._idle = anyio.Event()
            await self._idle.wait()


def _gated(record: TaskRecord, call: Call) -> bool:
    # Production races a sync deferred task's worker thread against the rest of the request (the
    # request-scoped teardown, for an after_route task); the recorder makes the task lose that race.
    return record.phase is Phase.AFTER_ROUTE and not call.returned


class RequestRuntime(Runtime):
    """The app's runtime as one request's tasks see it under the recorder.

    Every attribute is the real runtime's (task group, threads, live tasks, shutdown, how it starts
    a task) but three: the config (the recorder's, or the app's own), the task scope (a scheduler
    built in one of these tasks records its tasks too), and `call`, the client call that waits for
    them. Every task it is handed is recorded; those the recorder lets run are started by the real
    runtime's own `spawn`. The real runtime's attributes are not copied but forwarded (see
    `_forward_to_the_real_runtime`): what production's code sets through this runtime, a flag of
    the shutdown say, is set on the app's runtime, and what it reads is never a stale copy.
    """

    __slots__ = ("call", "real", "recorder", "request")

    def __init__(
        self, real: Runtime, recorder: Recorder, config: TaskConfig, request: RequestInfo | None, call: Call | None
    ) -> None:
        # Not Runtime.__init__: everything but the recording is the real runtime's.
        self.real = real
        self.recorder = recorder
        self.request = request
        self.call = call
        self.config = config
        # A task's "current request" is this runtime: a scheduler it builds records its tasks too.
        self.task_scope: Scope = {"type": "fastapi_tasks.task", "state": {RUNTIME_KEY: self, TG_KEY: real.tg}}
        if hasattr(real, "task_serving"):  # what a task's runner sets in the task's context: this scope
            self.task_serving = Serving(self.task_scope)

    def hold_unbound(self, batch: TasksBatch) -> None:
        self.real.hold_unbound(batch)  # the real runtime's shutdown cancels and names it if never started

    def server_stopped_waiting(self) -> None:
        self.real.server_stopped_waiting()  # a task's runner saw the server's cancel before the shutdown did

    def new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        # Refused before a record exists, as production refuses before a handle exists.
        self.real.check_backlog(config.name or callable_name(func))
        return self.recorder._record(func, args, kwargs, config, phase, self.request)

    def new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        self.real.check_backlog(config.name or callable_name(job))
        return self.recorder._record_dispatch(job, args, kwargs, config, phase, self.request)

    def spawn(self, task: Task[..., Any]) -> None:
        if task._status.ended:
            return  # cancelled while it waited for its batch
        if isinstance(task, TaskRecord) and self.recorder.mode != "spy":
            task._runtime = self
            if not self.recorder._runs(task):
                return  # record mode, or held: pending until run_pending()
            call = self.call
            if call is not None and self.recorder._waits_for(task):
                call.track(task)
                if _gated(task, call):
                    task._gate = call
        super().spawn(task)

    def task_ended(self, task: Task[..., Any], /) -> None:
        self.real.task_ended(task)
        if self.call is not None:
            self.call.ended(task)


_OWN_SLOTS = frozenset({"config", "task_scope", "task_serving"})
"""The slots of `Runtime` that a `RequestRuntime` holds values of its own in; the others are the real runtime's."""


def _forward_to_the_real_runtime(name: str) -> property:
    def get(self: RequestRuntime) -> Any:
        return getattr(self.real, name)

    def set_(self: RequestRuntime, value: Any) -> None:
        setattr(self.real, name, value)

    return property(get, set_, doc=f"The app's runtime's `{name}`.")


for _name in Runtime.__slots__:
    if _name not in _OWN_SLOTS:
        setattr(RequestRuntime, _name, _forward_to_the_real_runtime(_name))


async def run_recorded(task: Task[..., Any]) -> None:
    """Start a pending recorded task now through its runtime's spawn (`run_pending()`), and wait until it ends.

    Scheduled outside a request, or on an event loop that has ended (`run_pending_sync()` after the
    app's lifespan), it gets a runtime of its own for the time it runs, which starts it the same way.
    """
    runtime = task._runtime
    if (
        isinstance(runtime, RequestRuntime)
        and not runtime.closed
        and runtime.token.native_token == current_token().native_token
    ):
        Runtime.spawn(runtime, task)  # production's spawn, without the recorder's "does it run" check
        await task.wait()
        return
    async with anyio.create_task_group() as tg:
        own = Runtime(tg, task.config, None, native=True)
        own.spawn(task)
        await task.wait()
