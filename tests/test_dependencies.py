"""`add_tasks` and the `Tasks` dependency: the three phases, lifespan wiring, discarding, WebSockets, shutdown."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tasks import Phase, Task, TaskConfig, Tasks, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks.errors import (
    FastAPITasksAlreadyInstalledError,
    FastAPITasksShutdownError,
    FastAPITasksUninitializedAppError,
)

Backend = Literal["asyncio", "trio"]
Kind = Literal["sync", "async"]
KINDS: list[Kind] = ["sync", "async"]

# How long a test waits for a signal before it fails instead of hanging. Nothing waits this long
# when the code works: every wait ends as soon as the signal is set.
TIMEOUT = 10.0
# A longer deadline around a whole lifespan, so that a shutdown that hangs fails the test.
SHUTDOWN_TIMEOUT_GUARD = 2 * TIMEOUT

NO_ADD_TASKS = (
    r"^The Tasks dependency is used, but add_tasks\(app\) was not called on this app\. "
    r"Call add_tasks\(app\) right after creating it\.$"
)
NO_LIFESPAN = (
    r"^The Tasks dependency is used, but the app's lifespan is not running, so there is no task group\. "
    r"Run the lifespan: use `with TestClient\(app\) as client:` \(not a bare TestClient\(app\)\), "
    r"or asgi_lifespan\.LifespanManager\(app\) with httpx\.AsyncClient\. Under a server, the lifespan of an app "
    r"mounted in another \(app\.mount\(\.\.\.\)\) never runs: call add_tasks\(\) on the outermost app instead\.$"
)


@asynccontextmanager
async def serve(app: ASGIApp, *, raise_app_exceptions: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield a client for it; leaving the block shuts the app down."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


class Flag:
    """A one-shot signal that task bodies set from the event loop or a worker thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self) -> None:
        """Block (a sync endpoint or the test thread) until the flag is set."""
        assert self._event.wait(TIMEOUT), "the flag was never set"

    async def wait_async(self) -> None:
        """Wait on the event loop until the flag is set."""
        assert await anyio.to_thread.run_sync(self._event.wait, TIMEOUT), "the flag was never set"


def make_job(kind: Kind, label: str, log: list[str], flag: Flag) -> Callable[[], str]:
    """A task body of the given kind that logs `label`, sets `flag` and returns `label`."""

    def sync_job() -> str:
        log.append(label)
        flag.set()
        return label

    async def async_job() -> str:
        log.append(label)
        flag.set()
        return label

    return sync_job if kind == "sync" else async_job  # type: ignore[return-value]


def on_response_end(app: ASGIApp, callback: Callable[[], None]) -> ASGIApp:
    """Wrap `app` so that `callback` runs once the last body message of a response has been sent."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_then_record(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                callback()

        await app(scope, receive, send_then_record)

    return wrapper


def on_shutdown_start(app: ASGIApp, callback: Callable[[], None]) -> ASGIApp:
    """Wrap `app` so that `callback` runs when the server asks the lifespan to shut down."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_then_record() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                callback()
            return message

        await app(scope, receive_then_record if scope["type"] == "lifespan" else receive, send)

    return wrapper


def timeline_app(
    endpoint_kind: Kind, task_kind: Kind, log: list[str], handles: dict[str, Task[..., Any]]
) -> tuple[ASGIApp, Flag]:
    """An app whose endpoint schedules one task in each phase and logs when each thing happens.

    The endpoint returns only once its immediate task has run; the streamed body ends only once the
    after_route task has run. Statuses are logged when the endpoint returns and when the response
    has been sent. Also returns the flag that the after_response task sets.
    """
    app = FastAPI()
    add_tasks(app)
    ran = {phase: Flag() for phase in Phase}

    def schedule_all(tasks: TasksScheduler) -> None:
        handles["immediate"] = tasks.schedule(make_job(task_kind, "immediate", log, ran[Phase.IMMEDIATE]))
        handles["after_route"] = tasks.after_route.schedule(
            make_job(task_kind, "after_route", log, ran[Phase.AFTER_ROUTE])
        )
        handles["after_response"] = tasks.after_response.schedule(
            make_job(task_kind, "after_response", log, ran[Phase.AFTER_RESPONSE])
        )

    def respond() -> StreamingResponse:
        log.append(
            f"endpoint returns: after_route {handles['after_route'].status}, "
            f"after_response {handles['after_response'].status}"
        )

        async def body() -> AsyncIterator[bytes]:
            await ran[Phase.AFTER_ROUTE].wait_async()
            log.append("body")
            yield b"streamed"

        return StreamingResponse(body())

    if endpoint_kind == "sync":

        @app.get("/")
        def sync_endpoint(tasks: Tasks) -> StreamingResponse:
            schedule_all(tasks)
            ran[Phase.IMMEDIATE].wait()
            return respond()

    else:

        @app.get("/")
        async def async_endpoint(tasks: Tasks) -> StreamingResponse:
            schedule_all(tasks)
            await ran[Phase.IMMEDIATE].wait_async()
            return respond()

    def response_sent() -> None:
        log.append(f"response sent: after_response {handles['after_response'].status}")

    return on_response_end(app, response_sent), ran[Phase.AFTER_RESPONSE]


EXPECTED_TIMELINE = [
    "immediate",
    "endpoint returns: after_route pending, after_response pending",
    "after_route",
    "body",
    "response sent: after_response pending",
    "after_response",
]


@pytest.mark.anyio
@pytest.mark.parametrize("task_kind", KINDS)
@pytest.mark.parametrize("endpoint_kind", KINDS)
async def test_each_phase_starts_its_tasks_at_its_moment(endpoint_kind: Kind, task_kind: Kind) -> None:
    log: list[str] = []
    handles: dict[str, Task[..., Any]] = {}
    app, _ = timeline_app(endpoint_kind, task_kind, log, handles)

    async with serve(app) as client:
        response = await client.get("/")
        assert response.status_code == 200
        assert response.text == "streamed"
        with anyio.fail_after(TIMEOUT):
            for handle in handles.values():
                await handle.wait()

    assert log == EXPECTED_TIMELINE
    assert {name: (handle.phase, handle.status, handle.result) for name, handle in handles.items()} == {
        "immediate": (Phase.IMMEDIATE, TaskStatus.SUCCEEDED, "immediate"),
        "after_route": (Phase.AFTER_ROUTE, TaskStatus.SUCCEEDED, "after_route"),
        "after_response": (Phase.AFTER_RESPONSE, TaskStatus.SUCCEEDED, "after_response"),
    }


@pytest.mark.parametrize("task_kind", KINDS)
@pytest.mark.parametrize("endpoint_kind", KINDS)
def test_each_phase_starts_its_tasks_at_its_moment_with_testclient(
    anyio_backend: Backend, endpoint_kind: Kind, task_kind: Kind
) -> None:
    log: list[str] = []
    handles: dict[str, Task[..., Any]] = {}
    app, after_response_ran = timeline_app(endpoint_kind, task_kind, log, handles)

    with TestClient(app, backend=anyio_backend) as client:
        response = client.get("/")
        assert response.status_code == 200
        assert response.text == "streamed"
        after_response_ran.wait()

    assert log == EXPECTED_TIMELINE


@pytest.mark.anyio
async def test_sync_tasks_run_in_a_worker_thread_and_async_tasks_on_the_event_loop() -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    def sync_job() -> int:
        return threading.get_ident()

    async def async_job() -> int:
        return threading.get_ident()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.schedule(sync_job))
        handles.append(tasks.after_route.schedule(async_job))

    async with serve(app) as client:
        await client.get("/")
        with anyio.fail_after(TIMEOUT):
            for handle in handles:
                await handle.wait()

    sync_thread, async_thread = (handle.result for handle in handles)
    assert async_thread == threading.get_ident()
    assert sync_thread != threading.get_ident()


# --- add_tasks --------------------------------------------------------------------------------


def test_add_tasks_twice_on_one_app_raises() -> None:
    app = FastAPI()
    add_tasks(app)

    with pytest.raises(
        FastAPITasksAlreadyInstalledError,
        match=(
            r"^add_tasks\(\) was already called on <fastapi\.applications\.FastAPI object at 0x[0-9a-f]+>; "
            r"call it once per app \(a second call would stack a second task group and lifespan\)\.$"
        ),
    ):
        add_tasks(app)


def test_add_tasks_needs_a_fastapi_app() -> None:
    with pytest.raises(
        TypeError, match=r"^add_tasks\(\) needs a FastAPI app, not <starlette\.applications\.Starlette object at 0x"
    ):
        add_tasks(Starlette())  # type: ignore[arg-type]


def test_add_tasks_needs_a_task_config() -> None:
    with pytest.raises(TypeError, match=r"^config must be a TaskConfig, not \{'shield': True\}$"):
        add_tasks(FastAPI(), config={"shield": True})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shutdown_timeout", "error", "message"),
    [
        ("5", TypeError, r"^shutdown_timeout must be a number of seconds or None, not '5'$"),
        (True, TypeError, r"^shutdown_timeout must be a number of seconds or None, not True$"),
        (-1, ValueError, r"^shutdown_timeout must be >= 0 seconds, not -1$"),
        (-0.5, ValueError, r"^shutdown_timeout must be >= 0 seconds, not -0\.5$"),
    ],
)
def test_add_tasks_rejects_a_bad_shutdown_timeout(
    shutdown_timeout: object, error: type[Exception], message: str
) -> None:
    app = FastAPI()

    with pytest.raises(error, match=message):
        add_tasks(app, shutdown_timeout=shutdown_timeout)  # type: ignore[arg-type]

    # A rejected call leaves the app untouched: a corrected call still works.
    add_tasks(app, shutdown_timeout=0)


def test_add_tasks_keeps_the_apps_own_lifespan_and_its_state(anyio_backend: Backend) -> None:
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        log.append("app starts")
        yield {"greeting": "hello"}
        log.append("app stops")

    app = FastAPI(lifespan=lifespan)
    add_tasks(app)

    @app.get("/")
    async def endpoint(request: Request, tasks: Tasks) -> dict[str, bool | str]:
        return {
            "greeting": request.state.greeting,
            "same task group": request.state.fastapi_tasks_tg is tasks.tg,
        }

    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").json() == {"greeting": "hello", "same task group": True}
        assert log == ["app starts"]
    assert log == ["app starts", "app stops"]


@pytest.mark.anyio
async def test_tasks_end_before_the_apps_own_lifespan_tears_down() -> None:
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        log.append("app stops")

    app = FastAPI(lifespan=lifespan)
    add_tasks(app)

    async def stuck() -> None:
        await anyio.Event().wait()

    async def cleanup(other: Task[[], None]) -> None:
        await other.finished.wait()
        log.append("shielded task ends")

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        other = tasks.schedule(stuck)
        tasks.task(shield=True).schedule(cleanup, other)

    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):
        async with serve(app) as client:
            await client.get("/")

    assert log == ["shielded task ends", "app stops"]


# --- a missing add_tasks or lifespan ------------------------------------------------------------


def test_tasks_without_add_tasks_raises(anyio_backend: Backend) -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        pytest.fail("the endpoint must not be reached")  # pragma: no cover

    with (
        TestClient(app, backend=anyio_backend) as client,
        pytest.raises(FastAPITasksUninitializedAppError, match=NO_ADD_TASKS),
    ):
        client.get("/")


def test_tasks_without_the_lifespan_raises(anyio_backend: Backend) -> None:
    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    def endpoint(tasks: Tasks) -> None:
        pytest.fail("the endpoint must not be reached")  # pragma: no cover

    client = TestClient(app, backend=anyio_backend)  # no `with`: the lifespan does not run
    with pytest.raises(FastAPITasksUninitializedAppError, match=NO_LIFESPAN):
        client.get("/")


@pytest.mark.anyio
async def test_tasks_without_add_tasks_raises_with_httpx() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        pytest.fail("the endpoint must not be reached")  # pragma: no cover

    async with serve(app) as client:
        with pytest.raises(FastAPITasksUninitializedAppError, match=NO_ADD_TASKS):
            await client.get("/")


@pytest.mark.anyio
async def test_tasks_without_the_lifespan_raises_with_httpx() -> None:
    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        pytest.fail("the endpoint must not be reached")  # pragma: no cover

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        with pytest.raises(FastAPITasksUninitializedAppError, match=NO_LIFESPAN):
            await client.get("/")


# --- an endpoint that raises --------------------------------------------------------------------


def fail_plainly() -> Exception:
    return RuntimeError("the endpoint broke")


def fail_with_http_exception() -> Exception:
    return HTTPException(status_code=409, detail="conflict")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("make_error", "status_code", "error_name"),
    [(fail_plainly, 500, "RuntimeError"), (fail_with_http_exception, 409, "HTTPException")],
    ids=["exception", "http_exception"],
)
async def test_an_endpoint_that_raises_discards_its_deferred_tasks(
    caplog: pytest.LogCaptureFixture, make_error: Callable[[], Exception], status_code: int, error_name: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="fastapi_tasks")
    app = FastAPI()
    add_tasks(app)
    release = anyio.Event()
    handles: dict[str, Task[..., Any]] = {}

    async def immediate_job() -> str:
        await release.wait()
        return "went on"

    def deferred_job() -> None:
        pytest.fail("a discarded task must not run")  # pragma: no cover

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["immediate"] = tasks.schedule(immediate_job)
        handles["route"] = tasks.after_route.task(name="audit").schedule(deferred_job)
        handles["response1"] = tasks.after_response.task(name="notify").schedule(deferred_job)
        handles["response2"] = tasks.after_response.task(name="email").schedule(deferred_job)
        with anyio.fail_after(TIMEOUT):
            await handles["immediate"].started.wait()
        raise make_error()

    async with serve(app, raise_app_exceptions=False) as client:
        response = await client.get("/")
        assert response.status_code == status_code

        for name in ("route", "response1", "response2"):
            handle = handles[name]
            assert handle.status is TaskStatus.DISCARDED
            assert handle.done
            assert handle.finished.is_set()
            assert not handle.started.is_set()

        # The immediate task had started; the endpoint's failure does not stop it.
        assert handles["immediate"].status is TaskStatus.RUNNING
        release.set()
        with anyio.fail_after(TIMEOUT):
            await handles["immediate"].wait()
        assert handles["immediate"].result == "went on"

    assert [record.getMessage() for record in caplog.records if record.msg.startswith("Discarded")] == [
        f"Discarded 1 after_route task(s) because the endpoint or one of its dependencies raised {error_name}: 'audit'",
        f"Discarded 2 after_response task(s) because the endpoint or one of its dependencies raised {error_name}: "
        "'notify', 'email'",
    ]
    assert {record.levelno for record in caplog.records if record.msg.startswith("Discarded")} == {logging.INFO}


def test_a_sync_endpoint_that_raises_discards_its_deferred_tasks(anyio_backend: Backend) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    def deferred_job() -> None:
        pytest.fail("a discarded task must not run")  # pragma: no cover

    @app.get("/")
    def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.after_route.schedule(deferred_job))
        handles.append(tasks.after_response.schedule(deferred_job))
        raise RuntimeError("the endpoint broke")

    with TestClient(app, backend=anyio_backend, raise_server_exceptions=False) as client:
        assert client.get("/").status_code == 500

    assert [handle.status for handle in handles] == [TaskStatus.DISCARDED, TaskStatus.DISCARDED]


# --- WebSockets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task_kind", KINDS)
def test_tasks_in_a_websocket_endpoint(anyio_backend: Backend, task_kind: Kind) -> None:
    app = FastAPI()
    add_tasks(app)
    log: list[str] = []
    ran = {phase: Flag() for phase in Phase}

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket, tasks: Tasks) -> None:
        await websocket.accept()
        tasks.schedule(make_job(task_kind, "immediate", log, ran[Phase.IMMEDIATE]))
        await ran[Phase.IMMEDIATE].wait_async()
        route = tasks.after_route.schedule(make_job(task_kind, "after_route", log, ran[Phase.AFTER_ROUTE]))
        response = tasks.after_response.schedule(make_job(task_kind, "after_response", log, ran[Phase.AFTER_RESPONSE]))
        text = await websocket.receive_text()
        await websocket.send_text(f"{text}: after_route {route.status}, after_response {response.status}")
        await websocket.close()
        log.append("handler returns")

    with TestClient(app, backend=anyio_backend) as client:
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("hello")
            assert websocket.receive_text() == "hello: after_route pending, after_response pending"
        ran[Phase.AFTER_ROUTE].wait()
        ran[Phase.AFTER_RESPONSE].wait()

    assert log[:2] == ["immediate", "handler returns"]
    assert sorted(log[2:]) == ["after_response", "after_route"]


# --- shutdown -----------------------------------------------------------------------------------


async def stuck() -> None:
    """A task that would never end on its own."""
    await anyio.Event().wait()


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "fastapi_tasks" and record.levelno == logging.WARNING
    ]


def shutdown_warning(*unfinished: str) -> str:
    """The warning that names the tasks still unfinished when the grace period ended."""
    return (
        f"Shutting down with {len(unfinished)} background task(s) unfinished: {', '.join(unfinished)}. "
        "Cancelling the unshielded ones; waiting without a time limit for the shielded ones and for sync ones "
        "in a thread, which cannot be interrupted"
    )


@pytest.mark.anyio
async def test_a_task_that_ends_within_the_shutdown_timeout_finishes(caplog: pytest.LogCaptureFixture) -> None:
    shutdown_began = anyio.Event()
    app = FastAPI()
    add_tasks(app, shutdown_timeout=TIMEOUT)
    handles: list[Task[..., Any]] = []

    async def finish_once_shutdown_begins() -> str:
        await shutdown_began.wait()
        # Still running after the shutdown began: without a grace period this checkpoint is cancelled.
        await anyio.lowlevel.checkpoint()
        return "finished"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.schedule(finish_once_shutdown_begins))

    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):
        async with serve(on_shutdown_start(app, shutdown_began.set)) as client:
            await client.get("/")
            with anyio.fail_after(TIMEOUT):
                await handles[0].started.wait()
            assert not shutdown_began.is_set()

    [handle] = handles
    assert handle.status is TaskStatus.SUCCEEDED
    assert handle.result == "finished"
    assert warnings_in(caplog) == []


@pytest.mark.anyio
async def test_a_task_that_outlasts_the_shutdown_timeout_is_cancelled_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    add_tasks(app, shutdown_timeout=0.05)
    handles: list[Task[..., None]] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.task(name="nightly-report").schedule(stuck))

    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):
        async with serve(app) as client:
            await client.get("/")
            with anyio.fail_after(TIMEOUT):
                await handles[0].started.wait()

    assert handles[0].status is TaskStatus.CANCELLED
    assert handles[0].finished.is_set()
    assert warnings_in(caplog) == [
        shutdown_warning("'nightly-report'"),
        "Background task 'nightly-report' was cancelled before it finished",
    ]


@pytest.mark.anyio
async def test_without_a_shutdown_timeout_running_tasks_are_cancelled_and_each_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., None]] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.task(name="first").schedule(stuck))
        handles.append(tasks.task(name="second").schedule(stuck))

    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):
        async with serve(app) as client:
            await client.get("/")
            with anyio.fail_after(TIMEOUT):
                for handle in handles:
                    await handle.started.wait()

    assert [handle.status for handle in handles] == [TaskStatus.CANCELLED, TaskStatus.CANCELLED]
    [summary, *each] = warnings_in(caplog)
    assert summary == shutdown_warning("'first'", "'second'")
    assert sorted(each) == [
        "Background task 'first' was cancelled before it finished",
        "Background task 'second' was cancelled before it finished",
    ]


def test_leaving_the_testclient_block_cancels_running_tasks(
    anyio_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., None]] = []

    @app.get("/")
    def endpoint(tasks: Tasks) -> bool:
        handles.append(tasks.task(name="stuck-sync-endpoint-task").schedule(stuck))
        return True

    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").json() is True

    assert handles[0].status is TaskStatus.CANCELLED
    assert warnings_in(caplog) == [
        shutdown_warning("'stuck-sync-endpoint-task'"),
        "Background task 'stuck-sync-endpoint-task' was cancelled before it finished",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("shutdown_timeout", [None, 0.05])
async def test_a_shielded_task_finishes_at_shutdown(
    caplog: pytest.LogCaptureFixture, shutdown_timeout: float | None
) -> None:
    app = FastAPI()
    add_tasks(app, shutdown_timeout=shutdown_timeout)
    handles: dict[str, Task[..., Any]] = {}

    async def outlive(other: Task[[], None]) -> str:
        # Still running when `other` is cancelled by the shutdown, and it keeps going.
        await other.finished.wait()
        await anyio.lowlevel.checkpoint()
        return "finished after the cancellation"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["stuck"] = tasks.task(name="unshielded").schedule(stuck)
        handles["shielded"] = tasks.task(name="shielded", shield=True).schedule(outlive, handles["stuck"])

    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):
        async with serve(app) as client:
            await client.get("/")
            with anyio.fail_after(TIMEOUT):
                await handles["shielded"].started.wait()

    assert handles["stuck"].status is TaskStatus.CANCELLED
    assert handles["shielded"].status is TaskStatus.SUCCEEDED
    assert handles["shielded"].result == "finished after the cancellation"
    assert warnings_in(caplog) == [
        shutdown_warning("'shielded' (shielded)", "'unshielded'"),
        "Background task 'unshielded' was cancelled before it finished",
    ]


@pytest.mark.anyio
async def test_an_app_wide_shield_applies_to_every_task() -> None:
    app = FastAPI()
    add_tasks(app, config=TaskConfig(shield=True))
    handles: dict[str, Task[..., Any]] = {}

    async def outlive(other: Task[[], None]) -> str:
        await other.finished.wait()
        return "finished"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["unshielded"] = tasks.task(shield=False).schedule(stuck)
        handles["inherits"] = tasks.after_response.schedule(outlive, handles["unshielded"])

    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):
        async with serve(app) as client:
            await client.get("/")
            with anyio.fail_after(TIMEOUT):
                await handles["inherits"].started.wait()

    assert handles["unshielded"].status is TaskStatus.CANCELLED
    assert handles["inherits"].status is TaskStatus.SUCCEEDED


def late_job() -> None:
    pytest.fail("a task scheduled after shutdown must not run")  # pragma: no cover


SHUT_DOWN = r"^Cannot start 'late_job': the app is shutting down and its tasks were cancelled\.$"


@pytest.mark.anyio
async def test_scheduling_after_shutdown_raises() -> None:
    app = FastAPI()
    add_tasks(app)
    schedulers: list[TasksScheduler] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        schedulers.append(tasks)

    async with serve(app) as client:
        await client.get("/")

    with pytest.raises(FastAPITasksShutdownError, match=SHUT_DOWN):
        schedulers[0].schedule(late_job)


@pytest.mark.anyio
async def test_a_shielded_task_that_schedules_during_shutdown_gets_an_error() -> None:
    app = FastAPI()
    add_tasks(app)
    handles: dict[str, Task[..., Any]] = {}

    async def schedule_more(tasks: TasksScheduler, other: Task[[], None]) -> None:
        await other.finished.wait()
        tasks.schedule(late_job)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["stuck"] = tasks.schedule(stuck)
        handles["shielded"] = tasks.task(shield=True).schedule(schedule_more, tasks, handles["stuck"])

    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):
        async with serve(app) as client:
            await client.get("/")
            with anyio.fail_after(TIMEOUT):
                await handles["shielded"].started.wait()

    shielded = handles["shielded"]
    assert shielded.status is TaskStatus.FAILED
    assert isinstance(shielded.exception, FastAPITasksShutdownError)
    assert re.match(SHUT_DOWN, str(shielded.exception))


@pytest.mark.anyio
async def test_a_batch_built_outside_a_request_and_never_started_is_cancelled_and_named_at_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A scheduler built inside a task has no request to start its batches: its code starts them by hand.
    # Tasks on one it never started must not disappear without a trace.
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    async def forgotten() -> None:
        pytest.fail("a task of a batch that was never started must not run")  # pragma: no cover

    async def parent() -> None:
        scheduler = TasksScheduler()
        handles.append(scheduler.after_response.task(name="forgotten").schedule(forgotten))
        started = scheduler.after_route.task(name="started by hand").schedule(anyio.lowlevel.checkpoint)
        handles.append(started)
        scheduler.after_route.__start__(scheduler)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.schedule(parent))

    with anyio.fail_after(SHUTDOWN_TIMEOUT_GUARD):
        async with serve(app) as client:
            await client.get("/")
            with anyio.fail_after(TIMEOUT):
                await handles[0].wait()
                await handles[2].wait()
            assert handles[1].status is TaskStatus.PENDING

    assert [handle.status for handle in handles] == [TaskStatus.SUCCEEDED, TaskStatus.CANCELLED, TaskStatus.SUCCEEDED]
    assert not handles[1].started.is_set()
    assert warnings_in(caplog) == [
        "Cancelled 1 after_response task(s) whose batch was never started: 'forgotten'. A TasksScheduler built "
        "outside a request (in a task, or in the lifespan) starts its batches by hand: batch.__start__(scheduler)"
    ]


@pytest.mark.anyio
async def test_a_server_without_lifespan_state_is_told_that_the_startup_failed() -> None:
    # Raising before the first receive() would make the server serve without the lifespan (and its tasks).
    app = FastAPI()
    add_tasks(app)
    incoming: list[Message] = [{"type": "lifespan.startup"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
    with pytest.raises(RuntimeError, match=r"needs an ASGI server that supports lifespan state") as excinfo:
        await app(scope, receive, send)
    assert sent == [{"type": "lifespan.startup.failed", "message": str(excinfo.value)}]
