"""Recording FastAPI's own `BackgroundTasks`: the tasks endpoints add with `background_tasks.add_task()`.

FastAPI creates a request's `BackgroundTasks` while it solves the endpoint's dependencies, in
`fastapi.dependencies.utils.solve_dependencies`, which looks the class up in its module's globals
(FastAPI 0.109 to 0.165 at least). Starlette calls it once the response has been sent: one task
after another, the first exception stopping the rest.

While a recorder is installed, that module global is `RecordingBackgroundTasks`: a subclass that
records each task when `add_task()` is called and, when Starlette calls it, runs the recorded
tasks as the recorder's mode says. For a request to an app without a recorder it behaves exactly
as FastAPI's class. FastAPI's class is put back when the last recorder is uninstalled.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import FrameType, TracebackType
from typing import Any, ParamSpec, Protocol

import fastapi
import fastapi.dependencies.utils as fastapi_utils
from fastapi import FastAPI
from fastapi.background import BackgroundTasks
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Host, Mount
from starlette.types import Scope

from fastapi_tasks import Phase, TaskConfig, TaskStatus
from fastapi_tasks._seam import REQUEST_STACK_KEY, is_async_callable, run_task
from fastapi_tasks.errors import FastAPITasksError

from ._records import RequestInfo, TaskKeeper, TaskRecord

__all__ = [
    "BackgroundRecorder",
    "BackgroundTaskRecord",
    "RecordingBackgroundTasks",
    "hook_background_tasks",
    "unhook_background_tasks",
    "unwatch_unclaimed",
    "watch_unclaimed",
]

P = ParamSpec("P")

_HOOK = "BackgroundTasks"  # the name solve_dependencies looks up to create a request's BackgroundTasks
_NO_CONFIG = TaskConfig()  # BackgroundTasks know nothing of fastapi-tasks' config: no name, shield or on_error
_lock = threading.Lock()
_recorders: dict[FastAPI, list[BackgroundRecorder]] = {}
"""The recorders installed on each app; the last one installed records its requests."""
_unclaimed_watchers: list[Callable[[Scope], None]] = []
"""Called with the scope of a request that creates its BackgroundTasks on an app without a recorder."""


class BackgroundRecorder(TaskKeeper, Protocol):
    """What recording `BackgroundTasks` needs of the recorder (the recorder itself, in `recorder.py`)."""

    @property
    def mode(self) -> str:
        """ "run", "record" or "spy"."""
        ...

    def _runs(self, record: TaskRecord) -> bool:
        """Whether the recorder lets `record` run now (not in record mode, not held)."""
        ...

    def _record_background(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], request: RequestInfo
    ) -> BackgroundTaskRecord:
        """Record a task added to a request's `BackgroundTasks`."""
        ...


class BackgroundTaskRecord(TaskRecord):
    """A task added with FastAPI's `background_tasks.add_task()`, as the recorder saw it.

    Its `source` is "BackgroundTasks" and its phase "after_response". It runs as Starlette runs
    it: when it fails (or is cancelled), the tasks after it in its request's `BackgroundTasks`
    are discarded, with the reason.
    """

    __slots__ = ("_group",)

    def __init__(
        self,
        recorder: BackgroundRecorder,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        request: RequestInfo,
        seq: int,
    ) -> None:
        super().__init__(recorder, func, args, kwargs, _NO_CONFIG, Phase.AFTER_RESPONSE, request, seq)
        self.source = "BackgroundTasks"
        self._group: _RequestTasks | None = None

    def _set_ended(self, status: TaskStatus) -> None:
        ran = self._status is TaskStatus.RUNNING
        super()._set_ended(status)
        if ran and self._group is not None and status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            self._group.stop_after(self, status)

    def _discard(self, reason: str) -> None:
        if self._status is TaskStatus.PENDING:
            self.reason = reason
            self._set_ended(TaskStatus.DISCARDED)


class RecordingBackgroundTasks(BackgroundTasks):
    """FastAPI's `BackgroundTasks`, recording its tasks when the request's app has a recorder installed."""

    def __init__(self, tasks: Sequence[BackgroundTask] | None = None) -> None:
        super().__init__(tasks)
        self._recorded = _bind(sys._getframe(1))
        if self._recorded is not None:
            self._recorded.background = self

    def add_task(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> None:
        """Add `func(*args, **kwargs)`, to be run after the response has been sent, and record it."""
        group = self._recorded
        if group is None:
            super().add_task(func, *args, **kwargs)
            return
        # Recorded first: arguments that do not fit the function fail here, as with `Tasks`.
        record = group.recorder._record_background(func, args, kwargs, group.request)
        super().add_task(func, *args, **kwargs)
        group.add(self.tasks[-1], record)

    async def __call__(self) -> None:
        group = self._recorded
        if group is None:
            await super().__call__()
        else:
            await group.run(self)


class _RequestTasks:
    """One request's `BackgroundTasks` as its recorder sees them."""

    def __init__(
        self, recorder: BackgroundRecorder, connection: HTTPConnection, function_stack: AsyncExitStack | None
    ) -> None:
        self.recorder = recorder
        self.request = RequestInfo.from_scope(connection.scope)
        self.websocket = connection.scope["type"] == "websocket"
        self.pairs: list[tuple[BackgroundTask, BackgroundTaskRecord]] = []
        self.run_order: list[BackgroundTaskRecord] = []
        self.called = False
        self.background: BackgroundTasks | None = None
        # The request's exit stack closes once the response (and its background) is done, or the
        # request failed: then whatever Starlette did not run is known never to run.
        stack = connection.scope.get(REQUEST_STACK_KEY)
        # FastAPI before 0.118, on an app without add_tasks: nothing closes once the response was sent;
        # the stack closed once the endpoint has returned tells whether the request failed.
        self.early_end = stack is None
        if stack is None:  # pragma: no cover - FastAPI < 0.118
            stack = function_stack
        if stack is None:  # pragma: no cover - FastAPI < 0.118
            raise FastAPITasksError(
                f"tasks_recorder cannot follow a request's BackgroundTasks on FastAPI {fastapi.__version__}: the "
                "request has no exit stack. Please report this to fastapi-tasks, with your FastAPI version."
            )
        stack.push(self._request_ended)

    def add(self, task: BackgroundTask, record: BackgroundTaskRecord) -> None:
        record._group = self
        self.pairs.append((task, record))
        self.run_order.append(record)

    def _record_of(self, task: BackgroundTask) -> BackgroundTaskRecord:
        for known, record in self.pairs:
            if known is task:
                return record
        # Put in `background_tasks.tasks` by hand rather than with add_task(): recorded as it is run.
        record = self.recorder._record_background(task.func, task.args, task.kwargs, self.request)
        self.add(task, record)
        return record

    async def run(self, background: RecordingBackgroundTasks) -> None:
        """Starlette calls the request's `BackgroundTasks`: run them as the recorder's mode says."""
        self.called = True
        tasks = list(background.tasks)
        self.run_order = [self._record_of(task) for task in tasks]
        for _, record in self.pairs:
            if record not in self.run_order:
                record._discard("removed from background_tasks.tasks")
        if self.recorder.mode == "spy":
            # FastAPI's own loop runs them, and what they raise reaches the server, as in production.
            background.tasks = [_Spied(task, record) for task, record in zip(tasks, self.run_order, strict=True)]
            try:
                await BackgroundTasks.__call__(background)
            finally:
                background.tasks = tasks
            return
        # "run" and "record" mode: one at a time, in order; a failure is recorded, logged and contained.
        for record in self.run_order:
            if record.status is TaskStatus.PENDING and self.recorder._runs(record):
                await run_task(record)

    def stop_after(self, record: BackgroundTaskRecord, status: TaskStatus) -> None:
        """`record` failed or was cancelled: as in Starlette, the tasks after it never run."""
        verb = "failed" if status is TaskStatus.FAILED else "was cancelled"
        for later in self.run_order[self.run_order.index(record) + 1 :]:
            later._discard(f"{record.name!r} before it {verb}")

    def _request_ended(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.called:
            return
        if self.early_end and exc_type is None and not self.websocket:  # pragma: no cover
            # The response is built but not sent yet: it runs them, unless it has a background of its own.
            response = _handler_response()
            if response is None or response.background is self.background:
                return
        if self.websocket:
            reason = "FastAPI never runs a WebSocket endpoint's BackgroundTasks"
        elif exc_type is not None:
            reason = f"the request raised {exc_type.__name__}"
        else:
            # FastAPI gives the response the request's BackgroundTasks only if it has no background yet.
            reason = "the response's own background ran instead"
        for _, record in self.pairs:
            record._discard(reason)


class _Spied(BackgroundTask):
    """One task of a request's `BackgroundTasks` in "spy" mode: run by FastAPI's loop, and recorded."""

    def __init__(self, task: BackgroundTask, record: BackgroundTaskRecord) -> None:
        # The task's own attributes, not BackgroundTask.__init__: FastAPI's loop reads `func` (for
        # its telemetry), and a task may have been built by hand.
        self.func, self.args, self.kwargs, self.is_async = task.func, task.args, task.kwargs, task.is_async
        self.record = record

    async def __call__(self) -> None:
        record = self.record
        target = record._target()
        is_async = self.is_async if target is record.func else is_async_callable(target)
        record._set_running()
        try:
            if is_async:
                record._result = await target(*self.args, **self.kwargs)
            else:
                record._result = await run_in_threadpool(target, *self.args, **self.kwargs)
        except Exception as exc:
            record._exception = exc
            record._set_ended(TaskStatus.FAILED)
            raise
        except BaseException:
            record._set_ended(TaskStatus.CANCELLED)
            raise
        record._set_ended(TaskStatus.SUCCEEDED)


def _handler_response() -> Any:  # pragma: no cover - FastAPI < 0.118
    # FastAPI before 0.118: the response the request handler built inside the stack now closing.
    import fastapi.routing as fastapi_routing

    frame: FrameType | None = sys._getframe(2)
    for _ in range(10):
        if frame is None:
            return None
        if frame.f_globals is vars(fastapi_routing) and "response" in frame.f_locals:
            return frame.f_locals["response"]
        frame = frame.f_back
    return None  # pragma: no cover - the handler's frame is two or three up


def _bind(frame: FrameType | None) -> _RequestTasks | None:
    # solve_dependencies calls BackgroundTasks() directly: the caller's frame holds the request.
    request = frame.f_locals.get("request") if frame is not None and frame.f_globals is vars(fastapi_utils) else None
    if not isinstance(request, HTTPConnection):
        raise FastAPITasksError(
            f"tasks_recorder cannot tell which request a BackgroundTasks belongs to: on FastAPI {fastapi.__version__} "
            "it was not created by fastapi.dependencies.utils.solve_dependencies. "
            "Please report this to fastapi-tasks, with your FastAPI version."
        )
    app = request.scope.get("app")
    recorders = _recorders.get(app) if isinstance(app, FastAPI) else None
    if not recorders:
        for watch in list(_unclaimed_watchers):
            watch(request.scope)  # it may refuse the request
        return None
    # FastAPI before 0.118 has the stack it closes once the endpoint returned only here, in solve_dependencies.
    stack = None if REQUEST_STACK_KEY in request.scope or frame is None else frame.f_locals.get("async_exit_stack")
    return _RequestTasks(recorders[-1], request, stack if isinstance(stack, AsyncExitStack) else None)


def _hook_problem() -> str | None:
    """Why FastAPI's BackgroundTasks cannot be recorded on the installed FastAPI, or `None`."""
    current = getattr(fastapi_utils, _HOOK, None)
    if current is not None and current is not BackgroundTasks and current is not RecordingBackgroundTasks:
        return (
            f"fastapi.dependencies.utils.BackgroundTasks was replaced by {current!r}. "
            "Undo that patch while tasks_recorder is installed."
        )
    solve = getattr(fastapi_utils, "solve_dependencies", None)
    code = getattr(inspect.unwrap(solve), "__code__", None) if callable(solve) else None
    if (
        current is None
        or code is None
        or _HOOK not in code.co_names
        or "request" not in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    ):
        return (
            f"FastAPI {fastapi.__version__} no longer creates them where the recorder expects, in "
            "fastapi.dependencies.utils.solve_dependencies. Please report this to fastapi-tasks, with your FastAPI "
            "version; until it is fixed, test with the last FastAPI version your tests passed on."
        )
    return None


def _uses_background_tasks(routes: Sequence[BaseRoute]) -> bool:
    """Whether an endpoint among `routes`, or one of its dependencies, takes a `BackgroundTasks`."""
    pending_routes = list(routes)
    while pending_routes:
        route = pending_routes.pop()
        if isinstance(route, Mount | Host):
            pending_routes.extend(route.routes)
            continue
        dependants = [getattr(route, "dependant", None)]
        while dependants:
            dependant = dependants.pop()
            if dependant is None:
                continue
            # A dependant of an unknown shape counts as using them: a loud error beats recording nothing.
            if getattr(dependant, "background_tasks_param_name", True):
                return True
            dependants.extend(getattr(dependant, "dependencies", ()))
    return False


def hook_background_tasks(recorder: BackgroundRecorder, apps: Sequence[FastAPI]) -> None:
    """Record the `BackgroundTasks` of requests to `apps` with `recorder`, until `unhook_background_tasks`.

    Raises:
        FastAPITasksError: an app uses `BackgroundTasks` and the installed FastAPI creates them
            elsewhere than the recorder expects (or something else replaced FastAPI's class).
    """
    problem = _hook_problem()
    if problem is not None:
        if any(_uses_background_tasks(app.routes) for app in apps):
            raise FastAPITasksError(f"tasks_recorder cannot record FastAPI's BackgroundTasks: {problem}")
        return  # Nothing to record: an app without BackgroundTasks keeps working on such a FastAPI.
    with _lock:
        setattr(fastapi_utils, _HOOK, RecordingBackgroundTasks)
        for app in apps:
            _recorders.setdefault(app, []).append(recorder)


def unhook_background_tasks(recorder: BackgroundRecorder) -> None:
    """Stop recording `BackgroundTasks` with `recorder`; put FastAPI's class back after the last recorder."""
    with _lock:
        for app, recorders in list(_recorders.items()):
            _recorders[app] = [r for r in recorders if r is not recorder]
            if not _recorders[app]:
                del _recorders[app]
        _put_fastapis_class_back()


def watch_unclaimed(watcher: Callable[[Scope], None]) -> None:
    """Call `watcher` with the scope of each request that creates its BackgroundTasks on an app without a recorder.

    Until `unwatch_unclaimed(watcher)`. On a FastAPI whose BackgroundTasks cannot be recorded, it is never called.
    """
    if _hook_problem() is not None:
        return
    with _lock:
        setattr(fastapi_utils, _HOOK, RecordingBackgroundTasks)
        _unclaimed_watchers.append(watcher)


def unwatch_unclaimed(watcher: Callable[[Scope], None]) -> None:
    """Stop calling `watcher`; put FastAPI's class back when nothing else needs the hook."""
    with _lock:
        if watcher in _unclaimed_watchers:
            _unclaimed_watchers.remove(watcher)
        _put_fastapis_class_back()


def _put_fastapis_class_back() -> None:
    # Called with the lock held.
    if not _recorders and not _unclaimed_watchers and getattr(fastapi_utils, _HOOK, None) is RecordingBackgroundTasks:
        setattr(fastapi_utils, _HOOK, BackgroundTasks)
