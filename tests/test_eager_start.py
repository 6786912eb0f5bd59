"""How the app's runtime starts tasks: asyncio tasks of its own, eagerly with `add_tasks(app, eager_start=True)`.

On asyncio the runtime that `add_tasks` installs starts each task with the running loop's
`create_task` and supervises it itself; on trio, and for a task group passed in directly
(`TasksScheduler(tg)`), tasks go through anyio's task group. `eager_start=True` (Python 3.12+,
asyncio only) starts a task inside the call that starts it, up to its first `await` that suspends.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.lowlevel
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tasks import Phase, Task, TaskConfig, Tasks, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks._compat import NATIVE_TASKS
from fastapi_tasks.errors import FastAPITasksError
from fastapi_tasks_testing import RecordingScheduler

Backend = Literal["asyncio", "trio"]
Kind = Literal["sync", "async"]

TIMEOUT = 10.0
SHUTDOWN_TIMEOUT_GUARD = 2 * TIMEOUT

EAGER_START = sys.version_info >= (3, 12)
needs_eager_start = pytest.mark.skipif(not EAGER_START, reason="eager_start needs Python 3.12 or later")
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
trio_only = pytest.mark.parametrize("anyio_backend", ["trio"])

NEEDS_ASYNCIO = (
    r"^add_tasks\(app, eager_start=True\) needs the asyncio event loop, and the app runs on another one "
    r"\(trio\)\. Leave eager_start off there\.$"
)


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield a client for it; leaving the block shuts the app down."""
    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):  # a shutdown that hangs fails the test
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client


def eager_app(**options: Any) -> FastAPI:
    app = FastAPI()
    add_tasks(app, eager_start=True, **options)
    return app


def fastapi_tasks_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(record.levelno, record.getMessage()) for record in caplog.records if record.name == "fastapi_tasks"]


def on_response_start(app: ASGIApp, callback: Callable[[], None]) -> ASGIApp:
    """Wrap `app` so that `callback` runs when the response starts, before the server is handed it."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        async def record_then_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                callback()
            await send(message)

        await app(scope, receive, record_then_send)

    return wrapper


# --- the option ---------------------------------------------------------------------------------


@pytest.mark.skipif(EAGER_START, reason="Python 3.12+ supports eager_start")
def test_eager_start_before_python_3_12_is_refused() -> None:
    app = FastAPI()
    version = f"{sys.version_info.major}\\.{sys.version_info.minor}"
    with pytest.raises(
        FastAPITasksError,
        match=(
            r"^add_tasks\(app, eager_start=True\) needs Python 3\.12 or later, where asyncio can start a task "
            rf"eagerly; this is Python {version}\. Leave eager_start off\.$"
        ),
    ):
        add_tasks(app, eager_start=True)
    add_tasks(app)  # the refused call installed nothing


@pytest.mark.parametrize(("value", "shown"), [("yes", "'yes'"), (1, "1"), (None, "None")])
def test_eager_start_must_be_a_bool(value: object, shown: str) -> None:
    app = FastAPI()
    with pytest.raises(TypeError, match=rf"^eager_start must be True or False, not {re.escape(shown)}$"):
        add_tasks(app, eager_start=value)  # type: ignore[arg-type]
    add_tasks(app, eager_start=False)


OPTIONS = [
    pytest.param(None, id="default"),
    pytest.param(False, id="eager_start=False"),
    pytest.param(True, id="eager_start=True", marks=needs_eager_start),
]


@pytest.mark.anyio
@pytest.mark.parametrize("eager_start", OPTIONS)
async def test_eager_start_is_off_by_default(anyio_backend: Backend, eager_start: bool | None) -> None:
    """Off, the body begins at the event loop's next turn, after schedule() returned; on, inside it."""
    if eager_start and anyio_backend == "trio":
        pytest.skip("eager_start is asyncio only")
    app = FastAPI()
    if eager_start is None:
        add_tasks(app)
    else:
        add_tasks(app, eager_start=eager_start)
    log: list[str] = []
    handles: list[Task[..., Any]] = []

    async def body() -> None:
        log.append("began")

    @app.get("/")
    async def endpoint(tasks: Tasks) -> list[str]:
        handles.append(tasks.schedule(body))
        return [*log, handles[0].status.value]

    async with serve(app) as client:
        seen = (await client.get("/")).json()
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert seen == (["began", "succeeded"] if eager_start else ["pending"])
    assert log == ["began"]


# --- eager start on asyncio ---------------------------------------------------------------------


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
async def test_an_immediate_task_runs_up_to_its_first_await_inside_schedule() -> None:
    app = eager_app()
    log: list[str] = []
    handles: list[Task[..., Any]] = []

    async def body() -> str:
        log.append("before the await")
        await anyio.lowlevel.checkpoint()
        log.append("after the await")
        return "done"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> list[object]:
        task = tasks.schedule(body)
        handles.append(task)
        return [*log, task.status.value, task.started.is_set()]

    async with serve(app) as client:
        seen = (await client.get("/")).json()
        [task] = handles
        with anyio.fail_after(TIMEOUT):
            await task.wait()

    assert seen == ["before the await", "running", True]
    assert log == ["before the await", "after the await"]
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result == "done"


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
async def test_an_after_route_task_begins_inside_the_exit_of_the_function_stack() -> None:
    app = eager_app()
    log: list[str] = []
    handles: list[Task[..., Any]] = []
    release = anyio.Event()

    async def body() -> None:
        log.append("after_route began")
        await release.wait()
        log.append("after_route ended")

    @app.get("/")
    async def endpoint(tasks: Tasks) -> list[str]:
        handles.append(tasks.after_route.schedule(body))
        return list(log)

    def response_starts() -> None:
        log.append(f"response starts: after_route {handles[0].status.value}")

    async with serve(on_response_start(app, response_starts)) as client:
        seen = (await client.get("/")).json()
        release.set()
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert seen == []
    # Without eager_start, the body would begin at the request's next checkpoint, after the response started.
    assert log == ["after_route began", "response starts: after_route running", "after_route ended"]
    assert handles[0].status is TaskStatus.SUCCEEDED


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
async def test_an_after_response_task_begins_once_the_response_was_sent() -> None:
    app = eager_app()
    log: list[str] = []
    handles: list[Task[..., Any]] = []

    async def body() -> None:
        log.append("after_response began")
        await anyio.lowlevel.checkpoint()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.after_response.schedule(body))

    def response_starts() -> None:
        log.append(f"response starts: after_response {handles[0].status.value}")

    async with serve(on_response_start(app, response_starts)) as client:
        assert (await client.get("/")).status_code == 200
        # Eagerly started at the end of its phase, within the request: begun before the client's call returned.
        log.append("the client has the response")
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert log == ["response starts: after_response pending", "after_response began", "the client has the response"]
    assert handles[0].status is TaskStatus.SUCCEEDED


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
async def test_a_task_that_raises_before_its_first_await_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    app = eager_app()
    handles: list[Task[..., Any]] = []
    errors: list[BaseException] = []
    ran: list[str] = []

    async def fail_at_once() -> None:
        raise ValueError("broken before any await")

    async def after(value: str) -> None:
        ran.append(value)

    async def note_error(task: Task[..., Any], exc: Exception) -> None:
        errors.append(exc)  # no await: the task ends inside schedule()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> str:
        task = tasks.task(name="fails-eagerly", on_error=note_error).schedule(fail_at_once)
        handles.append(task)
        tasks.after_response.schedule(after, "after_response")
        return f"schedule() returned; the task {task.status.value}"

    async with serve(app) as client:
        first = await client.get("/")
        second = await client.get("/")
        with anyio.fail_after(TIMEOUT):
            for handle in handles:
                await handle.wait()

    assert (first.status_code, first.json()) == (200, "schedule() returned; the task failed")
    assert second.status_code == 200
    assert [handle.status for handle in handles] == [TaskStatus.FAILED, TaskStatus.FAILED]
    assert isinstance(handles[0].exception, ValueError)
    assert errors == [handles[0].exception, handles[1].exception]
    assert ran == ["after_response", "after_response"]
    failed = (logging.ERROR, "Background task 'fails-eagerly' failed: ValueError: broken before any await")
    assert fastapi_tasks_logs(caplog) == [failed, failed]


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
@pytest.mark.parametrize("phase", list(Phase))
async def test_a_task_that_completes_synchronously_succeeds_and_the_app_shuts_down(
    caplog: pytest.LogCaptureFixture, phase: Phase
) -> None:
    app = eager_app()
    handles: list[Task[..., Any]] = []
    seen: list[object] = []

    async def no_await(value: int) -> int:
        return value * 2

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        scheduler = {
            Phase.IMMEDIATE: tasks,
            Phase.AFTER_ROUTE: tasks.after_route,
            Phase.AFTER_RESPONSE: tasks.after_response,
        }[phase]
        task = scheduler.schedule(no_await, 21)
        handles.append(task)
        seen.append(task.status)

    async with serve(app) as client:
        assert (await client.get("/")).status_code == 200
        [task] = handles
        # Ended within the request: nothing to wait for.
        assert task.done
        assert task.started.is_set()
        assert task.finished.is_set()
        task.cancel()  # cancelling an ended task does nothing
    # The shutdown returned (within the guard of `serve`): the runtime holds no leftover of the task.

    expected_at_schedule = TaskStatus.SUCCEEDED if phase is Phase.IMMEDIATE else TaskStatus.PENDING
    assert seen == [expected_at_schedule]
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result == 42
    assert fastapi_tasks_logs(caplog) == []


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
async def test_cancel_stops_an_eagerly_started_task(caplog: pytest.LogCaptureFixture) -> None:
    app = eager_app()
    handles: dict[str, Task[..., Any]] = {}
    seen: list[str] = []

    async def forever() -> None:
        await anyio.Event().wait()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        at_once = tasks.task(name="cancelled-at-once").schedule(forever)
        # Already running: it is cancelled at its await, not before it started.
        seen.append(at_once.status.value)
        at_once.cancel()
        handles["at_once"] = at_once
        handles["later"] = tasks.task(name="cancelled-later").schedule(forever)

    async with serve(app) as client:
        await client.get("/")
        with anyio.fail_after(TIMEOUT):
            await handles["at_once"].wait()
            seen.append(handles["later"].status.value)
            handles["later"].cancel()
            await handles["later"].wait()

    assert seen == ["running", "running"]
    assert handles["at_once"].status is TaskStatus.CANCELLED
    assert handles["later"].status is TaskStatus.CANCELLED
    assert fastapi_tasks_logs(caplog) == [
        (logging.WARNING, "Background task 'cancelled-at-once' was cancelled before it finished"),
        (logging.WARNING, "Background task 'cancelled-later' was cancelled before it finished"),
    ]


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
async def test_cancel_does_not_stop_an_eagerly_started_shielded_task() -> None:
    app = eager_app()
    proceed = anyio.Event()
    handles: list[Task[..., Any]] = []

    async def wait_for_proceed() -> str:
        await proceed.wait()
        return "survived"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        task = tasks.task(shield=True).schedule(wait_for_proceed)
        task.cancel()
        handles.append(task)

    async with serve(app) as client:
        await client.get("/")
        proceed.set()
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert handles[0].status is TaskStatus.SUCCEEDED
    assert handles[0].result == "survived"


def shutdown_warning(*unfinished: str) -> str:
    """The warning that names the tasks still unfinished when the grace period ended."""
    return (
        f"Shutting down with {len(unfinished)} background task(s) unfinished: {', '.join(unfinished)}. "
        "Cancelling the unshielded ones; waiting without a time limit for the shielded ones and for sync ones "
        "in a thread, which cannot be interrupted"
    )


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
@pytest.mark.parametrize("shutdown_timeout", [None, 0.05])
async def test_shutdown_cancels_a_running_eager_task_and_waits_for_a_shielded_one(
    caplog: pytest.LogCaptureFixture, shutdown_timeout: float | None
) -> None:
    app = eager_app(shutdown_timeout=shutdown_timeout)
    handles: dict[str, Task[..., Any]] = {}

    async def stuck() -> None:
        await anyio.Event().wait()

    async def outlive(other: Task[[], None]) -> str:
        # Still running when `other` is cancelled by the shutdown, and it keeps going.
        await other.finished.wait()
        await anyio.lowlevel.checkpoint()
        return "finished after the cancellation"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["stuck"] = tasks.task(name="unshielded").schedule(stuck)
        handles["shielded"] = tasks.task(name="shielded", shield=True).schedule(outlive, handles["stuck"])

    async with serve(app) as client:
        await client.get("/")
        assert [handle.status for handle in handles.values()] == [TaskStatus.RUNNING, TaskStatus.RUNNING]

    assert handles["stuck"].status is TaskStatus.CANCELLED
    assert handles["shielded"].status is TaskStatus.SUCCEEDED
    assert handles["shielded"].result == "finished after the cancellation"
    assert fastapi_tasks_logs(caplog) == [
        (logging.WARNING, shutdown_warning("'shielded' (shielded)", "'unshielded'")),
        (logging.WARNING, "Background task 'unshielded' was cancelled before it finished"),
    ]


@needs_eager_start
@asyncio_only
@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "began_in_schedule"), [("spy", True), ("run", True)])
async def test_spy_mode_starts_tasks_eagerly_as_production_does(
    mode: Literal["spy", "run"], began_in_schedule: bool
) -> None:
    """Spy and run mode start tasks through the app's runtime's own spawn: eagerly, as production does."""
    app = eager_app()
    log: list[str] = []

    async def body() -> None:
        log.append("began")
        await anyio.lowlevel.checkpoint()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> bool:
        tasks.schedule(body)
        return bool(log)

    recorder = RecordingScheduler(mode=mode)
    recorder.install(app)
    try:
        async with serve(app) as client:
            seen = (await client.get("/")).json()
            await recorder.drain(TIMEOUT)
    finally:
        recorder.uninstall()

    assert seen is began_in_schedule
    assert [record.status for record in recorder.records] == [TaskStatus.SUCCEEDED]


# --- eager start on trio ------------------------------------------------------------------------


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in `exc`, exception groups flattened (anyio's task groups wrap on trio)."""
    inner = getattr(exc, "exceptions", None)  # BaseExceptionGroup is a builtin from Python 3.11 on
    if isinstance(inner, tuple):
        return [leaf for each in inner for leaf in leaves(each)]
    return [exc]


async def start_lifespan(app: ASGIApp) -> tuple[list[str], BaseException | None]:
    """Drive `app`'s lifespan as a server would: startup, then shutdown. Returns what it sent, and what it raised."""
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message["type"])

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    with anyio.fail_after(TIMEOUT):
        try:
            await app(scope, receive, send)
        except Exception as exc:
            return sent, exc
    return sent, None


@needs_eager_start
@trio_only
@pytest.mark.anyio
async def test_eager_start_on_trio_fails_the_lifespan_startup() -> None:
    _, raised = await start_lifespan(eager_app())

    assert raised is not None, "the lifespan started on trio with eager_start=True"
    [error] = leaves(raised)
    assert type(error) is FastAPITasksError
    assert re.match(NEEDS_ASYNCIO, str(error)), str(error)


@needs_eager_start
@trio_only
@pytest.mark.anyio
async def test_eager_start_on_trio_tells_the_server_that_the_startup_failed() -> None:
    sent, raised = await start_lifespan(eager_app())

    assert raised is not None
    assert sent == ["lifespan.startup.failed"]


# --- the asyncio-native task path ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("shield", [False, True])
@pytest.mark.parametrize("phase", list(Phase))
async def test_each_task_of_the_app_runs_in_a_task_of_its_own(
    anyio_backend: Backend, phase: Phase, shield: bool
) -> None:
    """On asyncio an asyncio task no anyio task group owns; on trio (or an old anyio) one of the app's task group."""
    app = FastAPI()
    add_tasks(app, config=TaskConfig(shield=shield))
    handles: list[Task[..., Any]] = []
    seen: dict[str, object] = {}

    async def body() -> None:
        info = anyio.get_current_task()
        seen.update(name=info.name, parent_id=info.parent_id, request_task=request_tasks[0])
        if anyio_backend == "asyncio":
            current = asyncio.current_task()
            assert current is not None
            seen["asyncio_name"] = current.get_name()
        await anyio.lowlevel.checkpoint()

    request_tasks: list[int] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        request_tasks.append(anyio.get_current_task().id)
        scheduler = {
            Phase.IMMEDIATE: tasks,
            Phase.AFTER_ROUTE: tasks.after_route,
            Phase.AFTER_RESPONSE: tasks.after_response,
        }[phase]
        handles.append(scheduler.task(name="own-task").schedule(body))

    async with serve(app) as client:
        await client.get("/")
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert handles[0].status is TaskStatus.SUCCEEDED
    assert seen["name"] == "own-task"
    if anyio_backend == "asyncio":
        assert seen["asyncio_name"] == "own-task"
    if anyio_backend == "asyncio" and NATIVE_TASKS:
        # No anyio task group spawned it: anyio knows no parent of it.
        assert seen["parent_id"] is None
    else:
        # A child of the app's task group, which the lifespan hosts (on trio, and on an anyio too old for
        # asyncio tasks of the app's own: `_compat.NATIVE_TASKS`): not of the request.
        assert seen["parent_id"] is not None
        assert seen["parent_id"] != seen["request_task"]


@pytest.mark.anyio
async def test_a_task_group_of_ones_own_waits_for_its_tasks() -> None:
    handles: list[Task[..., Any]] = []
    proceed = anyio.Event()
    parents: list[int | None] = []

    async def body() -> str:
        parents.append(anyio.get_current_task().parent_id)
        await proceed.wait()
        # A few turns of the loop after `proceed`: a task that nobody waited for would still be running.
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        return "done"

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            handles.append(TasksScheduler(tg).schedule(body))
            await handles[0].started.wait()
            proceed.set()

    assert handles[0].status is TaskStatus.SUCCEEDED
    assert handles[0].result == "done"
    assert parents == [anyio.get_current_task().id]


@pytest.mark.anyio
async def test_cancelling_a_task_group_of_ones_own_cancels_its_tasks(caplog: pytest.LogCaptureFixture) -> None:
    handles: list[Task[..., Any]] = []

    async def forever() -> None:
        await anyio.Event().wait()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            handles.append(TasksScheduler(tg).task(name="in-my-group").schedule(forever))
            await handles[0].started.wait()
            tg.cancel_scope.cancel()

    assert handles[0].status is TaskStatus.CANCELLED
    assert fastapi_tasks_logs(caplog) == [
        (logging.WARNING, "Background task 'in-my-group' was cancelled before it finished")
    ]
