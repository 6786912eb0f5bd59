"""`RecordingScheduler`: a deterministic stand-in for `TasksScheduler` that records every task."""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, NoReturn, TypeAlias

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup
from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.routing import Host, Mount

from fastapi_tasks import Phase, Task, TaskConfig, TasksScheduler, TaskStatus, get_tasks_scheduler
from fastapi_tasks._context import CONFIG_KEY, RUNTIME_KEY
from fastapi_tasks._runner import callable_name, logger, run_task
from fastapi_tasks.errors import FastAPITasksError, FastAPITasksUninitializedAppError
from fastapi_tasks.tasks import TasksBatch

from ._assertions import RecordQueries, TaskSpec, matches_task
from ._background import BackgroundTaskRecord, hook_background_tasks, unhook_background_tasks
from ._dispatch import DispatchQueries, DispatchRecorder
from ._records import RequestInfo, TaskRecord

__all__ = ["MODES", "Mode", "RecordingScheduler", "RequestRecords"]

Mode: TypeAlias = Literal["run", "record", "spy"]
"""How a `RecordingScheduler` treats the tasks it records: "run", "record" or "spy"."""
MODES: tuple[Mode, ...] = ("run", "record", "spy")
"""Every `Mode`, in the order error messages list them."""
_PHASE_ORDER = (Phase.IMMEDIATE, Phase.AFTER_ROUTE, Phase.AFTER_RESPONSE)
_MAX_PASSES = 1000  # run_pending(): a pass runs one phase's pending tasks; three suffice unless tasks schedule more
_OPEN, _STARTED = 0, 1  # TasksBatch states: once started, later tasks are refused rather than lost.


class RecordingScheduler(DispatchRecorder, TasksScheduler, RecordQueries):
    """A `TasksScheduler` that records every task it is given, for tests.

    Installed on an app (`install(app)`, or the `tasks_recorder` pytest fixture) it overrides the
    `Tasks` dependency, needs no lifespan, and records each request's tasks apart. Used on its
    own it is a scheduler for unit tests of code that takes one: its tasks wait, recorded, for
    `run_pending()`.

    Parameters:
        mode: "run" (default): each request's tasks run deterministically (immediate tasks
            concurrently with the endpoint and all finished when it returns, then the
            after_route tasks one at a time, then after the response the after_response tasks
            one at a time), so they have all ended when the client's call returns.
            "record": nothing runs; run the tasks with `run_pending()`.
            "spy": the app's real scheduler runs them, concurrently, as in production (the
            lifespan must run); `drain()` waits for them.
        config: the app-wide configuration; by default the one given to `add_tasks(app)`.
        expect_failures: when true, tasks that fail are not reported at teardown by the plugin.

    Raises:
        ValueError: unknown `mode`.
        TypeError: `config` is not a `TaskConfig`, or `expect_failures` not a bool.
    """

    def __init__(self, *, mode: Mode = "run", config: TaskConfig | None = None, expect_failures: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"Unknown tasks_recorder mode {mode!r}; use one of {', '.join(map(repr, MODES))}.")
        if config is not None and not isinstance(config, TaskConfig):
            raise TypeError(f"config must be a TaskConfig, not {config!r}")
        if not isinstance(expect_failures, bool):
            raise TypeError(f"expect_failures must be True or False, not {expect_failures!r}")
        self.mode: Mode = mode
        self.expect_failures = expect_failures
        self.app: FastAPI | None = None
        self._records: list[TaskRecord] = []
        self._seq = itertools.count(1)
        self._order = itertools.count(1)
        self._explicit_config = config
        self._faults: list[tuple[TaskSpec, Callable[..., Any], bool]] = []
        self._allowed: list[TaskSpec] = []
        self._dispatch_faults: list[tuple[TaskSpec, BaseException | type[BaseException]]] = []
        self._previous_overrides: list[tuple[FastAPI, bool, Any]] = []
        self._runtime = None
        self.config = config or TaskConfig()
        self._init_batches()

    def __repr__(self) -> str:
        return f"<RecordingScheduler mode={self.mode!r} records={len(self._records)}>"

    # --- the records -------------------------------------------------------------------------

    @property
    def records(self) -> list[TaskRecord]:
        """Every recorded task, in scheduling order."""
        return list(self._records)

    def for_request(self, method_or_route: str, path: str | None = None) -> RequestRecords:
        """The records of the requests to `method path` (or of the route named `method_or_route`).

        Every query and assertion of the result is narrowed to those requests.
        """
        if path is None:
            return RequestRecords(self, lambda r: r.route == method_or_route, f"route {method_or_route!r}")
        method = method_or_route.upper()
        return RequestRecords(self, lambda r: r.method == method and r.path == path, f"{method} {path}")

    @property
    def requests(self) -> list[RequestInfo]:
        """The requests that scheduled tasks, in order of their first task."""
        seen: dict[int, RequestInfo] = {}
        for record in self._records:
            if record.request is not None:
                seen.setdefault(record.request.id, record.request)
        return list(seen.values())

    def clear(self) -> None:
        """Forget every record (fault injections and allowed tasks stay)."""
        self._records.clear()

    # --- fault injection and selective execution ---------------------------------------------

    def fail(self, task: TaskSpec, exc: BaseException | type[BaseException]) -> None:
        """Make every matching task raise `exc` instead of running, so its `on_error` is tested for real.

        These failures are expected: the plugin does not report them at teardown.
        """
        if not (isinstance(exc, BaseException) or (isinstance(exc, type) and issubclass(exc, BaseException))):
            raise TypeError(f"fail() needs an exception instance or class to raise, not {exc!r}")

        def raise_injected(*args: Any, **kwargs: Any) -> NoReturn:
            raise exc

        self._faults.append((task, raise_injected, True))

    def replace(self, task: TaskSpec, fake: Callable[..., Any]) -> None:
        """Run `fake` with the same arguments instead of every matching task."""
        if not callable(fake):
            raise TypeError(f"replace() needs a callable to run instead, not {fake!r}")
        self._faults.append((task, fake, False))

    def allow(self, *tasks: TaskSpec) -> None:
        """In "record" mode, let the matching tasks run as in "run" mode; every other task is only recorded."""
        self._allowed.extend(tasks)

    def _target_for(self, record: TaskRecord) -> Callable[..., Any]:
        for spec, replacement, injected_failure in reversed(self._faults):
            if matches_task(record, spec):
                # A failure the test injected is expected: teardown does not report it.
                record.handled = record.handled or injected_failure
                target: Callable[..., Any] = replacement
                return target
        return record.func

    def _runs(self, record: TaskRecord) -> bool:
        if self.mode != "record":
            return True
        return any(matches_task(record, spec) for spec in self._allowed)

    # --- scheduling ----------------------------------------------------------------------------

    def _next_order(self) -> int:
        return next(self._order)

    def _base_config(self) -> TaskConfig:
        return self.config

    def _record(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        phase: Phase,
        request: RequestInfo | None,
    ) -> TaskRecord:
        _check_arguments(func, args, kwargs)
        record = TaskRecord(self, func, args, kwargs, config, phase, request, next(self._seq))
        self._records.append(record)
        return record

    def _record_background(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], request: RequestInfo
    ) -> BackgroundTaskRecord:
        # A task added to FastAPI's BackgroundTasks (see _background.py).
        _check_arguments(func, args, kwargs)
        record = BackgroundTaskRecord(self, func, args, kwargs, request, next(self._seq))
        self._records.append(record)
        return record

    def _new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._record(func, args, kwargs, config, phase, None)

    def _new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._record_dispatch(job, args, kwargs, config, phase, None)

    def _submit(self, task: Task[..., Any]) -> None:
        # Outside a request there is no task group to start tasks in: they wait for run_pending().
        pass

    def _start_batch(self, batch: TasksBatch) -> None:
        batch._state = _STARTED

    @property
    def tg(self) -> TaskGroup:
        """Not available: a recorder used on its own has no task group."""
        raise FastAPITasksError("A RecordingScheduler used outside a request has no task group.")

    # --- running recorded tasks ----------------------------------------------------------------

    async def run_pending(self, *, phase: Phase | str | None = None) -> list[TaskRecord]:
        """Run the pending tasks one at a time: phase by phase, each phase in scheduling order.

        Tasks that the tasks it runs schedule are run too, in their phase's turn: an earlier phase
        gets its turn again before a later one goes on. It returns when no task is pending.

        Parameters:
            phase: run only this phase's pending tasks.

        Returns:
            The records that were run.

        Raises:
            RuntimeError: the tasks kept scheduling more tasks (one that reschedules itself, say).
        """
        phases = _PHASE_ORDER if phase is None else (Phase(phase),)
        ran: list[TaskRecord] = []
        for _ in range(_MAX_PASSES):
            pending: list[TaskRecord] = []
            for wanted in phases:
                pending = [r for r in self.records if r.phase is wanted and r.status is TaskStatus.PENDING]
                if pending:
                    break
            if not pending:
                return ran
            for record in pending:
                if record.status is TaskStatus.PENDING:  # a BackgroundTasks task after one that failed is discarded
                    await run_task(record)
                    ran.append(record)
        names = ", ".join(sorted({repr(r.name) for r in self.records if r.status is TaskStatus.PENDING}))
        raise RuntimeError(
            f"run_pending() gave up after {_MAX_PASSES:,} passes: the tasks it runs keep scheduling more "
            f"(still pending: {names}). Stand in for the task that reschedules itself with "
            "tasks_recorder.replace(task, fake)."
        )

    def run_pending_sync(self, *, phase: Phase | str | None = None) -> list[TaskRecord]:
        """`run_pending()` for a sync test: runs the pending tasks in an event loop of their own."""
        _check_no_running_loop("run_pending_sync", "run_pending")
        return anyio.run(lambda: self.run_pending(phase=phase))

    async def shutdown(self) -> None:
        """Simulate the app's shutdown as production does it.

        Unshielded tasks, pending or running, are cancelled (and logged); shielded ones finish:
        pending shielded tasks are run now, running ones are awaited.
        """
        for record in self.records:
            if record.status is TaskStatus.PENDING:
                if record.config.shield:
                    await run_task(record)
                else:
                    record._set_ended(TaskStatus.CANCELLED)
                    logger.warning("Background task %r was cancelled before it finished", record.name)
            elif record.status is TaskStatus.RUNNING:
                if not record.config.shield:
                    record.cancel()
                await record.wait()

    def shutdown_sync(self) -> None:
        """`shutdown()` for a sync test."""
        _check_no_running_loop("shutdown_sync", "shutdown")
        anyio.run(self.shutdown)

    async def drain(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (the timeout is the point of drain)
        """Wait until every recorded task has ended (for "spy" mode, where tasks run concurrently).

        Raises:
            AssertionError: some tasks were still running after `timeout` seconds; the message
                names them and their phases.
        """
        __tracebackhide__ = True
        with anyio.move_on_after(timeout):
            while unfinished := self._unfinished():
                await unfinished[0].wait()
            return
        still = self._unfinished()
        names = "\n".join(f"- #{r.seq} {r.phase.value} {r.name}" for r in still)
        self._fail(f"drain() timed out after {timeout:g} s; still running:\n{names}")

    def _unfinished(self) -> list[TaskRecord]:
        # A task handed to a task group stays "pending" until its body begins: it will end too, so wait
        # for it. A pending task never handed over (record mode) would wait forever: not for drain().
        return [
            r
            for r in self._records
            if r.status is TaskStatus.RUNNING or (r.status is TaskStatus.PENDING and r._handle is not None)
        ]

    # --- installing on an app ----------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        """Override the `Tasks` dependency of `app` and of the FastAPI apps mounted in it until `uninstall()`.

        Their requests' FastAPI `BackgroundTasks` are recorded too.

        Raises:
            TypeError: `app` is not a FastAPI app.
            FastAPITasksError: the recorder is already installed on an app, or the app uses
                `BackgroundTasks` and the installed FastAPI creates them where the recorder cannot see.
        """
        if not isinstance(app, FastAPI):
            raise TypeError(f"tasks_recorder.install() needs a FastAPI app, not {app!r}")
        if self.app is not None:
            raise FastAPITasksError(
                f"The recorder is already installed on {self.app!r}; call uninstall() before installing it again."
            )
        apps = _apps_served_by(app)
        hook_background_tasks(self, apps)  # first: it may refuse, and nothing is changed then
        if self._explicit_config is None:
            self.config = getattr(app.state, CONFIG_KEY, None) or TaskConfig()
        # A mounted FastAPI app resolves its dependencies with its own overrides, not its parent's.
        for target in apps:
            overrides = target.dependency_overrides
            self._previous_overrides.append(
                (target, get_tasks_scheduler in overrides, overrides.get(get_tasks_scheduler))
            )
            overrides[get_tasks_scheduler] = self._dependency
        self.app = app

    def uninstall(self) -> None:
        """Restore the previous `Tasks` override (or its absence) of the app and of its mounted apps.

        Their `BackgroundTasks` are no longer recorded; FastAPI's own class is back once no recorder is installed.
        """
        unhook_background_tasks(self)
        while self._previous_overrides:
            target, had_override, previous = self._previous_overrides.pop()
            if had_override:
                target.dependency_overrides[get_tasks_scheduler] = previous
            else:
                target.dependency_overrides.pop(get_tasks_scheduler, None)
        self.app = None

    async def _dependency(self, connection: HTTPConnection) -> TasksScheduler:
        scope = connection.scope
        request = RequestInfo.from_scope(scope)
        if self.mode == "spy":
            runtime = scope.get("state", {}).get(RUNTIME_KEY)
            if runtime is None:
                raise FastAPITasksUninitializedAppError(
                    "tasks_recorder in spy mode runs tasks on the app's real scheduler, so the lifespan must run: "
                    "use `with TestClient(app) as client:` or asgi_lifespan.LifespanManager(app)."
                )
            return _SpyScheduler(self, request, runtime)
        scheduler = _RequestScheduler(self, request)
        request_stack, function_stack = scope["fastapi_inner_astack"], scope["fastapi_function_astack"]
        tg = anyio.create_task_group()
        await tg.__aenter__()
        scheduler._tg = tg
        request_stack.push_async_exit(_closer(tg))
        request_stack.push_async_exit(scheduler._after_response_exit)
        function_stack.push_async_exit(scheduler._after_route_exit)
        return scheduler


class _RecordingRequestScheduler(TasksScheduler):
    """A request's scheduler whose tasks and dispatches are recorded by a `RecordingScheduler`."""

    _recorder: RecordingScheduler
    _request: RequestInfo

    def _new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._recorder._record(func, args, kwargs, config, phase, self._request)

    def _new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._recorder._record_dispatch(job, args, kwargs, config, phase, self._request)


class _SpyScheduler(_RecordingRequestScheduler):
    """A request's scheduler in "spy" mode: the production scheduler, recording."""

    def __init__(self, recorder: RecordingScheduler, request: RequestInfo, runtime: Any) -> None:
        self._recorder = recorder
        self._request = request
        super().__init__(_runtime=runtime)
        # The recorder's config, as in the other modes: an explicit one replaces the app's.
        self.config = recorder.config


class _RequestScheduler(_RecordingRequestScheduler):
    """A request's scheduler in "run" and "record" mode: deterministic, in a task group of the request's own."""

    def __init__(self, recorder: RecordingScheduler, request: RequestInfo) -> None:
        self._recorder = recorder
        self._request = request
        self._tg: TaskGroup | None = None
        self._token = anyio.lowlevel.current_token()
        self._thread = threading.get_ident()
        self._immediate: list[TaskRecord] = []
        self._runtime = None
        self.config = recorder.config
        self._init_batches()

    @property
    def tg(self) -> TaskGroup:
        """The request's own task group, in which its immediate tasks run."""
        assert self._tg is not None
        return self._tg

    def _submit(self, task: Task[..., Any]) -> None:
        assert isinstance(task, TaskRecord)
        if not self._recorder._runs(task):
            return
        self._immediate.append(task)
        if threading.get_ident() == self._thread:
            self._spawn(task)
        else:
            anyio.from_thread.run_sync(self._spawn, task, token=self._token)

    def _spawn(self, task: TaskRecord) -> None:
        task._handle = self.tg.start_soon(run_task, task, name=task)

    async def _wait_immediate(self) -> None:
        for task in self._immediate:
            await task.wait()

    async def _run_batch(self, batch: TasksBatch) -> None:
        if batch._state != _OPEN:
            return  # started by hand already (`batch.__start__(tasks)`, as 0.1.0 did): its tasks run once
        batch._state = _STARTED
        for task in batch.scheduled:
            assert isinstance(task, TaskRecord)
            if self._recorder._runs(task):
                await run_task(task)

    async def _after_route_exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Discard first: when the request is cancelled, the wait below raises at once and the
        # deferred tasks would stay "pending" forever.
        if exc_type is not None:
            self.after_route._discard(exc)
            self.after_response._discard(exc)
        # Immediate tasks go on when the endpoint raises, as in production: let them end either way.
        await self._wait_immediate()
        if exc_type is None:
            await self._run_batch(self.after_route)

    async def _after_response_exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            await self._run_batch(self.after_response)
        elif self.after_response._state == _OPEN:
            # The endpoint returned but sending the response failed (the client went away, say).
            self.after_response._discard(exc)
        await self._wait_immediate()


class RequestRecords(DispatchQueries):
    """The records of some requests only: what `RecordingScheduler.for_request()` returns."""

    def __init__(self, recorder: RecordingScheduler, predicate: Callable[[RequestInfo], bool], label: str) -> None:
        self._recorder = recorder
        self._predicate = predicate
        self._label = label

    def __repr__(self) -> str:
        return f"<RequestRecords {self._label}: {len(self.records)} records>"

    @property
    def records(self) -> list[TaskRecord]:
        """The records scheduled by the matching requests."""
        return [r for r in self._recorder.records if r.request is not None and self._predicate(r.request)]

    def _all_records(self) -> list[TaskRecord]:
        return self._recorder.records

    def _scope_label(self) -> str:
        return f" (this view: {self._label})"


def _apps_served_by(app: FastAPI) -> list[FastAPI]:
    """`app` and every FastAPI app mounted in it, at any depth."""
    apps = [app]
    routes = list(app.routes)
    while routes:
        route = routes.pop()
        if isinstance(route, Mount | Host):
            if isinstance(route.app, FastAPI) and route.app not in apps:
                apps.append(route.app)
            routes.extend(route.routes)
    return apps


def _closer(tg: TaskGroup) -> Callable[..., Any]:
    async def close(exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        # The endpoint's own exception must reach FastAPI's handlers unchanged, not wrapped in the
        # task group's ExceptionGroup; only a cancellation is the task group's business.
        if exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class()):
            return bool(await tg.__aexit__(exc_type, exc, tb))
        # Never suppress: trio's task group returns True from a clean exit, which would swallow the
        # endpoint's exception (FastAPI then raises "Response not awaited").
        await tg.__aexit__(None, None, None)
        return False

    return close


def _check_arguments(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # In production a call with the wrong arguments fails later, in the background; under test it
    # fails where the task is scheduled.
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"Cannot schedule {callable_name(func)}() with these arguments: {exc}.") from None


def _check_no_running_loop(name: str, async_name: str) -> None:
    try:
        anyio.get_current_task()
    except anyio.NoEventLoopError:
        return
    raise RuntimeError(
        f"{name}() was called inside an event loop; in an async test use `await {async_name}()` instead."
    )
