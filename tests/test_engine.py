"""The recorder's engine: run and record mode on the production scheduler (issue 11's parity decisions)."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fastapi_tasks import Task, TaskConfig, Tasks, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks.errors import BatchClosedError, FastAPITasksError, FastAPITasksUninitializedAppError
from fastapi_tasks_testing import RecordingScheduler

Backend = Literal["asyncio", "trio"]

TIMEOUT = 10  # a hang guard, never a measurement

LOG: list[str] = []


@pytest.fixture(autouse=True)
def _clear_log() -> Iterator[None]:
    LOG.clear()
    yield
    LOG.clear()


class Session:
    """A resource a yield dependency hands out and closes on exit."""

    def __init__(self) -> None:
        self.closed = False

    def query(self) -> str:
        if self.closed:
            raise RuntimeError("session is closed")
        return "rows"


async def session() -> AsyncIterator[Session]:
    opened = Session()
    yield opened
    opened.closed = True
    LOG.append("session closed")


def fail() -> None:
    raise ValueError("boom")


def use_session(used: Session) -> str:
    LOG.append("task ran")
    return used.query()


def test_a_deferred_task_runs_after_the_dependency_teardown_as_in_production(anyio_backend: Backend) -> None:
    # The most common background-task bug: a task handed a session that closes when the request ends.
    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def endpoint(tasks: Tasks, used: Annotated[Session, Depends(session)]) -> None:
        tasks.after_response.schedule(use_session, used)

    recorder = RecordingScheduler()
    recorder.install(app)
    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").status_code == 200

    [record] = recorder.records
    assert LOG == ["session closed", "task ran"]
    assert record.status is TaskStatus.FAILED
    assert isinstance(record.exception, RuntimeError)
    assert str(record.exception) == "session is closed"
    recorder.uninstall()


def test_an_app_without_add_tasks_fails_under_the_recorder_as_in_production(anyio_backend: Backend) -> None:
    app = FastAPI()  # add_tasks(app) forgotten

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.schedule(use_session, Session())  # pragma: no cover - never reached

    recorder = RecordingScheduler()
    recorder.install(app)
    with (
        TestClient(app, backend=anyio_backend) as client,
        pytest.raises(FastAPITasksUninitializedAppError, match=r"add_tasks\(app\) was not called on this app"),
    ):
        client.get("/")
    assert recorder.records == []
    recorder.uninstall()


def test_a_refused_schedule_leaves_no_record(anyio_backend: Backend) -> None:
    app = FastAPI()
    add_tasks(app)
    refused: list[BaseException] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        def too_late() -> None:
            try:
                tasks.after_response.schedule(use_session, Session())
            except BatchClosedError as exc:
                refused.append(exc)

        tasks.after_response.schedule(too_late)

    recorder = RecordingScheduler()
    recorder.install(app)
    with TestClient(app, backend=anyio_backend) as client:
        client.get("/")

    [record] = recorder.records
    assert record.name.endswith("too_late")
    assert record.status is TaskStatus.SUCCEEDED
    assert [type(exc) for exc in refused] == [BatchClosedError]
    recorder.assert_not_scheduled(use_session)
    assert recorder.run_pending_sync() == []
    recorder.uninstall()


@pytest.mark.parametrize("repeat", range(3))
def test_immediate_tasks_run_concurrently_each_a_task_of_its_own(anyio_backend: Backend, repeat: int) -> None:
    # Production's own spawn: each task its own task, all running at once. asyncio starts them in the
    # order they were started; trio takes runnable tasks in an order it varies on purpose.
    app = FastAPI()
    add_tasks(app)
    tasks_seen: set[object] = set()

    async def step(label: str) -> None:
        LOG.append(f"{label} start")
        tasks_seen.add(anyio.get_current_task().id)
        await anyio.lowlevel.checkpoint()
        LOG.append(f"{label} end")

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        for label in ("first", "second", "third"):
            tasks.schedule(step, label)

    recorder = RecordingScheduler()
    recorder.install(app)
    with TestClient(app, backend=anyio_backend) as client:
        for _ in range(10):
            LOG.clear()
            tasks_seen.clear()
            client.get("/")
            assert len(tasks_seen) == 3
            starts = [entry for entry in LOG if entry.endswith("start")]
            # Every task began before any of them ended: they run concurrently, not one after another.
            assert LOG[:3] == starts
            assert sorted(LOG) == sorted(
                f"{label} {when}" for label in ("first", "second", "third") for when in ("start", "end")
            )
            if anyio_backend == "asyncio":
                assert starts == ["first start", "second start", "third start"]
    assert sorted(record.order for record in recorder.records if record.order is not None) == list(range(1, 31))
    recorder.uninstall()


def test_tasks_a_task_schedules_through_a_scheduler_it_builds_are_recorded_and_run(anyio_backend: Backend) -> None:
    app = FastAPI()
    add_tasks(app)

    async def child() -> str:
        LOG.append("child")
        return "child done"

    async def parent() -> None:
        LOG.append("parent")
        TasksScheduler().schedule(child)  # the task's "current request" is the app's runtime

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.after_response.schedule(parent)

    recorder = RecordingScheduler()
    recorder.install(app)
    with TestClient(app, backend=anyio_backend) as client:
        client.get("/")
        # By the time the client's call returns, the task the task scheduled has ended too.
        assert LOG == ["parent", "child"]

    parent_record, child_record = recorder.records
    assert child_record.result == "child done"
    assert child_record.request == parent_record.request
    recorder.uninstall()


def test_a_mounted_app_uses_the_config_production_resolves(anyio_backend: Backend) -> None:
    # A mounted app's lifespan never runs: its tasks run in the outer app's runtime, with its config.
    def outer_handler(task: Task[..., Any], exc: Exception) -> None:
        LOG.append("outer handler")

    def sub_handler(task: Task[..., Any], exc: Exception) -> None:  # pragma: no cover - never used
        LOG.append("sub handler")

    outer, sub = FastAPI(), FastAPI()
    # A grace period: in production, leaving the TestClient block must not cancel the task before it ran.
    add_tasks(outer, config=TaskConfig(on_error=outer_handler), shutdown_timeout=TIMEOUT)
    add_tasks(sub, config=TaskConfig(on_error=sub_handler))

    @sub.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.schedule(fail)

    outer.mount("/sub", sub)
    for recorder_app in (outer, sub):
        LOG.clear()
        recorder = RecordingScheduler(expect_failures=True)
        recorder.install(recorder_app)
        with TestClient(outer, backend=anyio_backend) as client:
            client.get("/sub/")
        assert LOG == ["outer handler"], recorder_app
        recorder.uninstall()

    LOG.clear()
    with TestClient(outer, backend=anyio_backend) as client:  # production
        client.get("/sub/")
    assert LOG == ["outer handler"]


def test_a_raising_on_error_handler_is_kept_on_the_record(anyio_backend: Backend) -> None:
    def broken_handler(task: Task[..., Any], exc: Exception) -> None:
        raise KeyError("no such alert channel")

    app = FastAPI()
    add_tasks(app, config=TaskConfig(on_error=broken_handler))

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.schedule(fail)

    recorder = RecordingScheduler()
    recorder.install(app)
    with TestClient(app, backend=anyio_backend) as client:
        client.get("/")

    [record] = recorder.records
    assert isinstance(record.handler_exception, KeyError)
    with pytest.raises(
        AssertionError,
        match=r"^Expected the on_error handler of fail to handle the failure, but the handler itself raised "
        r"KeyError: 'no such alert channel' \(production logs it and goes on\)\.",
    ):
        recorder.assert_error_handled(fail, ValueError)
    with pytest.raises(
        AssertionError,
        match=r"^Expected the on_error handler of fail to raise OSError or TimeoutError, but it raised "
        r"KeyError: 'no such alert channel'\.",
    ):
        recorder.assert_handler_failed(fail, (OSError, TimeoutError))
    assert not record.handler_asserted
    assert isinstance(recorder.assert_handler_failed(fail, KeyError), KeyError)
    assert record.handler_asserted
    recorder.uninstall()


def test_assert_handler_failed_says_when_the_handler_returned(anyio_backend: Backend) -> None:
    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.task(on_error=lambda task, exc: None).schedule(fail)

    recorder = RecordingScheduler(expect_failures=True)
    recorder.install(app)
    with TestClient(app, backend=anyio_backend) as client:
        client.get("/")
    with pytest.raises(
        AssertionError, match=r"^Expected the on_error handler of fail to raise, but its on_error handler returned\."
    ):
        recorder.assert_handler_failed(fail)
    recorder.uninstall()


def test_run_pending_sync_runs_the_tasks_on_the_apps_event_loop() -> None:
    # What the lifespan bound to its loop (an asyncio primitive, a connection pool) works in the tasks.
    loops: dict[str, asyncio.AbstractEventLoop] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops["lifespan"] = asyncio.get_running_loop()
        yield

    app = FastAPI(lifespan=lifespan)
    add_tasks(app)

    async def uses_the_pool() -> None:
        loops["task"] = asyncio.get_running_loop()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.after_response.schedule(uses_the_pool)

    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    with TestClient(app) as client:
        client.get("/")
        assert "task" not in loops
        [ran] = recorder.run_pending_sync()
        assert ran.status is TaskStatus.SUCCEEDED
        assert loops["task"] is loops["lifespan"]
    recorder.uninstall()


def test_run_pending_sync_after_the_lifespan_ended_uses_a_loop_of_its_own() -> None:
    app = FastAPI()
    add_tasks(app)
    ran_in: list[int] = []

    async def job() -> None:
        ran_in.append(threading.get_ident())

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.schedule(job)

    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    with TestClient(app) as client:
        client.get("/")
    [ran] = recorder.run_pending_sync()
    assert ran.status is TaskStatus.SUCCEEDED
    assert ran_in == [threading.get_ident()]
    recorder.uninstall()


def test_shutdown_sync_runs_on_the_apps_event_loop() -> None:
    loops: dict[str, asyncio.AbstractEventLoop] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops["lifespan"] = asyncio.get_running_loop()
        yield

    app = FastAPI(lifespan=lifespan)
    add_tasks(app)

    async def flush() -> None:
        loops["task"] = asyncio.get_running_loop()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.task(shield=True).schedule(flush)

    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    with TestClient(app) as client:
        client.get("/")
        recorder.shutdown_sync()
        assert loops["task"] is loops["lifespan"]
    recorder.uninstall()


def test_a_replaced_override_fails_the_request_with_what_to_do(anyio_backend: Backend) -> None:
    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.schedule(use_session, Session())  # pragma: no cover - never reached

    recorder = RecordingScheduler()
    recorder.install(app)
    app.dependency_overrides = {}  # as FastAPI's docs show it, in a client fixture
    message = (
        r"^tasks_recorder's override of the Tasks dependency is gone from <fastapi\.applications\.FastAPI object at "
        r"0x[0-9a-f]+>\.dependency_overrides: something replaced or cleared the dict after the recorder was "
        r"installed \(like `app\.dependency_overrides = \{\.\.\.\}` in a fixture\), so the app's tasks run "
        r"unrecorded on its real scheduler\. Add overrides to the dict instead of replacing it "
        r"\(`app\.dependency_overrides\[dep\] = fake`\), or request the fixture that resets it before "
        r"tasks_recorder\.$"
    )
    with TestClient(app, backend=anyio_backend) as client, pytest.raises(FastAPITasksError, match=message):
        client.get("/")
    assert recorder._check_override() is not None
    recorder.uninstall()
    # Uninstalled, the recorder watches no more.
    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").status_code == 200


def test_a_replaced_override_is_noticed_without_a_request() -> None:
    app = FastAPI()
    add_tasks(app)
    recorder = RecordingScheduler()
    recorder.install(app)
    assert recorder._check_override() is None
    app.dependency_overrides = {}
    problem = recorder._check_override()
    assert problem is not None
    assert problem.startswith("tasks_recorder's override of the Tasks dependency is gone from ")
    with pytest.raises(AssertionError, match=r"gone from .*\.dependency_overrides"):
        recorder.assert_scheduled(use_session)
    recorder.uninstall()


@pytest.mark.anyio
async def test_run_mode_with_the_lifespan_running_in_an_async_test() -> None:
    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.schedule(use_session, Session())
        tasks.after_route.schedule(use_session, Session())

    recorder = RecordingScheduler()
    recorder.install(app)
    with anyio.fail_after(TIMEOUT):
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://test") as client,
        ):
            await client.get("/")
            assert [record.status for record in recorder.records] == [TaskStatus.SUCCEEDED] * 2
    recorder.uninstall()


def test_a_recorder_is_not_kept_alive_after_its_test() -> None:
    # FastAPI keeps what it learns of a dependency, keyed by the callable, for the life of the process:
    # the override must not be a recorder's own bound method, or every recorder would stay alive.
    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.schedule(use_session, Session())

    gone = []
    for _ in range(20):
        recorder = RecordingScheduler()
        recorder.install(app)
        with TestClient(app) as client:
            client.get("/")
        assert len(recorder.records) == 1
        recorder.uninstall()
        gone.append(weakref.ref(recorder))
        del recorder
    gc.collect()
    # All but the last: TestClient's event-loop thread may still be letting go of the last request
    # (seen on Python 3.10 with Starlette 1.7). A leak keeps every one of them.
    assert [ref for ref in gone[:-1] if ref() is not None] == []


def test_an_override_copied_back_after_uninstall_says_what_to_do() -> None:
    app = FastAPI()
    add_tasks(app)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        pass  # pragma: no cover - never reached

    recorder = RecordingScheduler()
    recorder.install(app)
    saved = dict(app.dependency_overrides)
    recorder.uninstall()
    app.dependency_overrides.update(saved)  # a fixture restoring a copy, recorder included
    with (
        TestClient(app) as client,
        pytest.raises(FastAPITasksError, match=r"is still overridden by tasks_recorder, but no recorder is installed"),
    ):
        client.get("/")


@pytest.mark.anyio
async def test_a_requests_runtime_reads_and_writes_the_apps_runtime_never_a_copy() -> None:
    # What production's code sets through a request's runtime under the recorder (a flag of the
    # shutdown, a bound) must be what the app's runtime holds, and the other way round.
    from fastapi_tasks._seam import Runtime
    from fastapi_tasks_testing._engine import RequestRuntime

    async with anyio.create_task_group() as tg:
        real = Runtime(tg, TaskConfig(), None)
        view = RequestRuntime(real, RecordingScheduler(), TaskConfig(name="recorded"), None, None)
        own = {"config", "task_scope", "task_serving"}
        saved = {name: getattr(real, name) for name in Runtime.__slots__}
        try:
            for name in Runtime.__slots__:
                if name in own:
                    continue
                on_real, on_view = object(), object()
                setattr(real, name, on_real)
                assert getattr(view, name) is on_real, name
                setattr(view, name, on_view)
                assert getattr(real, name) is on_view, name
        finally:
            for name, value in saved.items():
                setattr(real, name, value)
        assert (view.config.name, real.config.name) == ("recorded", None)
        assert view.task_scope is not real.task_scope
