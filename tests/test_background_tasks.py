"""Recording FastAPI's own `BackgroundTasks`: what is recorded, the three modes, the hook's life cycle."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and
# some of them name dependencies local to an app's factory.

import logging
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import anyio
import anyio.lowlevel
import fastapi
import fastapi.background
import fastapi.dependencies.utils as fastapi_utils
import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, WebSocket
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.background import BackgroundTask
from starlette.routing import Host, Mount, Route

from fastapi_tasks import Tasks, TaskStatus, add_tasks
from fastapi_tasks.errors import FastAPITasksError
from fastapi_tasks_testing import RecordingScheduler, TaskRecord, _background

Backend = Literal["asyncio", "trio"]

LOG: list[str] = []
"""What the tasks did, in order; cleared around every test."""


@pytest.fixture(autouse=True)
def _clear_log() -> Iterator[None]:
    LOG.clear()
    yield
    LOG.clear()


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A test elsewhere that installs a recorder without uninstalling it must not change what these see.
    monkeypatch.setattr(_background, "_recorders", {})
    monkeypatch.setattr(fastapi_utils, "BackgroundTasks", fastapi.background.BackgroundTasks)
    yield
    assert _background._recorders == {}, "a test left a recorder installed"


@pytest.fixture
def recorder() -> Iterator[RecordingScheduler]:
    recorder = RecordingScheduler()
    yield recorder
    recorder.uninstall()


# --- tasks -------------------------------------------------------------------------------------


def send_email(to: str, *, subject: str = "Welcome") -> str:
    LOG.append(f"email {to} {subject}")
    return f"sent to {to}"


async def audit(event: str) -> str:
    await anyio.lowlevel.checkpoint()
    LOG.append(f"audit {event}")
    return f"audited {event}"


def explode(reason: str) -> None:
    LOG.append(f"explode {reason}")
    raise ValueError(reason)


# --- apps ----------------------------------------------------------------------------------------


def make_app() -> FastAPI:
    """An app that uses FastAPI's BackgroundTasks only: no add_tasks, no import of fastapi-tasks."""
    app = FastAPI()

    def audited(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(audit, "dependency")

    @app.post("/signup")
    async def signup(email: str, background_tasks: BackgroundTasks, _: Annotated[None, Depends(audited)]) -> str:
        background_tasks.add_task(send_email, email, subject="Hi")
        return email

    @app.post("/signup-sync")
    def signup_sync(email: str, background_tasks: BackgroundTasks) -> str:
        background_tasks.add_task(send_email, email)
        background_tasks.add_task(audit, "sync")
        return email

    @app.post("/chain")
    async def chain(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(audit, "first")
        background_tasks.add_task(explode, "second")
        background_tasks.add_task(send_email, "third")
        background_tasks.add_task(audit, "fourth")

    @app.post("/refuse")
    async def refuse(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(send_email, "never")
        raise HTTPException(status_code=409, detail="taken")

    @app.post("/own-background")
    async def own_background(background_tasks: BackgroundTasks) -> JSONResponse:
        background_tasks.add_task(send_email, "dropped")
        return JSONResponse({}, background=BackgroundTask(audit, "own"))

    @app.post("/passed-on")
    async def passed_on(background_tasks: BackgroundTasks) -> JSONResponse:
        background_tasks.add_task(send_email, "passed on")
        return JSONResponse({}, background=background_tasks)

    @app.post("/by-hand")
    async def by_hand(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(send_email, "removed")
        background_tasks.tasks.clear()
        background_tasks.tasks.append(BackgroundTask(send_email, "appended"))

    @app.post("/wrong-arguments")
    async def wrong_arguments(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(send_email, "a", "b")  # type: ignore[call-arg]

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(send_email, "websocket")
        await websocket.accept()
        await websocket.close()

    return app


def hooked_class() -> object:
    """The class FastAPI creates a request's BackgroundTasks with."""
    return getattr(fastapi_utils, "BackgroundTasks")  # noqa: B009 (not re-exported: mypy would refuse the attribute)


def statuses(recorder: RecordingScheduler) -> list[tuple[str, str, str | None]]:
    return [(r.name, r.status.value, r.reason) for r in recorder.records]


# --- what is recorded ----------------------------------------------------------------------------


def test_tasks_of_the_endpoint_and_its_dependencies_are_recorded_and_run(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)

    response = TestClient(app).post("/signup", params={"email": "a@b.c"})

    assert response.json() == "a@b.c"
    assert LOG == ["audit dependency", "email a@b.c Hi"]
    dependency_task, endpoint_task = recorder.records
    assert isinstance(endpoint_task, TaskRecord)
    assert (endpoint_task.func, endpoint_task.args, endpoint_task.kwargs) == (send_email, ("a@b.c",), {"subject": "Hi"})
    assert endpoint_task.phase.value == "after_response"
    assert endpoint_task.source == "BackgroundTasks"
    assert endpoint_task.status is TaskStatus.SUCCEEDED
    assert endpoint_task.result == "sent to a@b.c"
    assert (dependency_task.seq, endpoint_task.seq) == (1, 2)
    assert (dependency_task.order, endpoint_task.order) == (1, 2)
    assert endpoint_task.reason is None
    assert endpoint_task.config.on_error is None
    assert endpoint_task.scheduled_at <= endpoint_task.started_at <= endpoint_task.finished_at  # type: ignore[operator]
    assert str(endpoint_task.request) == "POST /signup"
    assert endpoint_task.request is dependency_task.request
    assert endpoint_task.request is not None
    assert endpoint_task.request.route == "signup"
    recorder.assert_scheduled_once(send_email, "a@b.c", phase="after_response", subject="Hi")
    recorder.assert_order(audit, send_email)
    recorder.for_request("POST", "/signup").assert_succeeded(send_email)


@pytest.mark.anyio
async def test_sync_endpoint_with_asyncclient(anyio_backend: Backend, recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await client.post("/signup-sync", params={"email": "a@b.c"})

    assert LOG == ["email a@b.c Welcome", "audit sync"]
    assert [r.status for r in recorder.records] == [TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED]


def test_tasks_and_background_tasks_of_one_request_share_its_request(recorder: RecordingScheduler) -> None:
    app = FastAPI()
    add_tasks(app)

    @app.post("/mixed")
    async def mixed(tasks: Tasks, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(send_email, "old")
        tasks.after_response.schedule(send_email, "new")

    recorder.install(app)
    TestClient(app).post("/mixed")

    old, new = recorder.records
    assert (old.source, new.source) == ("BackgroundTasks", "Tasks")
    assert old.request is new.request
    assert len(recorder.requests) == 1


def test_the_timeline_says_why_a_task_did_not_run(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)

    TestClient(app).post("/chain")

    assert recorder.timeline() == (
        "#  phase           task                 status                                  request\n"
        "1  after_response  audit('first')       succeeded                               POST /chain\n"
        "2  after_response  explode('second')    failed (ValueError: second)             POST /chain\n"
        "3  after_response  send_email('third')  discarded ('explode' before it failed)  POST /chain\n"
        "4  after_response  audit('fourth')      discarded ('explode' before it failed)  POST /chain"
    )


# --- run mode ------------------------------------------------------------------------------------


def test_run_mode_first_failure_stops_the_rest_and_is_contained(
    recorder: RecordingScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    recorder.install(app)

    with caplog.at_level(logging.ERROR, logger="fastapi_tasks"):
        response = TestClient(app).post("/chain")

    assert response.status_code == 200
    assert LOG == ["audit first", "explode second"]
    assert statuses(recorder) == [
        ("audit", "succeeded", None),
        ("explode", "failed", None),
        ("send_email", "discarded", "'explode' before it failed"),
        ("audit", "discarded", "'explode' before it failed"),
    ]
    assert [r.getMessage() for r in caplog.records] == ["Background task 'explode' failed: ValueError: second"]
    failed = recorder.assert_failed(explode, ValueError)
    assert str(failed.exception) == "second"
    recorder.assert_discarded(send_email, "third")


@pytest.mark.anyio
async def test_run_mode_a_cancelled_task_stops_the_rest(anyio_backend: Backend, recorder: RecordingScheduler) -> None:
    app = FastAPI()

    async def hang() -> None:
        scope.cancel()  # the client gives up while this task runs
        await anyio.sleep_forever()

    @app.post("/")
    async def endpoint(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(hang)
        background_tasks.add_task(send_email, "after")

    recorder.install(app)
    with anyio.CancelScope() as scope:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            await client.post("/")

    assert statuses(recorder) == [
        ("test_run_mode_a_cancelled_task_stops_the_rest.<locals>.hang", "cancelled", None),
        (
            "send_email",
            "discarded",
            "'test_run_mode_a_cancelled_task_stops_the_rest.<locals>.hang' before it was cancelled",
        ),
    ]


def test_an_endpoint_that_raises_discards_its_tasks(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)

    response = TestClient(app).post("/refuse")

    assert response.status_code == 409
    assert LOG == []
    assert statuses(recorder) == [("send_email", "discarded", "the request raised HTTPException")]


def test_a_response_with_its_own_background_drops_the_requests_tasks(recorder: RecordingScheduler) -> None:
    # As in production: FastAPI runs the response's background, not the BackgroundTasks parameter's
    # tasks. The response's own BackgroundTask is not recorded (it never passes through FastAPI).
    app = make_app()
    recorder.install(app)

    TestClient(app).post("/own-background")

    assert LOG == ["audit own"]
    assert statuses(recorder) == [("send_email", "discarded", "the response's own background ran instead")]


def test_the_parameter_passed_on_as_the_responses_background_is_recorded(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)

    TestClient(app).post("/passed-on")

    assert LOG == ["email passed on Welcome"]
    recorder.assert_succeeded(send_email, "passed on")


def test_tasks_put_in_the_list_by_hand(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)

    TestClient(app).post("/by-hand")

    assert LOG == ["email appended Welcome"]
    assert statuses(recorder) == [
        ("send_email", "discarded", "removed from background_tasks.tasks"),
        ("send_email", "succeeded", None),
    ]


def test_a_websocket_endpoints_tasks_never_run(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)

    with TestClient(app).websocket_connect("/ws"):
        pass

    assert LOG == []
    assert statuses(recorder) == [
        ("send_email", "discarded", "FastAPI never runs a WebSocket endpoint's BackgroundTasks")
    ]
    assert str(recorder.records[0].request) == "WEBSOCKET /ws"


def test_wrong_arguments_fail_the_task_when_it_runs_as_in_production(recorder: RecordingScheduler) -> None:
    # Starlette does not check a task's arguments in add_task(); neither does the recorder: the
    # response goes out, and the task fails when it is called.
    app = make_app()
    recorder.install(app)

    assert TestClient(app).post("/wrong-arguments").status_code == 200

    [record] = recorder.records
    assert record.status is TaskStatus.FAILED
    assert isinstance(record.exception, TypeError)
    assert "takes 1 positional argument but 2 were given" in str(record.exception)


def test_fail_and_replace(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)
    recorder.fail(audit, ConnectionError("down"))
    recorder.replace(send_email, lambda to, subject="": f"fake {to}")

    TestClient(app).post("/signup", params={"email": "a@b.c"})

    assert LOG == []
    injected, replaced = recorder.records
    assert injected.status is TaskStatus.FAILED
    assert injected.handled
    assert replaced.status is TaskStatus.DISCARDED
    assert replaced.reason == "'audit' before it failed"


def test_fail_and_replace_in_the_tasks_that_still_run(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)
    recorder.replace(send_email, lambda to, subject="": f"fake {to}")

    TestClient(app).post("/signup", params={"email": "a@b.c"})

    assert LOG == ["audit dependency"]
    assert recorder.assert_succeeded(send_email).result == "fake a@b.c"


# --- record mode ---------------------------------------------------------------------------------


def test_record_mode_runs_nothing_until_run_pending() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    try:
        TestClient(app).post("/chain")
        assert LOG == []
        assert {r.status for r in recorder.records} == {TaskStatus.PENDING}

        ran = recorder.run_pending_sync()
    finally:
        recorder.uninstall()

    assert LOG == ["audit first", "explode second"]
    assert [r.name for r in ran] == ["audit", "explode"]
    assert statuses(recorder) == [
        ("audit", "succeeded", None),
        ("explode", "failed", None),
        ("send_email", "discarded", "'explode' before it failed"),
        ("audit", "discarded", "'explode' before it failed"),
    ]


def test_record_mode_allow_runs_the_allowed_tasks() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.allow(audit)
    recorder.install(app)
    try:
        TestClient(app).post("/signup", params={"email": "a@b.c"})
    finally:
        recorder.uninstall()

    assert LOG == ["audit dependency"]
    assert [r.status.value for r in recorder.records] == ["succeeded", "pending"]


def test_record_mode_a_failure_in_run_pending_leaves_tasks_that_ran_already_alone() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.allow(send_email)
    recorder.install(app)
    try:
        TestClient(app).post("/chain")
        recorder.run_pending_sync()
    finally:
        recorder.uninstall()

    assert LOG == ["email third Welcome", "audit first", "explode second"]
    assert [r.status.value for r in recorder.records] == ["succeeded", "failed", "succeeded", "discarded"]


def test_record_mode_still_discards_what_production_would_never_run() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    try:
        TestClient(app).post("/refuse")
        assert recorder.run_pending_sync() == []
    finally:
        recorder.uninstall()

    assert statuses(recorder) == [("send_email", "discarded", "the request raised HTTPException")]


def test_shutdown_cancels_pending_background_tasks() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    try:
        TestClient(app).post("/chain")
        recorder.shutdown_sync()
    finally:
        recorder.uninstall()

    assert {r.status for r in recorder.records} == {TaskStatus.CANCELLED}
    assert LOG == []


# --- spy mode ------------------------------------------------------------------------------------


def test_spy_mode_lets_fastapi_run_them_and_what_they_raise_reaches_the_client() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="spy")
    recorder.install(app)
    try:
        client = TestClient(app)
        client.post("/signup", params={"email": "a@b.c"})
        with pytest.raises(ValueError, match=r"^second$"):
            client.post("/chain")
    finally:
        recorder.uninstall()

    assert LOG == ["audit dependency", "email a@b.c Hi", "audit first", "explode second"]
    assert statuses(recorder)[2:] == [
        ("audit", "succeeded", None),
        ("explode", "failed", None),
        ("send_email", "discarded", "'explode' before it failed"),
        ("audit", "discarded", "'explode' before it failed"),
    ]
    assert [r.result for r in recorder.records[:3]] == ["audited dependency", "sent to a@b.c", "audited first"]


def test_spy_mode_with_fail_and_replace() -> None:
    app = make_app()
    recorder = RecordingScheduler(mode="spy")
    recorder.replace(send_email, audit)  # an async stand-in for a sync task
    recorder.fail(explode, KeyError("injected"))
    recorder.install(app)
    try:
        client = TestClient(app)
        client.post("/signup-sync", params={"email": "a@b.c"})
        with pytest.raises(KeyError):
            client.post("/chain")
    finally:
        recorder.uninstall()

    assert LOG == ["audit a@b.c", "audit sync", "audit first"]
    assert recorder.records[0].result == "audited a@b.c"
    assert recorder.assert_failed(explode, KeyError).handled


@pytest.mark.anyio
async def test_spy_mode_a_cancelled_task(anyio_backend: Backend) -> None:
    app = FastAPI()

    async def hang() -> None:
        scope.cancel()
        await anyio.sleep_forever()

    @app.post("/")
    async def endpoint(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(hang)
        background_tasks.add_task(send_email, "after")

    recorder = RecordingScheduler(mode="spy")
    recorder.install(app)
    try:
        with anyio.CancelScope() as scope:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                await client.post("/")
    finally:
        recorder.uninstall()

    assert [r.status.value for r in recorder.records] == ["cancelled", "discarded"]


# --- installing and uninstalling -----------------------------------------------------------------


def test_the_hook_is_installed_with_the_first_recorder_and_removed_with_the_last() -> None:
    app, other = make_app(), make_app()
    first, second = RecordingScheduler(), RecordingScheduler()

    first.install(app)
    second.install(other)
    assert hooked_class() is _background.RecordingBackgroundTasks
    first.uninstall()
    assert hooked_class() is _background.RecordingBackgroundTasks
    second.uninstall()

    assert hooked_class() is fastapi.background.BackgroundTasks
    TestClient(app).post("/signup", params={"email": "a@b.c"})
    assert LOG == ["audit dependency", "email a@b.c Hi"]
    assert first.records == []
    second.uninstall()  # twice: nothing to do


def test_only_the_apps_a_recorder_is_installed_on_are_recorded(recorder: RecordingScheduler) -> None:
    app, other = make_app(), make_app()
    recorder.install(app)

    with pytest.raises(ValueError, match=r"^second$"):
        TestClient(other).post("/chain")  # FastAPI's own behaviour

    assert LOG == ["audit first", "explode second"]
    assert recorder.records == []


def test_the_last_recorder_installed_on_an_app_records_it() -> None:
    app = make_app()
    outer, inner = RecordingScheduler(), RecordingScheduler()
    outer.install(app)
    inner.install(app)
    try:
        TestClient(app).post("/signup-sync", params={"email": "a@b.c"})
    finally:
        inner.uninstall()
        outer.uninstall()

    assert (len(outer.records), len(inner.records)) == (0, 2)


def test_mounted_fastapi_apps_are_recorded(recorder: RecordingScheduler) -> None:
    app = FastAPI()
    app.mount("/v1", make_app())
    recorder.install(app)

    TestClient(app).post("/v1/signup-sync", params={"email": "a@b.c"})

    assert [str(r.request) for r in recorder.records] == ["POST /v1/signup-sync", "POST /v1/signup-sync"]


def test_a_background_tasks_made_elsewhere_than_fastapi_is_refused_clearly(recorder: RecordingScheduler) -> None:
    recorder.install(make_app())

    with pytest.raises(
        FastAPITasksError,
        match=(
            rf"^tasks_recorder cannot tell which request a BackgroundTasks belongs to: on FastAPI "
            rf"{re.escape(fastapi.__version__)} it was not created by fastapi.dependencies.utils.solve_dependencies. "
            r"Please report this to fastapi-tasks, with your FastAPI version.$"
        ),
    ):
        _background.RecordingBackgroundTasks()


def test_a_request_to_an_app_without_a_recorder_keeps_fastapis_behaviour(recorder: RecordingScheduler) -> None:
    # The hook is process-wide while a recorder is installed: an unrecorded app's BackgroundTasks
    # are FastAPI's, task for task.
    recorder.install(make_app())
    other = FastAPI()

    @other.post("/")
    async def endpoint(background_tasks: BackgroundTasks) -> int:
        background_tasks.add_task(send_email, "plain")
        return len(background_tasks.tasks)

    assert TestClient(other).post("/").json() == 1
    assert LOG == ["email plain Welcome"]


# --- a FastAPI that changed the hook point -------------------------------------------------------

CHANGED = (
    rf"^tasks_recorder cannot record FastAPI's BackgroundTasks: FastAPI {re.escape(fastapi.__version__)} no longer "
    r"creates them where the recorder expects, in fastapi.dependencies.utils.solve_dependencies. Please report this "
    r"to fastapi-tasks, with your FastAPI version; until it is fixed, test with the last FastAPI version your tests "
    r"passed on.$"
)


async def solve_dependencies_elsewhere(*, request: Any) -> None:
    """A solve_dependencies that does not create the BackgroundTasks itself."""


async def solve_dependencies_without_request(*, connection: Any) -> None:
    """A solve_dependencies that calls its request something else."""
    BackgroundTasks()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("solve_dependencies", solve_dependencies_elsewhere),
        ("solve_dependencies", solve_dependencies_without_request),
        ("solve_dependencies", None),
        ("BackgroundTasks", None),
    ],
    ids=["not-created-there", "no-request", "no-solve_dependencies", "no-BackgroundTasks"],
)
def test_a_changed_hook_point_fails_loudly(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> None:
    if value is None:
        monkeypatch.delattr(fastapi_utils, name)
    else:
        monkeypatch.setattr(fastapi_utils, name, value)
    app = make_app()
    recorder = RecordingScheduler()

    with pytest.raises(FastAPITasksError, match=CHANGED):
        recorder.install(app)

    assert recorder.app is None
    assert app.dependency_overrides == {}


def test_a_replaced_class_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    class Mine(BackgroundTasks):
        pass

    monkeypatch.setattr(fastapi_utils, "BackgroundTasks", Mine)

    with pytest.raises(
        FastAPITasksError,
        match=(
            r"^tasks_recorder cannot record FastAPI's BackgroundTasks: fastapi.dependencies.utils.BackgroundTasks was "
            r"replaced by <class '.*\.Mine'>\. Undo that patch while tasks_recorder is installed\.$"
        ),
    ):
        RecordingScheduler().install(make_app())


def test_a_changed_hook_point_does_not_matter_to_an_app_without_background_tasks(
    monkeypatch: pytest.MonkeyPatch, recorder: RecordingScheduler
) -> None:
    monkeypatch.setattr(fastapi_utils, "solve_dependencies", solve_dependencies_elsewhere)
    app = FastAPI()

    @app.get("/")
    async def endpoint() -> None:
        pass

    async def starlette_endpoint(request: Any) -> None:
        pass

    app.router.routes.append(Mount("/static", routes=[Route("/x", starlette_endpoint)]))
    app.router.routes.append(Host("example.com", app=FastAPI()))

    recorder.install(app)

    assert recorder.app is app
    assert hooked_class() is fastapi.background.BackgroundTasks


@pytest.mark.parametrize("where", ["mounted", "dependency", "unknown"])
def test_a_changed_hook_point_is_found_wherever_background_tasks_are_used(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr(fastapi_utils, "solve_dependencies", solve_dependencies_elsewhere)
    app = FastAPI()
    if where == "mounted":
        app.router.routes.append(Mount("/v1", routes=make_app().routes))
    elif where == "dependency":

        def deep(background_tasks: BackgroundTasks) -> None:
            pass

        def middle(_: Annotated[None, Depends(deep)]) -> None:
            pass

        @app.get("/")
        async def endpoint(_: Annotated[None, Depends(middle)]) -> None:
            pass

    else:

        class Route:
            dependant = object()  # a dependant of a shape the recorder does not know

        app.router.routes.append(Route())  # type: ignore[arg-type]

    with pytest.raises(FastAPITasksError, match=CHANGED):
        RecordingScheduler().install(app)


# --- the pytest plugin ---------------------------------------------------------------------------

PLUGIN_APP = """
import pytest
from fastapi import BackgroundTasks, FastAPI


def send_email(to: str) -> None:
    pass


def explode(reason: str) -> None:
    raise ValueError(reason)


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()

    @app.post("/signup")
    async def signup(email: str, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(explode, "smtp down")
        background_tasks.add_task(send_email, email)

    return app
"""


def test_plugin_reports_a_failed_task_and_restores_fastapi_after_a_failing_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN_APP)
    pytester.makepyfile(
        """
        import fastapi.background
        import fastapi.dependencies.utils
        import pytest
        from fastapi.testclient import TestClient


        def test_failed_task(app, tasks_recorder):
            TestClient(app).post("/signup", params={"email": "a@b.c"})


        def test_failing_test(app, tasks_recorder):
            TestClient(app).post("/signup", params={"email": "a@b.c"})
            assert False, "the test itself fails"


        @pytest.mark.tasks_recorder(expect_failures=True)
        def test_expected(app, tasks_recorder):
            TestClient(app).post("/signup", params={"email": "a@b.c"})
            tasks_recorder.assert_discarded("send_email")


        def test_fastapi_is_back():
            assert fastapi.dependencies.utils.BackgroundTasks is fastapi.background.BackgroundTasks
        """
    )

    result = pytester.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=3, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*1 background task failed during the test:",
            "- #1 after_response explode('smtp down') (POST /signup): failed (ValueError: smtp down)",
            "Assert on them with tasks_recorder.assert_failed(...), or, if failures are expected, "
            "mark the test with @pytest.mark.tasks_recorder(expect_failures=True).",
        ]
    )


def test_plugin_record_mode_from_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN_APP)
    pytester.makepyfile(
        """
        import pytest
        from fastapi.testclient import TestClient


        @pytest.mark.tasks_recorder(mode="record")
        def test_nothing_runs(app, tasks_recorder):
            TestClient(app).post("/signup", params={"email": "a@b.c"})

            tasks_recorder.assert_scheduled_once("send_email", "a@b.c", phase="after_response")
            assert [r.status.value for r in tasks_recorder.records] == ["pending", "pending"]
        """
    )

    result = pytester.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=1)


def test_plugin_under_xdist_each_worker_hooks_and_restores_its_own(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN_APP)
    pytester.makepyfile(
        """
        import fastapi.background
        import fastapi.dependencies.utils
        import pytest
        from fastapi.testclient import TestClient


        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.tasks_recorder(mode="record")
        def test_recorded(app, tasks_recorder, n):
            TestClient(app).post("/signup", params={"email": f"{n}@b.c"})
            assert [r.args for r in tasks_recorder.records] == [("smtp down",), (f"{n}@b.c",)]


        @pytest.mark.parametrize("n", range(4))
        def test_not_recorded(n):
            assert fastapi.dependencies.utils.BackgroundTasks is fastapi.background.BackgroundTasks
        """
    )

    result = pytester.runpytest("-p", "no:randomly", "-n", "2")

    result.assert_outcomes(passed=8)
