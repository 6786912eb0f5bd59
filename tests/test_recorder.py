"""`RecordingScheduler`: standalone use, installation on an app, the three modes and their guarantees."""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
import sys
import threading
from collections.abc import Iterator
from typing import Any, Literal

import anyio
import anyio.lowlevel
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from freezegun import freeze_time
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tasks import (
    Phase,
    Task,
    TaskConfig,
    Tasks,
    TasksScheduler,
    TaskStatus,
    add_tasks,
    get_tasks_scheduler,
)
from fastapi_tasks.errors import FastAPITasksError, FastAPITasksUninitializedAppError, TaskNotFinishedError
from fastapi_tasks_testing import RecordingScheduler, RequestInfo, TaskRecord

Backend = Literal["asyncio", "trio"]

LOG: list[str] = []
"""What the tasks and the app did, in order; cleared around every test."""


@pytest.fixture(autouse=True)
def _clear_log() -> Iterator[None]:
    LOG.clear()
    yield
    LOG.clear()


# --- tasks -------------------------------------------------------------------------------------


def audit(user: str) -> str:
    LOG.append(f"audit {user}")
    return f"audited {user}"


async def send_email(address: str, *, subject: str = "Welcome") -> str:
    LOG.append(f"email {address} {subject}")
    return f"sent to {address}"


async def slow(label: str) -> None:
    # Checkpoints give any other task that could run now the chance to interleave.
    LOG.append(f"{label} start")
    for _ in range(5):
        await anyio.lowlevel.checkpoint()
    LOG.append(f"{label} end")


def explode(reason: str) -> None:
    raise ValueError(reason)


def charge_card(amount: int) -> str:
    LOG.append(f"charge {amount}")
    return f"charged {amount}"


async def send_newsletter() -> None:
    LOG.append("newsletter")


def register_user(tasks: TasksScheduler, email: str) -> None:
    """Code under test that takes a scheduler, as a unit test would see it."""
    tasks.schedule(audit, email)
    tasks.after_route.schedule(audit, "after " + email)
    tasks.after_response.task(name="welcome").schedule(send_email, email, subject="Hi")


# --- apps --------------------------------------------------------------------------------------


class ResponseSentMarker:
    """ASGI middleware that logs "response sent" once the last body chunk was handed to the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_mark(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                LOG.append("response sent")

        await self.app(scope, receive, send_and_mark)


def make_app(*, sync_endpoint: bool = False, config: TaskConfig | None = None) -> FastAPI:
    app = FastAPI()
    add_tasks(app, config=config)
    app.add_middleware(ResponseSentMarker)

    if sync_endpoint:

        @app.post("/signup")
        def signup_sync(email: str, tasks: Tasks) -> dict[str, str]:
            tasks.schedule(audit, email)
            tasks.after_route.schedule(audit, "after " + email)
            tasks.after_response.schedule(send_email, email)
            LOG.append("endpoint")
            return {"email": email}

    else:

        @app.post("/signup")
        async def signup(email: str, tasks: Tasks) -> dict[str, str]:
            tasks.schedule(audit, email)
            tasks.after_route.schedule(audit, "after " + email)
            tasks.after_response.schedule(send_email, email)
            LOG.append("endpoint")
            return {"email": email}

    @app.post("/order")
    async def order(tasks: Tasks) -> dict[str, str]:
        tasks.schedule(slow, "immediate")
        tasks.after_route.schedule(slow, "route 1")
        tasks.after_route.schedule(slow, "route 2")
        tasks.after_response.schedule(slow, "response 1")
        tasks.after_response.schedule(slow, "response 2")
        return {}

    @app.post("/boom")
    async def boom(tasks: Tasks) -> dict[str, str]:
        tasks.schedule(audit, "boom")
        tasks.after_route.schedule(audit, "never")
        tasks.after_response.schedule(send_email, "never@b.c")
        raise RuntimeError("the endpoint failed")

    @app.post("/checkout")
    async def checkout(tasks: Tasks) -> dict[str, str]:
        tasks.task(shield=True).schedule(charge_card, 42)
        tasks.after_response.schedule(send_newsletter)
        return {}

    return app


@pytest.fixture
def app() -> FastAPI:
    return make_app()


# --- standalone --------------------------------------------------------------------------------


def test_standalone_recorder_records_pending_tasks() -> None:
    recorder = RecordingScheduler()

    register_user(recorder, "a@b.c")

    assert isinstance(recorder, TasksScheduler)
    assert [(r.phase, r.name, r.args, r.kwargs, r.status, r.request) for r in recorder.records] == [
        (Phase.IMMEDIATE, "audit", ("a@b.c",), {}, TaskStatus.PENDING, None),
        (Phase.AFTER_ROUTE, "audit", ("after a@b.c",), {}, TaskStatus.PENDING, None),
        (Phase.AFTER_RESPONSE, "welcome", ("a@b.c",), {"subject": "Hi"}, TaskStatus.PENDING, None),
    ]
    assert LOG == []


def test_standalone_run_pending_sync_runs_phase_by_phase() -> None:
    recorder = RecordingScheduler()
    register_user(recorder, "a@b.c")

    ran = recorder.run_pending_sync(phase="after_response")

    assert [r.name for r in ran] == ["welcome"]
    assert LOG == ["email a@b.c Hi"]
    assert [r.status for r in recorder.records] == [TaskStatus.PENDING, TaskStatus.PENDING, TaskStatus.SUCCEEDED]

    ran = recorder.run_pending_sync()

    assert [r.seq for r in ran] == [1, 2]
    assert LOG == ["email a@b.c Hi", "audit a@b.c", "audit after a@b.c"]
    assert [r.order for r in recorder.records] == [2, 3, 1]
    assert [r.result for r in recorder.records] == ["audited a@b.c", "audited after a@b.c", "sent to a@b.c"]
    assert recorder.run_pending_sync() == []


def test_run_pending_runs_the_tasks_its_tasks_schedule_in_their_phases_turn() -> None:
    recorder = RecordingScheduler()

    def follow_up(label: str) -> None:
        LOG.append(label)
        if label == "immediate":
            recorder.after_route.schedule(follow_up, "after_route, from the immediate task")
        if label == "after_route":
            recorder.schedule(follow_up, "immediate, from an after_route task")

    recorder.schedule(follow_up, "immediate")
    recorder.after_route.schedule(follow_up, "after_route")
    recorder.after_response.schedule(follow_up, "after_response")

    ran = recorder.run_pending_sync()

    # The immediate task scheduled later runs before the after_response phase goes on.
    assert LOG == [
        "immediate",
        "after_route",
        "after_route, from the immediate task",
        "immediate, from an after_route task",
        "after_response",
    ]
    assert [r.seq for r in ran] == [1, 2, 4, 5, 3]
    assert all(r.status is TaskStatus.SUCCEEDED for r in recorder.records)


def test_run_pending_gives_up_on_a_task_that_reschedules_itself_for_ever() -> None:
    recorder = RecordingScheduler()

    def poll() -> None:
        recorder.task(name="poll").schedule(poll)

    recorder.task(name="poll").schedule(poll)
    with pytest.raises(
        RuntimeError,
        match=r"^run_pending\(\) gave up after 1,000 passes: the tasks it runs keep scheduling more "
        r"\(still pending: 'poll'\)\. Stand in for the task that reschedules itself with "
        r"tasks_recorder\.replace\(task, fake\)\.$",
    ):
        recorder.run_pending_sync()

    recorder.replace("poll", lambda: None)
    assert len(recorder.run_pending_sync()) == 1
    assert recorder.filter(status="pending") == []


@pytest.mark.anyio
async def test_standalone_run_pending_async(anyio_backend: Backend) -> None:
    recorder = RecordingScheduler()
    register_user(recorder, "a@b.c")

    ran = await recorder.run_pending(phase=Phase.AFTER_ROUTE)
    assert [(r.phase, r.args) for r in ran] == [(Phase.AFTER_ROUTE, ("after a@b.c",))]

    ran = await recorder.run_pending()
    assert [r.phase for r in ran] == [Phase.IMMEDIATE, Phase.AFTER_RESPONSE]
    assert LOG == ["audit after a@b.c", "audit a@b.c", "email a@b.c Hi"]
    assert all(r.status is TaskStatus.SUCCEEDED for r in recorder.records)


@pytest.mark.anyio
async def test_sync_helpers_refuse_to_run_inside_an_event_loop(anyio_backend: Backend) -> None:
    recorder = RecordingScheduler()
    with pytest.raises(
        RuntimeError,
        match=r"^run_pending_sync\(\) was called inside an event loop; "
        r"in an async test use `await run_pending\(\)` instead\.$",
    ):
        recorder.run_pending_sync()
    with pytest.raises(
        RuntimeError,
        match=r"^shutdown_sync\(\) was called inside an event loop; "
        r"in an async test use `await shutdown\(\)` instead\.$",
    ):
        recorder.shutdown_sync()


def test_standalone_recorder_has_no_task_group() -> None:
    with pytest.raises(FastAPITasksError, match=r"^A RecordingScheduler used outside a request has no task group\.$"):
        _ = RecordingScheduler().tg


def test_wrong_arguments_fail_the_task_as_in_production() -> None:
    # Production does not check a task's arguments where it is scheduled (binding them to the
    # signature would cost about 3 us per task, see benchmarks/argument_check.py): the task fails
    # when it runs. The recorder does the same, and reports it like any failure.
    recorder = RecordingScheduler()
    record: Task[..., Any] = recorder.schedule(audit)
    assert record.status is TaskStatus.PENDING
    recorder.run_pending_sync()
    assert record.status.value == "failed"  # (mypy narrowed the status to PENDING above)
    assert isinstance(record.exception, TypeError)
    assert "missing 1 required positional argument: 'user'" in str(record.exception)
    with pytest.raises(TypeError, match=r"^Cannot schedule 42: it is not callable\. "):
        recorder.after_route.schedule(42)  # type: ignore[call-overload]
    assert recorder.records == [record]


def test_unknown_mode_and_bad_config_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^Unknown tasks_recorder mode 'replay'; use one of 'run', 'record', 'spy'\.$"
    ):
        RecordingScheduler(mode="replay")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^config must be a TaskConfig, not \{'shield': True\}$"):
        RecordingScheduler(config={"shield": True})  # type: ignore[arg-type]


def test_standalone_config_is_merged_like_production() -> None:
    def on_error(task: Task[..., Any], exc: Exception) -> None:
        pass

    recorder = RecordingScheduler(config=TaskConfig(shield=True, on_error=on_error))
    inherited = recorder.schedule(audit, "x")
    overridden = recorder.after_route.task(name="quiet audit", shield=False).schedule(audit, "y")

    assert isinstance(inherited, TaskRecord)
    assert isinstance(overridden, TaskRecord)
    assert (inherited.name, inherited.shield, inherited.on_error) == ("audit", True, on_error)
    assert (overridden.name, overridden.shield, overridden.on_error) == ("quiet audit", False, on_error)


# --- installing ----------------------------------------------------------------------------------


def test_install_overrides_tasks_and_uninstall_restores_the_previous_override() -> None:
    app = make_app()

    async def previous() -> TasksScheduler:
        raise AssertionError("not used")

    app.dependency_overrides[get_tasks_scheduler] = previous
    recorder = RecordingScheduler()

    recorder.install(app)
    line = sys._getframe().f_lineno - 1

    assert recorder.app is app
    assert app.dependency_overrides[get_tasks_scheduler] is not previous
    with pytest.raises(
        FastAPITasksError,
        match=rf"^The recorder is already installed, by tasks_recorder\.install\(app\) at test_recorder\.py:{line}; "
        r"call tasks_recorder\.uninstall\(\) before installing it on another app\.$",
    ):
        recorder.install(app)

    recorder.uninstall()

    assert app.dependency_overrides == {get_tasks_scheduler: previous}
    assert recorder.app is None
    recorder.uninstall()  # a second call does nothing
    assert app.dependency_overrides == {get_tasks_scheduler: previous}


def test_install_names_the_call_outside_the_toolkit(app: FastAPI) -> None:
    # A helper of the toolkit's own that installs the recorder is not where the test installed it.
    namespace: dict[str, Any] = {"__name__": "fastapi_tasks_testing._a_helper"}
    exec("def install_on(recorder, app):\n    recorder.install(app)\n", namespace)
    recorder = RecordingScheduler()

    namespace["install_on"](recorder, app)
    line = sys._getframe().f_lineno - 1

    try:
        with pytest.raises(
            FastAPITasksError,
            match=rf"^The recorder is already installed, by tasks_recorder\.install\(app\) at test_recorder\.py:{line};"
            r" call tasks_recorder\.uninstall\(\) before installing it on another app\.$",
        ):
            recorder.install(app)
    finally:
        recorder.uninstall()


def test_uninstall_removes_the_override_when_there_was_none() -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)
    TestClient(app).post("/signup", params={"email": "a@b.c"})
    recorder.uninstall()

    assert app.dependency_overrides == {}
    # Without the recorder and without the lifespan, the production dependency explains itself.
    with pytest.raises(FastAPITasksUninitializedAppError, match=r"the app's lifespan is not running"):
        TestClient(app).post("/signup", params={"email": "a@b.c"})


def test_install_reaches_mounted_sub_applications(anyio_backend: Backend) -> None:
    # A mounted FastAPI app resolves its dependencies with its own overrides, not its parent's; in
    # production its `Tasks` uses the parent's lifespan, so under test it must use the parent's recorder.
    app = make_app()
    v1 = FastAPI()

    @v1.post("/audit")
    async def audit_v1(tasks: Tasks) -> None:
        tasks.after_response.schedule(audit, "v1")

    async def previous() -> TasksScheduler:
        raise AssertionError("not used")

    v1.dependency_overrides[get_tasks_scheduler] = previous
    admin = FastAPI()

    @admin.post("/audit")
    def audit_admin(tasks: Tasks) -> None:
        tasks.schedule(audit, "admin")

    app.mount("/v1", v1)
    app.mount("/latest", v1)
    app.router.routes.append(Mount("/internal", routes=[Mount("/admin", admin)]))
    recorder = RecordingScheduler()

    recorder.install(app)
    client = TestClient(app, backend=anyio_backend)
    client.post("/v1/audit")
    client.post("/internal/admin/audit")
    recorder.uninstall()

    assert [(str(r.request), r.status, r.args) for r in recorder.records] == [
        ("POST /v1/audit", TaskStatus.SUCCEEDED, ("v1",)),
        ("POST /internal/admin/audit", TaskStatus.SUCCEEDED, ("admin",)),
    ]
    assert v1.dependency_overrides == {get_tasks_scheduler: previous}
    assert admin.dependency_overrides == {}


def test_install_needs_a_fastapi_app() -> None:
    with pytest.raises(TypeError, match=r"^tasks_recorder\.install\(\) needs a FastAPI app, not 'app'$"):
        RecordingScheduler().install("app")  # type: ignore[arg-type]


# --- run mode -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sync_endpoint", [False, True], ids=["async endpoint", "sync endpoint"])
def test_run_mode_with_testclient_without_lifespan(sync_endpoint: bool, anyio_backend: Backend) -> None:
    app = make_app(sync_endpoint=sync_endpoint)
    recorder = RecordingScheduler()
    recorder.install(app)

    response = TestClient(app, backend=anyio_backend).post("/signup", params={"email": "a@b.c"})

    assert response.json() == {"email": "a@b.c"}
    # As in production, the immediate task runs while the request goes on, the after_response one after the
    # response was sent; the sync after_route one, whose worker thread production races against the rest of
    # the request, begins once the request's ASGI call has returned (run mode makes it lose that race).
    assert set(LOG) == {"endpoint", "audit a@b.c", "audit after a@b.c", "response sent", "email a@b.c Welcome"}
    assert LOG.index("response sent") < LOG.index("email a@b.c Welcome")
    assert LOG.index("response sent") < LOG.index("audit after a@b.c")
    assert [(r.phase, r.status, r.result) for r in recorder.records] == [
        (Phase.IMMEDIATE, TaskStatus.SUCCEEDED, "audited a@b.c"),
        (Phase.AFTER_ROUTE, TaskStatus.SUCCEEDED, "audited after a@b.c"),
        (Phase.AFTER_RESPONSE, TaskStatus.SUCCEEDED, "sent to a@b.c"),
    ]


def test_run_mode_runs_a_batch_started_by_hand_once(anyio_backend: Backend) -> None:
    app = make_app()

    @app.post("/by-hand")
    async def by_hand(tasks: Tasks) -> None:
        tasks.after_route.schedule(audit, "by hand")
        tasks.after_route.__start__(tasks)  # as fastapi-tasks 0.1.0's own dependency did

    recorder = RecordingScheduler()
    recorder.install(app)
    assert TestClient(app, backend=anyio_backend).post("/by-hand").status_code == 200

    # Started once, by hand, inside the endpoint: it runs once, while the request goes on.
    assert sorted(LOG) == ["audit by hand", "response sent"]
    [record] = recorder.records
    assert (record.phase, record.status) == (Phase.AFTER_ROUTE, TaskStatus.SUCCEEDED)


@pytest.mark.anyio
async def test_run_mode_with_asyncclient_without_lifespan(anyio_backend: Backend) -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/signup", params={"email": "a@b.c"})

    assert response.json() == {"email": "a@b.c"}
    assert LOG[0] == "endpoint"  # the immediate task begins at the endpoint's next checkpoint, at the earliest
    assert set(LOG) == {"endpoint", "audit a@b.c", "audit after a@b.c", "response sent", "email a@b.c Welcome"}
    assert LOG.index("response sent") < LOG.index("email a@b.c Welcome")
    assert LOG.index("response sent") < LOG.index("audit after a@b.c")
    assert all(r.status is TaskStatus.SUCCEEDED for r in recorder.records)


def check_production_ordering(log: list[str]) -> None:
    """What production guarantees of `/order`'s tasks, and nothing more: its tasks run concurrently."""
    assert sorted(entry for entry in log if entry != "response sent") == sorted(
        f"{label} {when}"
        for label in ("immediate", "route 1", "route 2", "response 1", "response 2")
        for when in ("start", "end")
    )
    # The after_response tasks begin after the response was sent.
    assert log.index("response sent") < log.index("response 1 start")
    assert log.index("response sent") < log.index("response 2 start")
    # The tasks of a phase run at once: the second begins before the first has ended.
    assert log.index("route 2 start") < log.index("route 1 end")
    assert log.index("response 2 start") < log.index("response 1 end")


def test_run_mode_ordering_guarantees(anyio_backend: Backend) -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)

    TestClient(app, backend=anyio_backend).post("/order")

    check_production_ordering(LOG)
    # ...and when the client's call returns, every task of the request has ended.
    assert [r.status for r in recorder.records] == [TaskStatus.SUCCEEDED] * 5
    assert sorted(r.order for r in recorder.records if r.order is not None) == [1, 2, 3, 4, 5]


@pytest.mark.anyio
async def test_run_mode_ordering_guarantees_with_asyncclient(anyio_backend: Backend) -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await client.post("/order")
        assert all(r.done for r in recorder.records)

    check_production_ordering(LOG)


@pytest.mark.anyio
async def test_sync_tasks_run_in_a_worker_thread_and_async_ones_on_the_loop(anyio_backend: Backend) -> None:
    threads: dict[str, int] = {}

    def sync_task() -> None:
        threads["sync"] = threading.get_ident()

    async def async_task() -> None:
        threads["async"] = threading.get_ident()

    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def index(tasks: Tasks) -> None:
        tasks.schedule(sync_task)
        tasks.after_route.schedule(async_task)
        tasks.after_response.schedule(sync_task)

    recorder = RecordingScheduler()
    recorder.install(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await client.get("/")

    assert threads["async"] == threading.get_ident()
    assert threads["sync"] != threading.get_ident()
    assert [r.status for r in recorder.records] == [TaskStatus.SUCCEEDED] * 3


def test_endpoint_raising_discards_deferred_tasks(anyio_backend: Backend) -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)

    response = TestClient(app, backend=anyio_backend, raise_server_exceptions=False).post("/boom")

    assert response.status_code == 500
    assert [(r.phase, r.status) for r in recorder.records] == [
        (Phase.IMMEDIATE, TaskStatus.SUCCEEDED),
        (Phase.AFTER_ROUTE, TaskStatus.DISCARDED),
        (Phase.AFTER_RESPONSE, TaskStatus.DISCARDED),
    ]
    # The 500 comes from ServerErrorMiddleware, outside the middleware that logs "response sent".
    assert LOG == ["audit boom"]
    discarded = recorder.records[1]
    assert (discarded.started_at, discarded.order) == (None, None)
    assert discarded.finished_at is not None


def test_endpoint_exception_reaches_the_client_unchanged(anyio_backend: Backend) -> None:
    app = make_app()
    RecordingScheduler().install(app)

    with pytest.raises(RuntimeError, match=r"^the endpoint failed$"):
        TestClient(app, backend=anyio_backend).post("/boom")


class Conflict(Exception):
    pass


def test_endpoint_exception_reaches_the_apps_exception_handlers(anyio_backend: Backend) -> None:
    app = make_app()

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": "conflict"}, status_code=409)

    @app.post("/conflict")
    async def make_conflict(tasks: Tasks) -> None:
        tasks.schedule(audit, "conflict")
        tasks.after_route.schedule(audit, "never")
        raise Conflict

    recorder = RecordingScheduler()
    recorder.install(app)

    response = TestClient(app, backend=anyio_backend).post("/conflict")

    assert (response.status_code, response.json()) == (409, {"detail": "conflict"})
    assert [r.status for r in recorder.records] == [TaskStatus.SUCCEEDED, TaskStatus.DISCARDED]


def http_scope(method: str, path: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"email=a%40b.c",
        "headers": [],
        "client": ("test", 1234),
        "server": ("test", 80),
    }


async def receive_empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


@pytest.mark.anyio
async def test_response_that_cannot_be_sent_discards_after_response_tasks(anyio_backend: Backend) -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)

    async def client_gone(message: Message) -> None:
        raise OSError("the client went away")

    with pytest.raises(OSError, match=r"^the client went away$"):
        await app(http_scope("POST", "/signup"), receive_empty_body, client_gone)

    assert [(r.phase, r.status) for r in recorder.records] == [
        (Phase.IMMEDIATE, TaskStatus.SUCCEEDED),
        (Phase.AFTER_ROUTE, TaskStatus.SUCCEEDED),
        (Phase.AFTER_RESPONSE, TaskStatus.DISCARDED),
    ]


@pytest.mark.anyio
async def test_cancelled_request_leaves_a_trace_of_every_task(anyio_backend: Backend) -> None:
    inside = anyio.Event()

    async def forever() -> None:
        await anyio.Event().wait()

    app = FastAPI()
    add_tasks(app)

    @app.get("/hang")
    async def hang(tasks: Tasks) -> None:
        tasks.schedule(forever)
        tasks.after_route.schedule(audit, "never")
        tasks.after_response.schedule(audit, "never")
        inside.set()
        await anyio.Event().wait()

    recorder = RecordingScheduler()
    recorder.detach(forever)  # it outlives its request, as in production; without a lifespan, it ends with the call
    recorder.install(app)

    async def send(message: Message) -> None:
        raise AssertionError("no response is sent")

    async with anyio.create_task_group() as tg:
        tg.start_soon(app, http_scope("GET", "/hang"), receive_empty_body, send)
        await inside.wait()
        tg.cancel_scope.cancel()

    assert [r.status for r in recorder.records] == [
        TaskStatus.CANCELLED,
        TaskStatus.DISCARDED,
        TaskStatus.DISCARDED,
    ]
    assert LOG == []


def test_two_requests_are_recorded_apart() -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)
    client = TestClient(app)

    client.post("/signup", params={"email": "a@b.c"})
    client.post("/signup", params={"email": "x@y.z"})

    first, second = recorder.requests
    assert (first.method, first.path, first.route) == ("POST", "/signup", "signup")
    assert (second.method, second.path, second.route) == ("POST", "/signup", "signup")
    assert first.id != second.id
    assert [r.request for r in recorder.records] == [first] * 3 + [second] * 3
    assert [r.seq for r in recorder.records] == [1, 2, 3, 4, 5, 6]


@pytest.mark.anyio
async def test_concurrent_requests_are_recorded_apart(anyio_backend: Backend) -> None:
    app = FastAPI()
    add_tasks(app)
    both_inside = anyio.Event()
    inside = 0

    async def work(n: int) -> int:
        await anyio.lowlevel.checkpoint()
        return n

    @app.get("/items/{n}")
    async def item(n: int, tasks: Tasks) -> dict[str, int]:
        nonlocal inside
        tasks.schedule(work, n)
        inside += 1
        if inside == 2:
            both_inside.set()
        # Both requests are inside their endpoint at once before either schedules more.
        await both_inside.wait()
        tasks.after_route.schedule(work, n * 10)
        tasks.after_response.schedule(work, n * 100)
        return {"n": n}

    recorder = RecordingScheduler()
    recorder.install(app)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.get, "/items/1")
        tg.start_soon(client.get, "/items/2")

    assert len(recorder.records) == 6
    assert {r.request.id for r in recorder.records if r.request is not None}.__len__() == 2
    for n in (1, 2):
        view = recorder.for_request("GET", f"/items/{n}")
        assert [(r.phase, r.args, r.result) for r in view.records] == [
            (Phase.IMMEDIATE, (n,), n),
            (Phase.AFTER_ROUTE, (n * 10,), n * 10),
            (Phase.AFTER_RESPONSE, (n * 100,), n * 100),
        ]
        assert len({r.request for r in view.records}) == 1


def test_record_fields() -> None:
    app = FastAPI()
    add_tasks(app)

    @app.put("/users/{user_id}")
    async def update_user(user_id: int, tasks: Tasks) -> None:
        tasks.after_route.task(name="notify", shield=True).schedule(send_email, "a@b.c", subject="Updated")
        tasks.after_response.schedule(explode, "no luck")

    recorder = RecordingScheduler(expect_failures=True)
    recorder.install(app)
    TestClient(app).put("/users/7")

    notify, failed = recorder.records
    assert notify.func is send_email
    assert notify.args == ("a@b.c",)
    assert notify.kwargs == {"subject": "Updated"}
    assert notify.name == "notify"
    assert notify.phase is Phase.AFTER_ROUTE
    assert notify.shield is True
    assert notify.status is TaskStatus.SUCCEEDED
    assert notify.result == "sent to a@b.c"
    assert notify.exception is None
    assert notify.request is not None
    assert (notify.request.method, notify.request.path, notify.request.route) == ("PUT", "/users/7", "update_user")
    assert str(notify.request) == "PUT /users/7"
    assert (notify.seq, notify.order) == (1, 1)
    assert notify.kind == "task"
    assert notify.on_error is None
    assert repr(notify) == "<TaskRecord #1 after_route 'notify' succeeded>"
    for record in (notify, failed):
        assert record.scheduled_at.tzinfo is dt.timezone.utc
        assert record.started_at is not None
        assert record.finished_at is not None
        assert record.scheduled_at <= record.started_at <= record.finished_at

    assert failed.name == "explode"
    assert (failed.phase, failed.shield, failed.status) == (Phase.AFTER_RESPONSE, False, TaskStatus.FAILED)
    assert isinstance(failed.exception, ValueError)
    assert str(failed.exception) == "no luck"
    assert (failed.seq, failed.order) == (2, 2)
    assert failed.request == notify.request
    with pytest.raises(TaskNotFinishedError, match=r"^Task 'explode' has no result: it is failed\. "):
        _ = failed.result


@pytest.mark.parametrize("use_async_client", [False, True], ids=["TestClient", "AsyncClient"])
def test_timestamps_follow_freezegun(use_async_client: bool, anyio_backend: Backend) -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)
    frozen = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)

    async def call_with_async_client() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            await client.post("/order")
            await client.post("/signup", params={"email": "a@b.c"})

    with freeze_time(frozen):
        if use_async_client:
            anyio.run(call_with_async_client, backend=anyio_backend)
        else:
            client = TestClient(app, backend=anyio_backend)
            client.post("/order")
            client.post("/signup", params={"email": "a@b.c"})

    assert len(recorder.records) == 8
    for record in recorder.records:
        assert record.status is TaskStatus.SUCCEEDED
        assert (record.scheduled_at, record.started_at, record.finished_at) == (frozen, frozen, frozen)


# --- configuration and on_error ---------------------------------------------------------------


def test_app_config_from_add_tasks_is_merged_with_per_task_options(caplog: pytest.LogCaptureFixture) -> None:
    handled: list[tuple[Task[..., Any], Exception]] = []

    def on_error(task: Task[..., Any], exc: Exception) -> None:
        handled.append((task, exc))

    app = FastAPI()
    add_tasks(app, config=TaskConfig(shield=True, on_error=on_error))

    @app.get("/")
    async def index(tasks: Tasks) -> None:
        tasks.schedule(explode, "inherited")
        tasks.after_route.task(shield=False, name="unshielded").schedule(explode, "overridden")

    recorder = RecordingScheduler(expect_failures=True)
    recorder.install(app)
    with caplog.at_level(logging.ERROR, logger="fastapi_tasks"):
        TestClient(app).get("/")

    inherited, overridden = recorder.records
    assert (inherited.name, inherited.shield, inherited.on_error) == ("explode", True, on_error)
    assert (overridden.name, overridden.shield, overridden.on_error) == ("unshielded", False, on_error)
    # The two tasks run concurrently: their handlers may be called in either order.
    assert sorted(handled, key=lambda call: call[0].name) == [
        (inherited, inherited.exception),
        (overridden, overridden.exception),
    ]
    assert inherited.on_error_calls == [(inherited, inherited.exception)]
    assert sorted(r.getMessage() for r in caplog.records) == [
        "Background task 'explode' failed: ValueError: inherited",
        "Background task 'unshielded' failed: ValueError: overridden",
    ]


def test_explicit_config_wins_over_the_app_config() -> None:
    app = make_app(config=TaskConfig(shield=True))
    recorder = RecordingScheduler(config=TaskConfig(shield=False))
    recorder.install(app)

    TestClient(app).post("/signup", params={"email": "a@b.c"})

    assert [r.shield for r in recorder.records] == [False, False, False]


@pytest.mark.anyio
async def test_on_error_is_called_as_in_production(anyio_backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def sync_handler(task: Task[..., Any], exc: Exception) -> None:
        calls.append(f"sync {task.name}: {exc}")

    async def async_handler(task: Task[..., Any], exc: Exception) -> None:
        calls.append(f"async {task.name}: {exc}")

    def broken_handler(task: Task[..., Any], exc: Exception) -> None:
        raise KeyError("handler bug")

    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def index(tasks: Tasks) -> dict[str, str]:
        tasks.task(on_error=sync_handler).schedule(explode, "one")
        tasks.after_route.task(on_error=async_handler).schedule(explode, "two")
        tasks.after_response.task(on_error=broken_handler).schedule(explode, "three")
        tasks.after_response.schedule(audit, "still runs")
        return {"ok": "yes"}

    recorder = RecordingScheduler(expect_failures=True)
    recorder.install(app)
    with caplog.at_level(logging.ERROR, logger="fastapi_tasks"):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.get("/")

    assert response.json() == {"ok": "yes"}
    assert sorted(calls) == ["async explode: two", "sync explode: one"]  # the tasks ran concurrently
    assert [r.status for r in recorder.records] == [TaskStatus.FAILED] * 3 + [TaskStatus.SUCCEEDED]
    assert recorder.records[2].on_error_calls == [(recorder.records[2], recorder.records[2].exception)]
    assert (
        "The on_error handler test_on_error_is_called_as_in_production.<locals>.broken_handler "
        "of background task 'explode' raised: KeyError: 'handler bug'"
    ) in [record.getMessage() for record in caplog.records]


# --- record mode ------------------------------------------------------------------------------------


def test_record_mode_runs_nothing_until_run_pending_sync(anyio_backend: Backend) -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.install(app)

    TestClient(app, backend=anyio_backend).post("/signup", params={"email": "a@b.c"})

    assert LOG == ["endpoint", "response sent"]
    assert [r.status for r in recorder.records] == [TaskStatus.PENDING] * 3
    assert all(r.started_at is None and r.order is None for r in recorder.records)

    ran = recorder.run_pending_sync(phase="after_route")
    assert [r.phase for r in ran] == [Phase.AFTER_ROUTE]

    recorder.run_pending_sync()
    assert LOG == ["endpoint", "response sent", "audit after a@b.c", "audit a@b.c", "email a@b.c Welcome"]
    assert [r.status for r in recorder.records] == [TaskStatus.SUCCEEDED] * 3
    assert recorder.records[0].request == recorder.records[2].request


@pytest.mark.anyio
async def test_record_mode_run_pending_from_an_async_test(anyio_backend: Backend) -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.install(app)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await client.post("/signup", params={"email": "a@b.c"})
    assert [r.status for r in recorder.records] == [TaskStatus.PENDING] * 3

    await recorder.run_pending(phase="after_response")
    assert LOG == ["endpoint", "response sent", "email a@b.c Welcome"]
    await recorder.run_pending()
    assert LOG[3:] == ["audit a@b.c", "audit after a@b.c"]


def test_record_mode_still_discards_when_the_endpoint_raises() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.install(app)

    TestClient(app, raise_server_exceptions=False).post("/boom")

    assert [r.status for r in recorder.records] == [TaskStatus.PENDING, TaskStatus.DISCARDED, TaskStatus.DISCARDED]
    assert [r.name for r in recorder.run_pending_sync()] == ["audit"]


def test_allow_runs_only_the_matching_tasks_in_record_mode() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.allow(audit)
    recorder.install(app)

    TestClient(app).post("/signup", params={"email": "a@b.c"})

    # The two audits run concurrently, each in a worker thread: in either order.
    assert sorted(entry for entry in LOG if entry != "response sent") == [
        "audit a@b.c",
        "audit after a@b.c",
        "endpoint",
    ]
    assert [r.status for r in recorder.records] == [TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED, TaskStatus.PENDING]


def test_allow_by_name() -> None:
    recorder = RecordingScheduler(mode="record")
    recorder.allow("send_email")
    app = make_app()
    recorder.install(app)

    TestClient(app).post("/signup", params={"email": "a@b.c"})

    assert [r.status for r in recorder.records] == [TaskStatus.PENDING, TaskStatus.PENDING, TaskStatus.SUCCEEDED]


# --- fault injection --------------------------------------------------------------------------------


def test_fail_makes_on_error_receive_the_injected_exception() -> None:
    received: list[tuple[Task[..., Any], Exception]] = []

    def on_smtp_error(task: Task[..., Any], exc: Exception) -> None:
        received.append((task, exc))

    app = FastAPI()
    add_tasks(app, config=TaskConfig(on_error=on_smtp_error))

    @app.post("/signup")
    async def signup(tasks: Tasks) -> None:
        tasks.after_response.schedule(send_email, "a@b.c")

    smtp_down = smtplib.SMTPException("SMTP server down")
    recorder = RecordingScheduler()
    recorder.fail(send_email, smtp_down)
    recorder.install(app)

    TestClient(app).post("/signup")

    record = recorder.records[0]
    assert LOG == []  # the real send_email never ran
    assert received == [(record, smtp_down)]
    assert recorder.assert_error_handled(send_email, smtplib.SMTPException) == (record, smtp_down)
    assert record.handled  # injected failures are expected, not reported at teardown


def test_fail_with_an_exception_class_and_by_name() -> None:
    recorder = RecordingScheduler()
    recorder.fail("audit", ConnectionError)
    recorder.schedule(audit, "x")
    recorder.schedule(charge_card, 1)

    recorder.run_pending_sync()

    assert isinstance(recorder.records[0].exception, ConnectionError)
    assert recorder.records[1].status is TaskStatus.SUCCEEDED
    with pytest.raises(TypeError, match=r"^fail\(\) needs an exception instance or class to raise, not 'boom'$"):
        recorder.fail(audit, "boom")  # type: ignore[arg-type]


def test_replace_runs_the_fake_with_the_same_arguments() -> None:
    calls: list[tuple[Any, ...]] = []

    async def fake_send_email(address: str, *, subject: str = "") -> str:
        calls.append((address, subject))
        return "faked"

    app = make_app()
    recorder = RecordingScheduler()
    recorder.replace(send_email, fake_send_email)
    recorder.install(app)

    TestClient(app).post("/signup", params={"email": "a@b.c"})

    assert calls == [("a@b.c", "")]
    assert "email a@b.c Welcome" not in LOG
    record = recorder.assert_succeeded(send_email, "a@b.c")
    assert (record.func, record.result) == (send_email, "faked")
    assert not record.handled
    with pytest.raises(TypeError, match=r"^replace\(\) needs a callable to run instead, not 3$"):
        recorder.replace(send_email, 3)  # type: ignore[arg-type]


def test_the_latest_injection_wins() -> None:
    recorder = RecordingScheduler()
    recorder.fail(audit, ValueError("first"))
    recorder.replace(audit, lambda user: f"fake {user}")
    recorder.schedule(audit, "x")

    recorder.run_pending_sync()

    assert recorder.records[0].result == "fake x"


# --- shutdown ---------------------------------------------------------------------------------------


def test_shutdown_sync_finishes_shielded_and_cancels_unshielded_pending_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    TestClient(app).post("/checkout")

    with caplog.at_level(logging.WARNING, logger="fastapi_tasks"):
        recorder.shutdown_sync()

    assert recorder.assert_succeeded(charge_card, 42).result == "charged 42"
    recorder.assert_cancelled(send_newsletter)
    assert LOG == ["response sent", "charge 42"]
    assert [r.getMessage() for r in caplog.records] == [
        "Background task 'send_newsletter' was cancelled before it finished"
    ]


@pytest.mark.anyio
async def test_shutdown_cancels_running_unshielded_tasks_and_awaits_shielded_ones(anyio_backend: Backend) -> None:
    release = anyio.Event()
    gate_passed = anyio.Event()

    async def charge(amount: int) -> str:
        await release.wait()
        return f"charged {amount}"

    async def newsletter() -> None:
        gate_passed.set()
        await anyio.Event().wait()  # runs until cancelled

    async def releaser() -> None:
        # Lets the shielded charge finish only once shutdown has started waiting on it.
        await gate_passed.wait()
        release.set()

    app = FastAPI()
    add_tasks(app)

    @app.post("/checkout")
    async def checkout(tasks: Tasks) -> None:
        tasks.task(shield=True).schedule(charge, 42)
        tasks.schedule(newsletter)

    recorder = RecordingScheduler(mode="spy")
    recorder.install(app)
    async with LifespanManager(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client:
            await client.post("/checkout")
        await gate_passed.wait()
        assert [r.status for r in recorder.records] == [TaskStatus.RUNNING, TaskStatus.RUNNING]
        async with anyio.create_task_group() as tg:
            tg.start_soon(releaser)
            await recorder.shutdown()

    assert recorder.assert_succeeded(charge).result == "charged 42"
    recorder.assert_cancelled(newsletter)


# --- spy mode --------------------------------------------------------------------------------------


def test_spy_mode_runs_tasks_concurrently_with_a_real_lifespan(anyio_backend: Backend) -> None:
    events: dict[str, anyio.Event] = {}

    async def waiter() -> str:
        await events["go"].wait()
        return "released"

    async def setter() -> None:
        events["go"].set()

    app = FastAPI()
    add_tasks(app)

    @app.get("/spy")
    async def spy(tasks: Tasks) -> None:
        events["go"] = anyio.Event()
        # In "run" mode this would never end: the immediate waiter waits for an after_response task.
        tasks.schedule(waiter)
        tasks.after_response.schedule(setter)

    recorder = RecordingScheduler(mode="spy")
    recorder.install(app)
    with TestClient(app, backend=anyio_backend) as client:
        client.get("/spy")
        assert client.portal is not None
        client.portal.call(recorder.drain, 10)

    assert recorder.assert_succeeded(waiter).result == "released"
    recorder.assert_succeeded(setter)
    assert recorder.records[0].request is not None
    assert str(recorder.records[0].request) == "GET /spy"


@pytest.mark.anyio
async def test_spy_mode_drain_waits_for_a_task_released_by_the_test(anyio_backend: Backend) -> None:
    release = anyio.Event()

    async def waiter() -> None:
        await release.wait()

    app = FastAPI()
    add_tasks(app)

    @app.get("/wait")
    async def wait(tasks: Tasks) -> None:
        tasks.task(name="waiter").schedule(waiter)

    recorder = RecordingScheduler(mode="spy")
    recorder.install(app)
    async with LifespanManager(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client:
            await client.get("/wait")
        expected = (
            "drain() timed out after 0.05 s; still running:\n"
            "- #1 immediate waiter\n"
            "\n"
            "Recorded tasks:\n"
            "#  phase      task      status   request\n"
            "1  immediate  waiter()  running  GET /wait"
        )
        with pytest.raises(AssertionError) as excinfo:
            await recorder.drain(timeout=0.05)
        release.set()
        await recorder.drain(timeout=10)

    assert str(excinfo.value) == expected
    recorder.assert_succeeded(waiter)


def test_spy_mode_uses_the_explicit_config(anyio_backend: Backend) -> None:
    app = make_app(config=TaskConfig(name="app-wide", shield=False))
    recorder = RecordingScheduler(mode="spy", config=TaskConfig(shield=True))
    recorder.install(app)

    with TestClient(app, backend=anyio_backend) as client:
        client.post("/signup", params={"email": "a@b.c"})
        assert client.portal is not None
        client.portal.call(recorder.drain)

    # As in run mode: the recorder's config replaces the one given to add_tasks.
    assert [(r.name, r.shield, r.status) for r in recorder.records] == [
        ("audit", True, TaskStatus.SUCCEEDED),
        ("audit", True, TaskStatus.SUCCEEDED),
        ("send_email", True, TaskStatus.SUCCEEDED),
    ]


def test_spy_mode_needs_the_lifespan() -> None:
    app = make_app()
    RecordingScheduler(mode="spy").install(app)

    with pytest.raises(
        FastAPITasksUninitializedAppError,
        match=r"^tasks_recorder in spy mode runs tasks on the app's real scheduler, so the lifespan must run: "
        r"use `with TestClient\(app\) as client:` or asgi_lifespan\.LifespanManager\(app\)\.$",
    ):
        TestClient(app).post("/signup", params={"email": "a@b.c"})


# --- requests --------------------------------------------------------------------------------------


def test_for_request_by_method_and_path_or_route_name() -> None:
    app = make_app()
    recorder = RecordingScheduler()
    recorder.install(app)
    client = TestClient(app)
    client.post("/signup", params={"email": "a@b.c"})
    client.post("/checkout")

    by_path = recorder.for_request("post", "/checkout")
    by_route = recorder.for_request("checkout")

    assert [r.name for r in by_path.records] == ["charge_card", "send_newsletter"]
    assert by_route.records == by_path.records
    assert repr(by_path) == "<RequestRecords POST /checkout: 2 records>"
    assert recorder.for_request("GET", "/checkout").records == []
    by_path.assert_not_scheduled(audit)
    recorder.for_request("signup").assert_scheduled(audit, "a@b.c", phase="immediate")
    assert by_path.filter(status="succeeded") == by_path.records


def test_request_info_from_scope() -> None:
    info = RequestInfo.from_scope({"type": "websocket", "path": "/ws"})
    assert (info.method, info.path, info.route) == ("WEBSOCKET", "/ws", None)
    assert str(info) == "WEBSOCKET /ws"


def test_clear_forgets_records_but_keeps_injections() -> None:
    recorder = RecordingScheduler()
    recorder.fail(audit, ValueError("down"))
    recorder.schedule(audit, "x")
    recorder.clear()
    assert recorder.records == []
    assert repr(recorder) == "<RecordingScheduler mode='run' records=0>"

    recorder.schedule(audit, "y")
    recorder.run_pending_sync()
    assert recorder.records[0].status is TaskStatus.FAILED
    assert recorder.records[0].seq == 2


# --- the README's promise -------------------------------------------------------------------------


def test_signup_schedules_email_after_response_and_audit_after_route(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    client = TestClient(app)

    response = client.post("/signup", params={"email": "a@b.c"})

    assert response.status_code == 200
    tasks_recorder.assert_scheduled(send_email, "a@b.c", phase="after_response")
    tasks_recorder.assert_scheduled(audit, "after a@b.c", phase="after_route")
    # No order between them: the sync audit's thread races the response in production.
    tasks_recorder.assert_succeeded(audit, "after a@b.c")
    tasks_recorder.for_request("POST", "/signup").assert_succeeded(send_email, "a@b.c")


def test_the_fixture_installs_itself_on_the_app_fixture(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    assert tasks_recorder.app is app
    assert tasks_recorder.mode == "run"
    assert get_tasks_scheduler in app.dependency_overrides


@pytest.mark.tasks_recorder(mode="record")
def test_the_marker_selects_the_mode(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    TestClient(app).post("/signup", params={"email": "a@b.c"})

    assert tasks_recorder.mode == "record"
    assert [r.status for r in tasks_recorder.filter()] == [TaskStatus.PENDING] * 3
    assert re.fullmatch(r"<RecordingScheduler mode='record' records=3>", repr(tasks_recorder))
