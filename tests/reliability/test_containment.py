"""Issue 12, containment: nothing a task does can hurt the app, its other tasks or later requests.

One regression test per defect of the issue (each failed on the code before the fix), and one per
semantic the issue settled. In-process, on asyncio and trio, through httpx (or Starlette's
TestClient for WebSockets); every wait is on an event, with `anyio.fail_after` as a hang guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import re
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.from_thread
import httpx
import pytest
from _versions import STARLETTE_VERSION, needs_depends_scope, needs_router_lifespans
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from fastapi_tasks import Task, TaskConfig, Tasks, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks import tasks as tasks_module
from fastapi_tasks._compat import LEGACY_STACKS
from fastapi_tasks.errors import FastAPITasksError

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # anyio depends on the backport before 3.11
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

Backend = Literal["asyncio", "trio"]

# A hang guard: nothing waits this long when the code works, every wait ends on its signal.
TIMEOUT = 10.0


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield a client for it; leaving the block shuts the app down."""
    async with LifespanManager(app, startup_timeout=None, shutdown_timeout=None) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """What the `fastapi_tasks` logger logged at exactly `level`."""
    return [
        record.getMessage() for record in caplog.records if record.name == "fastapi_tasks" and record.levelno == level
    ]


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in `exc`, looking through (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


class Abort(BaseException):
    """An app's own `BaseException` subclass, as some libraries define one to unwind a stack."""


# --- 1. a BaseException in a task or on_error handler is contained ---------------------------------


def _raise(exc: BaseException) -> None:
    raise exc


async def _raise_async(exc: BaseException) -> None:
    raise exc


async def _await_a_future_something_else_cancels() -> None:
    # A CancelledError that no cancel scope of ours asked for: a failure of the task, not its cancellation.
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.call_soon(future.cancel)
    await future


def _group() -> BaseException:
    group: BaseException = BaseExceptionGroup("two things broke", [Abort("abort"), ValueError("boom")])
    return group


# fault -> (the task body, the type of what it ends with, how the ERROR record describes it)
FAULTS: dict[str, tuple[Callable[[], Any], type[BaseException], str]] = {
    "base-exception": (functools.partial(_raise_async, Abort("abort")), Abort, "Abort: abort"),
    "base-exception-in-a-thread": (functools.partial(_raise, Abort("abort")), Abort, "Abort: abort"),
    "generator-exit": (
        functools.partial(_raise_async, GeneratorExit("closed")),
        GeneratorExit,
        "GeneratorExit: closed",
    ),
    "exception-group": (
        lambda: _raise_async(_group()),
        BaseExceptionGroup,
        "BaseExceptionGroup: two things broke (2 sub-exceptions)",
    ),
    "foreign-cancellation": (_await_a_future_something_else_cancels, asyncio.CancelledError, "CancelledError"),
}


@asynccontextmanager
async def contained(
    app: FastAPI, fault: Callable[[], Any], *, on_error: Any = None
) -> AsyncIterator[dict[str, Task[..., Any]]]:
    """Serve `app` with a bystander task running, then a faulty one; check that the app goes on.

    Yields the handles (`bystander`, `fault`, `later`) once the faulty task ended: the body of the
    block checks how it ended; afterwards the bystander succeeds and a later request schedules.
    """
    release = anyio.Event()
    handles: dict[str, Task[..., Any]] = {}

    async def bystander() -> str:
        await release.wait()
        return "the bystander finished"

    async def later() -> str:
        return "a later task ran"

    @app.post("/bystander")
    async def start_bystander(tasks: Tasks) -> None:
        handles["bystander"] = tasks.task(name="bystander").schedule(bystander)

    @app.post("/fault")
    async def start_fault(tasks: Tasks) -> None:
        handles["fault"] = tasks.task(name="fault", on_error=on_error).schedule(fault)

    @app.post("/later")
    async def start_later(tasks: Tasks) -> None:
        handles["later"] = tasks.task(name="later").schedule(later)

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            assert (await client.post("/bystander")).status_code == 200
            await handles["bystander"].started.wait()
            assert (await client.post("/fault")).status_code == 200
            await handles["fault"].wait()  # the faulty task's handle ends

            yield handles

            release.set()
            await handles["bystander"].wait()
            # No 500 FastAPITasksShutdownError: the app's task group is still open.
            assert (await client.post("/later")).status_code == 200
            await handles["later"].wait()

    assert handles["bystander"].status is TaskStatus.SUCCEEDED
    assert handles["bystander"].result == "the bystander finished"
    assert handles["later"].result == "a later task ran"


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_task_that_raises_a_base_exception_fails_alone(
    anyio_backend: Backend, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    if fault == "foreign-cancellation" and anyio_backend == "trio":
        pytest.skip("trio has no futures that something else can cancel")
    body, error_type, described = FAULTS[fault]
    app = FastAPI()
    add_tasks(app)

    with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with contained(app, body) as handles:
            assert handles["fault"].status is TaskStatus.FAILED
            assert type(handles["fault"].exception) is error_type

    assert messages(caplog, logging.ERROR) == [f"Background task 'fault' failed: {described}"]
    assert messages(caplog, logging.WARNING) == []


async def _fail_with_value_error() -> None:
    raise ValueError("boom")


def _on_error_that_aborts(task: Task[..., Any], exc: Exception) -> None:
    raise Abort(f"handler of {task.name}")


async def _async_on_error_that_exits_a_generator(task: Task[..., Any], exc: Exception) -> None:
    raise GeneratorExit(f"handler of {task.name}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("handler", "described"),
    [
        (_on_error_that_aborts, "Abort: handler of fault"),
        (_async_on_error_that_exits_a_generator, "GeneratorExit: handler of fault"),
    ],
    ids=["sync-handler", "async-handler"],
)
async def test_an_on_error_handler_that_raises_a_base_exception_is_contained(
    handler: Callable[[Task[..., Any], Exception], Any], described: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    add_tasks(app)

    with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with contained(app, _fail_with_value_error, on_error=handler) as handles:
            assert handles["fault"].status is TaskStatus.FAILED
            assert isinstance(handles["fault"].exception, ValueError)

    assert messages(caplog, logging.ERROR) == [
        "Background task 'fault' failed: ValueError: boom",
        f"The on_error handler {handler.__qualname__} of background task 'fault' raised: {described}",
    ]


@pytest.mark.anyio
async def test_on_error_is_not_called_for_a_base_exception() -> None:
    # Its signature takes an Exception: a BaseException is logged and kept on the handle only.
    called: list[BaseException] = []

    def on_error(task: Task[..., Any], exc: Exception) -> None:
        called.append(exc)

    app = FastAPI()
    add_tasks(app, config=TaskConfig(on_error=on_error))
    async with contained(app, functools.partial(_raise_async, Abort("abort"))) as handles:
        assert isinstance(handles["fault"].exception, Abort)
    assert called == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("task_kind", ["sync", "async"])
def test_keyboard_interrupt_and_system_exit_end_the_task_and_propagate(
    anyio_backend: Backend, interrupt: type[BaseException], task_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    handles: list[Task[..., Any]] = []
    body: Callable[[], Any] = (
        functools.partial(_raise, interrupt()) if task_kind == "sync" else functools.partial(_raise_async, interrupt())
    )

    async def main() -> None:
        app = FastAPI()
        add_tasks(app)

        @app.post("/")
        async def endpoint(tasks: Tasks) -> None:
            handles.append(tasks.task(name="interrupted").schedule(body))

        with anyio.fail_after(TIMEOUT):
            async with serve(app) as client:
                await client.post("/")
                await anyio.sleep_forever()  # until the interrupt ends the run

    # Run in an event loop of its own: what the interrupt ends is that run, not pytest's. On trio it
    # leaves through the task groups it crossed, each wrapping it in an exception group.
    with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        try:
            anyio.run(main, backend=anyio_backend)
        except BaseException as exc:  # what propagated is checked below
            raised = exc
        else:
            pytest.fail("the interrupt did not propagate")

    assert [type(exc) for exc in leaves(raised)] == [interrupt]

    [task] = handles
    assert task.status is TaskStatus.FAILED
    assert task.done
    assert type(task.exception) is interrupt
    assert messages(caplog, logging.ERROR) == [
        f"Background task 'interrupted' raised {interrupt.__name__}; ending it and re-raising"
    ]


# --- 2. Tasks binds to the endpoint's own scope ----------------------------------------------------


class StripPrefix:
    """A pure ASGI middleware that serves `/api/...` as `/...`, passing on a copy of the scope as the ASGI
    spec advises when changing one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            scope = dict(scope, path=scope["path"][4:], root_path=scope.get("root_path", "") + "/api")
        await self.app(scope, receive, send)


def app_behind_a_copying_middleware() -> FastAPI:
    app = FastAPI()
    app.add_middleware(StripPrefix)  # added before add_tasks: it sits inside add_tasks's middleware
    add_tasks(app)
    return app


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint_kind", ["sync", "async"])
async def test_deferred_tasks_run_behind_a_middleware_that_copies_the_scope(endpoint_kind: str) -> None:
    app = app_behind_a_copying_middleware()
    handles: list[Task[..., Any]] = []

    async def job(phase: str) -> str:
        return phase

    def schedule(tasks: TasksScheduler) -> None:
        handles.append(tasks.after_route.schedule(job, "after_route"))
        handles.append(tasks.after_response.schedule(job, "after_response"))

    if endpoint_kind == "sync":

        @app.post("/")
        def sync_endpoint(tasks: Tasks) -> None:
            schedule(tasks)

    else:

        @app.post("/")
        async def async_endpoint(tasks: Tasks) -> None:
            schedule(tasks)

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            assert (await client.post("/api/")).status_code == 200
            for handle in handles:
                await handle.wait()

    assert [handle.result for handle in handles] == ["after_route", "after_response"]


@pytest.mark.anyio
@pytest.mark.skipif(
    LEGACY_STACKS, reason="before 0.118 FastAPI's stacks are found without the scope: see the next test"
)
async def test_a_scheduler_built_from_the_task_group_behind_a_copying_middleware_raises() -> None:
    app = app_behind_a_copying_middleware()
    errors: list[Exception] = []

    @app.post("/direct")
    async def endpoint(request: Request) -> None:
        try:
            TasksScheduler(request.state.fastapi_tasks_tg)
        except FastAPITasksError as exc:
            errors.append(exc)

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            assert (await client.post("/api/direct")).status_code == 200

    [error] = errors
    assert str(error) == (
        "Cannot bind a TasksScheduler to http '/api/direct': the scope has no FastAPI exit stacks, so its "
        "after_route and after_response tasks could never start. A middleware between add_tasks() and the "
        "endpoint passed a copy of the scope on: take the scheduler from the Tasks dependency, which sees the "
        "endpoint's own scope."
    )


@pytest.mark.anyio
@pytest.mark.skipif(not LEGACY_STACKS, reason="FastAPI 0.121+ keeps its stacks only in the scope: see the test above")
async def test_before_fastapi_0_118_a_scheduler_built_from_the_task_group_behind_a_copying_middleware_binds() -> None:
    # Before 0.118 the endpoint's exit stack is found where FastAPI's request handler awaits it, and the
    # request's own is opened by the add_tasks middleware, outside the copying one: both phases start.
    app = app_behind_a_copying_middleware()
    handles: list[Task[..., Any]] = []

    async def job(phase: str) -> str:
        return phase

    @app.post("/direct")
    async def endpoint(request: Request) -> None:
        scheduler = TasksScheduler(request.state.fastapi_tasks_tg)
        handles.append(scheduler.after_route.schedule(job, "after_route"))
        handles.append(scheduler.after_response.schedule(job, "after_response"))

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            assert (await client.post("/api/direct")).status_code == 200
            for handle in handles:
                await handle.wait()

    assert [handle.result for handle in handles] == ["after_route", "after_response"]


# --- 3. sync tasks have threads of their own -------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("max_threads", [None, 3], ids=["default", "three"])
async def test_busy_sync_tasks_do_not_starve_sync_endpoints(max_threads: int | None) -> None:
    assert tasks_module.DEFAULT_MAX_THREADS == 40  # as documented
    threads = tasks_module.DEFAULT_MAX_THREADS if max_threads is None else max_threads
    app = FastAPI()
    if max_threads is None:
        add_tasks(app)
    else:
        add_tasks(app, max_threads=max_threads)
    release = threading.Event()
    all_in_threads = anyio.Event()
    in_threads = 0
    handles: list[Task[..., Any]] = []

    def entered() -> None:
        nonlocal in_threads
        in_threads += 1
        if in_threads == threads:
            all_in_threads.set()

    def blocker() -> str:
        anyio.from_thread.run_sync(entered)  # tell the event loop without taking a thread of anyio's
        assert release.wait(TIMEOUT), "the test never released the blocked tasks"
        return "released"

    @app.post("/block")
    async def block(tasks: Tasks) -> None:
        # One more than there are threads: it waits for a thread.
        handles.extend(tasks.schedule(blocker) for _ in range(threads + 1))

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            try:
                assert (await client.post("/block")).status_code == 200
                await all_in_threads.wait()
                # Every thread of the tasks is busy; a sync endpoint answers all the same.
                assert (await client.get("/ping")).json() == "pong"
                [waiting] = [handle for handle in handles if handle.status is TaskStatus.PENDING]
                assert not waiting.started.is_set()
                assert sum(handle.status is TaskStatus.RUNNING for handle in handles) == threads
            finally:
                release.set()
            for handle in handles:
                await handle.wait()

    assert [handle.status for handle in handles] == [TaskStatus.SUCCEEDED] * (threads + 1)


# --- 4. Task.cancel() --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_from_a_sync_endpoint_cancels_a_running_task(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    @app.post("/")
    def endpoint(tasks: Tasks) -> None:
        task = tasks.task(name="stuck").schedule(anyio.sleep_forever)
        handles.append(task)
        anyio.from_thread.run(task.started.wait)
        task.cancel()  # from the endpoint's worker thread

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            response = await client.post("/")
            assert response.status_code == 200
            await handles[0].wait()

    assert handles[0].status is TaskStatus.CANCELLED
    assert messages(caplog, logging.WARNING) == ["Background task 'stuck' was cancelled before it finished"]


@pytest.mark.anyio
async def test_cancel_from_a_sync_task_cancels_another_task() -> None:
    app = FastAPI()
    add_tasks(app)
    handles: dict[str, Task[..., Any]] = {}

    def canceller(target: Task[..., Any]) -> str:
        anyio.from_thread.run(target.started.wait)
        target.cancel()  # from the task's worker thread
        return "cancelled it"

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["stuck"] = stuck = tasks.task(name="stuck").schedule(anyio.sleep_forever)
        handles["canceller"] = tasks.schedule(canceller, stuck)

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            await client.post("/")
            await handles["canceller"].wait()
            await handles["stuck"].wait()

    assert handles["canceller"].result == "cancelled it"
    assert handles["stuck"].status is TaskStatus.CANCELLED


@pytest.mark.anyio
@pytest.mark.parametrize("phase", ["after_route", "after_response"])
@pytest.mark.parametrize("endpoint_kind", ["sync", "async"])
async def test_cancel_on_a_pending_deferred_task_means_it_never_starts(
    phase: str, endpoint_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    add_tasks(app)
    ran: list[str] = []
    handles: dict[str, Task[..., Any]] = {}

    async def job(label: str) -> None:
        ran.append(label)

    def schedule(tasks: TasksScheduler) -> str:
        batch = tasks.after_route if phase == "after_route" else tasks.after_response
        handles["cancelled"] = batch.task(name="cancelled").schedule(job, "cancelled")
        handles["kept"] = batch.task(name="kept").schedule(job, "kept")
        handles["cancelled"].cancel()
        return handles["cancelled"].status.value

    if endpoint_kind == "sync":

        @app.post("/")
        def sync_endpoint(tasks: Tasks) -> str:
            return schedule(tasks)

    else:

        @app.post("/")
        async def async_endpoint(tasks: Tasks) -> str:
            return schedule(tasks)

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            assert (await client.post("/")).json() == "cancelled"
            await handles["kept"].wait()

    assert handles["cancelled"].status is TaskStatus.CANCELLED
    assert not handles["cancelled"].started.is_set()
    assert handles["kept"].status is TaskStatus.SUCCEEDED
    assert ran == ["kept"]
    assert messages(caplog, logging.INFO) == ["Background task 'cancelled' was cancelled before it started"]


# --- 5. an endpoint that returns after the app shut down ------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint_kind", ["sync", "async"])
async def test_an_endpoint_returning_after_shutdown_keeps_its_response_and_cancels_its_deferred_tasks(
    endpoint_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    add_tasks(app)
    entered, release = anyio.Event(), anyio.Event()
    ran: list[str] = []
    handles: list[Task[..., Any]] = []

    def job() -> None:
        ran.append("a task ran")

    def schedule(tasks: TasksScheduler) -> None:
        handles.append(tasks.after_route.task(name="audit").schedule(job))
        handles.append(tasks.after_response.task(name="notify").schedule(job))
        handles.append(tasks.after_response.task(name="email").schedule(job))

    if endpoint_kind == "sync":

        @app.post("/")
        def sync_endpoint(tasks: Tasks) -> dict[str, bool]:
            schedule(tasks)
            anyio.from_thread.run_sync(entered.set)
            anyio.from_thread.run(release.wait)
            return {"saved": True}

    else:

        @app.post("/")
        async def async_endpoint(tasks: Tasks) -> dict[str, bool]:
            schedule(tasks)
            entered.set()
            await release.wait()
            return {"saved": True}

    responses: list[httpx.Response] = []
    manager = LifespanManager(app, startup_timeout=None, shutdown_timeout=None)
    transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)

    async def request(client: httpx.AsyncClient) -> None:
        responses.append(await client.post("/"))

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
            anyio.create_task_group() as tg,
        ):
            async with manager:
                tg.start_soon(request, client)
                await entered.wait()
            # The lifespan has shut down; now the endpoint returns.
            release.set()

    [response] = responses
    assert response.status_code == 200
    assert response.json() == {"saved": True}
    assert [handle.status for handle in handles] == [TaskStatus.CANCELLED] * 3
    assert all(handle.finished.is_set() for handle in handles)
    assert ran == []
    assert messages(caplog, logging.WARNING) == [
        "Cancelled 1 after_route task(s) of a request that ended after the app shut down: 'audit'",
        "Cancelled 2 after_response task(s) of a request that ended after the app shut down: 'notify', 'email'",
    ]


# --- 6. lifespans of routers included after add_tasks ----------------------------------------------


class ShutdownWatcher:
    """A pure ASGI middleware, outermost, that sets `shutting_down` when the server asks for shutdown."""

    def __init__(self, app: ASGIApp, shutting_down: list[anyio.Event]) -> None:
        self.app = app
        self.shutting_down = shutting_down

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watched() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                self.shutting_down[0].set()
            return message

        await self.app(scope, watched if scope["type"] == "lifespan" else receive, send)


@pytest.mark.anyio
@needs_router_lifespans
@pytest.mark.parametrize("outcome", ["finishes", "cancelled"])
async def test_tasks_end_before_the_lifespan_of_a_router_included_after_add_tasks_tears_down(outcome: str) -> None:
    pool = {"open": False}
    shutting_down: list[anyio.Event] = []

    @asynccontextmanager
    async def pool_lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool["open"] = True
        yield
        pool["open"] = False

    app = FastAPI()
    add_tasks(app, shutdown_timeout=TIMEOUT if outcome == "finishes" else None)
    app.add_middleware(ShutdownWatcher, shutting_down=shutting_down)
    router = APIRouter(lifespan=pool_lifespan)
    seen: list[bool] = []
    handles: list[Task[..., Any]] = []

    async def finishes() -> None:
        await shutting_down[0].wait()  # inside the grace period
        seen.append(pool["open"])

    async def cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            seen.append(pool["open"])

    @router.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.schedule(finishes if outcome == "finishes" else cancelled))

    app.include_router(router)

    with anyio.fail_after(TIMEOUT):
        shutting_down.append(anyio.Event())
        async with serve(app) as client:
            assert (await client.post("/")).status_code == 200
            await handles[0].started.wait()
            assert pool["open"]

    assert seen == [True]  # the task used the router's pool before it closed
    assert not pool["open"]
    expected = TaskStatus.SUCCEEDED if outcome == "finishes" else TaskStatus.CANCELLED
    assert handles[0].status is expected


# --- 8. generator functions are refused --------------------------------------------------------------


def _numbers(n: int) -> Iterator[int]:
    yield from range(n)


async def _async_numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


GENERATOR_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "generator": _numbers,
    "async-generator": _async_numbers,
    "partial-of-a-generator": functools.partial(_numbers, 3),
    "partial-of-an-async-generator": functools.partial(_async_numbers, 3),
}


@pytest.mark.anyio
@pytest.mark.parametrize("phase", ["immediate", "after_route", "after_response"])
@pytest.mark.parametrize("kind", GENERATOR_FUNCTIONS)
async def test_a_generator_function_is_refused_where_it_is_scheduled(kind: str, phase: str) -> None:
    func = GENERATOR_FUNCTIONS[kind]
    message = (
        f"Cannot schedule {func!r}: it is a generator function, and calling it would only create a "
        "generator without running its body. Schedule a function that returns (or an async function "
        "that awaits) instead, e.g. one that iterates over the generator."
    )
    async with anyio.create_task_group() as tg:
        scheduler = TasksScheduler(tg)
        target = {"immediate": scheduler, "after_route": scheduler.after_route}.get(phase, scheduler.after_response)
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            target.schedule(func, 3)
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            target.task(name="numbers").schedule(func, 3)
    assert scheduler.after_route.scheduled == scheduler.after_response.scheduled == []


# --- 9. a running task keeps nothing of its request alive -------------------------------------------


class Probe:
    """An object put in a request's scope, to tell (through a weak reference) when the scope is freed."""


@pytest.mark.anyio
@pytest.mark.parametrize("phase", ["immediate", "after_route", "after_response"])
async def test_a_running_task_does_not_keep_its_request_alive(phase: str) -> None:
    app = FastAPI()
    add_tasks(app)
    release = anyio.Event()
    # A dict cannot be weakly referenced: the probe, which only the scope holds, stands for it.
    probes: list[weakref.ref[Probe]] = []
    handles: list[Task[..., Any]] = []

    async def job() -> None:
        await release.wait()

    @app.post("/")
    async def endpoint(request: Request, tasks: Tasks) -> None:
        probe = request.scope["test.probe"] = Probe()
        probes.append(weakref.ref(probe))
        batch = {"immediate": tasks, "after_route": tasks.after_route}.get(phase, tasks.after_response)
        handles.append(batch.schedule(job))

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            assert (await client.post("/")).status_code == 200
            await handles[0].started.wait()
            gc.collect()
            try:
                assert probes[0]() is None, "the request's scope outlived the request"
            finally:
                release.set()
            await handles[0].wait()


# --- settled: discards are logged at INFO with their reason -----------------------------------------


@pytest.mark.anyio
async def test_discards_are_logged_at_info_with_names_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    add_tasks(app)

    async def job() -> None:
        pass

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.after_route.task(name="audit").schedule(job)
        tasks.after_response.task(name="notify").schedule(job)
        tasks.after_response.task(name="email").schedule(job)
        raise RuntimeError("the endpoint broke")

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            assert (await client.post("/")).status_code == 500

    assert messages(caplog, logging.INFO) == [
        "Discarded 1 after_route task(s) because the endpoint or one of its dependencies raised RuntimeError: 'audit'",
        "Discarded 2 after_response task(s) because the endpoint or one of its dependencies raised RuntimeError: "
        "'notify', 'email'",
    ]


# --- settled: a WebSocket session that the client ends runs its deferred tasks ------------------------


def test_a_websocket_session_ended_by_the_client_runs_its_deferred_tasks(anyio_backend: Backend) -> None:
    app = FastAPI()
    add_tasks(app)
    ran = {"after_route": threading.Event(), "after_response": threading.Event()}
    handles: list[Task[..., Any]] = []

    @app.websocket("/ws")
    async def session(websocket: WebSocket, tasks: Tasks) -> None:
        await websocket.accept()
        handles.append(tasks.after_route.schedule(ran["after_route"].set))
        handles.append(tasks.after_response.schedule(ran["after_response"].set))
        while True:  # until the client disconnects: receive_text() raises WebSocketDisconnect
            await websocket.send_text(await websocket.receive_text())

    def chat(client: TestClient) -> None:
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("hello")
            assert websocket.receive_text() == "hello"
        # Leaving the block closed the connection from the client's side.

    with TestClient(app, backend=anyio_backend) as client:
        # The endpoint lets the WebSocketDisconnect through; the TestClient hands it back, as it does
        # every exception of the app. Before Starlette 0.45 it does not wait for the session to end: it hands
        # the exception back only if the session ended before it looked.
        waits = STARLETTE_VERSION >= (0, 45)
        with pytest.raises(WebSocketDisconnect) if waits else contextlib.suppress(WebSocketDisconnect):
            chat(client)
        assert ran["after_route"].wait(TIMEOUT)
        assert ran["after_response"].wait(TIMEOUT)

    assert [handle.status for handle in handles] == [TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED]


# --- settled: a raising teardown discards deferred tasks, wherever its dependency was declared --------


@pytest.mark.anyio
@needs_depends_scope
@pytest.mark.parametrize("declared", ["before-tasks", "after-tasks"])
@pytest.mark.parametrize("scope", ["function", "request"])
async def test_a_raising_teardown_decides_the_deferred_tasks_fate_whatever_the_declaration_order(
    scope: Literal["function", "request"], declared: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: dict[str, Task[..., Any]] = {}

    async def resource() -> AsyncIterator[str]:
        yield "resource"
        raise RuntimeError("teardown failed")

    async def job() -> None:
        pass

    def schedule(tasks: TasksScheduler) -> None:
        handles["after_route"] = tasks.after_route.task(name="audit").schedule(job)
        handles["after_response"] = tasks.after_response.task(name="notify").schedule(job)

    if declared == "before-tasks":

        @app.post("/")
        async def resource_first(resource: str = Depends(resource, scope=scope), *, tasks: Tasks) -> None:
            schedule(tasks)

    else:

        @app.post("/")
        async def tasks_first(tasks: Tasks, resource: str = Depends(resource, scope=scope)) -> None:
            schedule(tasks)

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            await client.post("/")
            for handle in handles.values():
                await handle.wait()

    discards = [message for message in messages(caplog, logging.INFO) if message.startswith("Discarded")]
    if scope == "function":
        # The teardown fails as the endpoint returns: neither batch starts.
        assert {phase: handle.status for phase, handle in handles.items()} == {
            "after_route": TaskStatus.DISCARDED,
            "after_response": TaskStatus.DISCARDED,
        }
        assert discards == [
            "Discarded 1 after_route task(s) because the endpoint or one of its dependencies raised RuntimeError: "
            "'audit'",
            "Discarded 1 after_response task(s) because the endpoint or one of its dependencies raised "
            "RuntimeError: 'notify'",
        ]
    else:
        # The teardown fails after the response was sent: the after_route batch had started.
        assert {phase: handle.status for phase, handle in handles.items()} == {
            "after_route": TaskStatus.SUCCEEDED,
            "after_response": TaskStatus.DISCARDED,
        }
        assert discards == [
            "Discarded 1 after_response task(s) because sending the response or tearing down a request-scoped "
            "dependency raised RuntimeError after the endpoint returned: 'notify'"
        ]


# --- settled: shutdown names every unfinished task at WARNING ----------------------------------------


class OnRecord(logging.Handler):
    """Calls `action` (on the thread that logs) when a record starting with `prefix` is emitted."""

    def __init__(self, prefix: str, action: Callable[[], None]) -> None:
        super().__init__()
        self.prefix = prefix
        self.action = action

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.action()


@pytest.mark.anyio
async def test_shutdown_names_every_unfinished_task_in_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    add_tasks(app, max_threads=1)
    release_thread = threading.Event()
    release_shielded = anyio.Event()
    handles: dict[str, Task[..., Any]] = {}

    def blocking() -> str:
        assert release_thread.wait(TIMEOUT), "the shutdown warning was never logged"
        return "the thread ran to its end"

    async def shielded() -> str:
        await release_shielded.wait()
        return "the shielded task finished"

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["waiting"] = tasks.task(name="waiting").schedule(anyio.sleep_forever)
        handles["shielded"] = tasks.task(name="shielded", shield=True).schedule(shielded)
        handles["blocking"] = tasks.task(name="blocking").schedule(blocking)

    @app.post("/queued")
    async def queued(tasks: Tasks) -> None:
        handles["queued"] = tasks.task(name="queued").schedule(blocking)

    def release() -> None:
        release_thread.set()
        release_shielded.set()

    logger = logging.getLogger("fastapi_tasks")
    handler = OnRecord("Shutting down", release)
    logger.addHandler(handler)
    try:
        with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
            async with serve(app) as client:
                await client.post("/")
                for name in ("waiting", "shielded", "blocking"):
                    await handles[name].started.wait()
                # The app's only thread is taken: this task waits for it.
                await client.post("/queued")
    finally:
        logger.removeHandler(handler)

    [summary, *_] = messages(caplog, logging.WARNING)
    assert summary == (
        "Shutting down with 4 background task(s) unfinished: 'blocking' (sync, in a thread), "
        "'queued' (not started), 'shielded' (shielded), 'waiting'. Cancelling the unshielded ones; "
        "waiting without a time limit for the shielded ones and for sync ones in a thread, which cannot "
        "be interrupted"
    )
    assert handles["shielded"].result == "the shielded task finished"
    assert handles["waiting"].status is TaskStatus.CANCELLED
    assert handles["queued"].status is TaskStatus.CANCELLED
    assert handles["blocking"].status is TaskStatus.SUCCEEDED, handles["blocking"]


@pytest.mark.anyio
async def test_the_shutdown_warning_leaves_out_a_task_cancelled_before_it_ran(caplog: pytest.LogCaptureFixture) -> None:
    # Found writing these tests: on trio, a task cancelled at once is still among the app's live tasks
    # until its coroutine first runs, and a shutdown in between named it "unfinished" (one run in two).
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []
    ran: list[str] = []

    async def job() -> None:
        ran.append("the job ran")

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        task = tasks.task(name="cancelled").schedule(job)
        task.cancel()
        handles.append(task)

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            assert (await client.post("/")).status_code == 200

    assert handles[0].status is TaskStatus.CANCELLED
    assert not handles[0].started.is_set()
    assert ran == []
    assert messages(caplog, logging.WARNING) == []
    assert messages(caplog, logging.INFO) == ["Background task 'cancelled' was cancelled before it started"]
