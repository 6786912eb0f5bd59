"""FastAPI's own `BackgroundTasks`, differentially: each scenario runs in production and under the recorder.

Three drivers, as in `_harness`: "production" (the app's lifespan running, through
`asgi_lifespan.LifespanManager`), which is the reference; "recorder", the same with
`RecordingScheduler(mode="run")` installed; and "recorder-bare", the recorder without the lifespan
(httpx's `ASGITransport` alone). Both recorder drivers are compared with production.

Production has no handle on a `BackgroundTasks` task, so each task of a scenario reports what it
did (it started; it returned a value or raised; how many responses had been sent by then; what it
saw), and the two runs compare those reports, in the order the tasks started, with the responses
the client got and the exceptions that reached the server. Run mode must give every task the same
outcome as production, including a failing task that stops the ones after it. The recorder's own
records must then say the same: `succeeded`, `failed`, or `discarded` (with a reason) for a task
that never ran.

The one accepted difference: in production the exception of a failed task propagates out of the
app after the response was sent (the server logs it, and a `yield` dependency of the request sees
it); run mode records and logs it instead. Every scenario runs on asyncio and on trio.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and
# some of them name dependencies local to a scenario's factory.

import pprint
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
import anyio.lowlevel
import httpx
import pytest
from _versions import needs_depends_scope
from asgi_lifespan import LifespanManager
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.background import BackgroundTask
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tasks import Task, Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler, TaskRecord

from ._differences import ACCEPTED_DIFFERENCES
from ._harness import HANG_GUARD

Backend = Literal["asyncio", "trio"]
Driver = Literal["production", "recorder", "recorder-bare"]
Outcome = dict[str, Any]

ACCEPTED = {kind: ACCEPTED_DIFFERENCES[kind].fields for kind in ("failure-reaches-the-server",)}
"""Kind of accepted difference -> the outcome fields it may change (see the module docstring), taken
from the one table of accepted differences, `_differences.ACCEPTED_DIFFERENCES`."""


class Probe:
    """What an app under test reports: the tasks it added, what each did, the exceptions the server saw."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.tasks: dict[str, dict[str, object]] = {}
        self.started: list[str] = []
        self.responses_sent = 0
        self.server_errors: list[str] = []
        self.seen: dict[str, object] = {}
        self.handles: list[Task[..., Any]] = []
        """Handles of the fastapi-tasks tasks of a scenario that mixes both kinds."""

    def task(self, name: str, body: Callable[[], object] | None = None, *, fails: bool = False) -> Callable[[], Any]:
        """A sync task called `name` that reports itself; it returns `body()`, or raises when `fails`."""

        def run() -> object:
            self._start(name)
            if fails:
                self.tasks[name]["outcome"] = "raised ValueError"
                raise ValueError(f"{name} failed")
            result = None if body is None else body()
            self.tasks[name]["outcome"] = f"returned {result!r}"
            return result

        run.__name__ = run.__qualname__ = name
        return run

    def async_task(self, name: str, *, fails: bool = False) -> Callable[[], Awaitable[str]]:
        """An async task called `name` that reports itself."""

        async def run() -> str:
            self._start(name)
            await anyio.lowlevel.checkpoint()
            if fails:
                self.tasks[name]["outcome"] = "raised ValueError"
                raise ValueError(f"{name} failed")
            self.tasks[name]["outcome"] = "returned 'done'"
            return "done"

        run.__name__ = run.__qualname__ = name
        return run

    def add(self, background_tasks: BackgroundTasks, task: Callable[[], Any]) -> None:
        """`background_tasks.add_task(task)`, noted."""
        self.added.append(task.__name__)
        background_tasks.add_task(task)

    def _start(self, name: str) -> None:
        self.started.append(name)
        self.tasks[name] = {"responses_sent_at_start": self.responses_sent}


class _Server:
    """The outermost ASGI layer: counts the responses sent, and notes what the app raised to the server."""

    def __init__(self, app: ASGIApp, probe: Probe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.probe.responses_sent += 1

        try:
            await self.app(scope, receive, counting_send)
        except Exception as exc:
            self.probe.server_errors.append(type(exc).__name__)
            # A server logs it; the client already has its response (or gets a 500 from httpx).


@dataclass(frozen=True)
class Scenario:
    """One app, the requests to make to it, and what production must do (as Starlette does)."""

    id: str
    build: Callable[[Probe], FastAPI]
    requests: tuple[str, ...] = ("GET /",)
    expect: Callable[[Outcome], None] | None = None
    accepted: tuple[str, ...] = ()
    websocket: bool = False
    marks: tuple[pytest.MarkDecorator, ...] = ()


async def run(scenario: Scenario, driver: Driver) -> tuple[Outcome, RecordingScheduler | None]:
    """Run `scenario` on a fresh app under `driver`; return what happened (and the recorder, if any)."""
    probe = Probe()
    app = scenario.build(probe)
    recorder = None
    if driver != "production":
        recorder = RecordingScheduler(mode="run")
        recorder.install(app)
    responses: list[str] = []
    try:
        with anyio.fail_after(HANG_GUARD):  # every scenario ends in milliseconds
            async with _lifespan(app, run=driver != "recorder-bare") as served:
                server = _Server(served, probe)
                if scenario.websocket:
                    await _websocket_session(server, responses)
                else:
                    transport = httpx.ASGITransport(app=server, raise_app_exceptions=False)
                    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                        for request in scenario.requests:
                            method, path = request.split(" ", 1)
                            response = await client.request(method, path)
                            responses.append(f"{request}: {response.status_code}")
                # Tasks of fastapi-tasks (a scenario mixing both) run on in the app's task group; run mode
                # has ended them when the client's call returned.
                if driver == "production":
                    for handle in probe.handles:
                        await handle.wait()
    finally:
        if recorder is not None:
            recorder.uninstall()
    outcome: Outcome = {
        "responses": responses,
        "server_errors": probe.server_errors,
        "added": probe.added,
        "started": probe.started,
        "tasks": {name: {**fields} for name, fields in probe.tasks.items()},
        "seen": dict(probe.seen),
    }
    return outcome, recorder


@asynccontextmanager
async def _lifespan(app: ASGIApp, *, run: bool) -> AsyncIterator[ASGIApp]:
    """The app as its client calls it: with its lifespan running (`run`), or bare."""
    if not run:
        yield app
        return
    async with LifespanManager(app) as manager:
        yield manager.app


async def _websocket_session(app: ASGIApp, responses: list[str]) -> None:
    """Connect to /ws, let the endpoint accept and close, note how it went."""
    inbox = [{"type": "websocket.connect"}]
    closed = anyio.Event()

    async def receive() -> Message:
        if inbox:
            return inbox.pop(0)
        await closed.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        responses.append(f"WEBSOCKET /ws: {message['type']}")
        if message["type"] == "websocket.close":
            closed.set()

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "subprotocols": [],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    await app(scope, receive, send)


# --- scenarios -----------------------------------------------------------------------------------


def _ran_after_the_response(*names: str) -> Callable[[Outcome], None]:
    def expect(outcome: Outcome) -> None:
        assert outcome["started"] == list(names), outcome
        for name in names:
            assert outcome["tasks"][name]["responses_sent_at_start"] >= 1, outcome

    return expect


def _stopped_at(failed: str, ran: list[str]) -> Callable[[Outcome], None]:
    def expect(outcome: Outcome) -> None:
        assert outcome["started"] == [*ran, failed], outcome
        assert outcome["tasks"][failed]["outcome"] == "raised ValueError", outcome
        assert len(outcome["added"]) > len(outcome["started"]), outcome

    return expect


def _background_tasks_first(outcome: Outcome) -> None:
    assert outcome["seen"] == {"background_task_ended_first": True}, outcome
    assert outcome["started"] == ["background", "after_response"], outcome


def _nothing_ran(outcome: Outcome) -> None:
    assert outcome["added"], outcome
    assert outcome["started"] == [], outcome


def async_endpoint(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("sync_first", lambda: 1))
        probe.add(background_tasks, probe.async_task("async_second"))
        probe.add(background_tasks, probe.task("sync_third", lambda: 3))
        return "ok"

    return app


def sync_endpoint(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    def endpoint(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.async_task("async_first"))
        probe.add(background_tasks, probe.task("sync_second", lambda: 2))
        return "ok"

    return app


def dependencies_add_tasks(probe: Probe) -> FastAPI:
    app = FastAPI()

    def inner(background_tasks: BackgroundTasks) -> None:
        probe.add(background_tasks, probe.task("from_inner_dependency"))

    async def outer(background_tasks: BackgroundTasks, _: Annotated[None, Depends(inner)]) -> None:
        probe.add(background_tasks, probe.async_task("from_outer_dependency"))

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks, _: Annotated[None, Depends(outer)]) -> str:
        probe.add(background_tasks, probe.task("from_endpoint"))
        return "ok"

    return app


def sync_task_fails(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("runs", lambda: "ran"))
        probe.add(background_tasks, probe.task("fails", fails=True))
        probe.add(background_tasks, probe.async_task("never_async"))
        probe.add(background_tasks, probe.task("never_sync"))
        return "ok"

    return app


def async_task_fails_first(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    def endpoint(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.async_task("fails", fails=True))
        probe.add(background_tasks, probe.task("never"))
        return "ok"

    return app


def each_request_its_own(probe: Probe) -> FastAPI:
    # A failure stops the rest of its own request's tasks only.
    app = FastAPI()

    @app.get("/fails")
    async def fails(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("fails", fails=True))
        probe.add(background_tasks, probe.task("never"))
        return "ok"

    @app.get("/works")
    async def works(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("works", lambda: "ran"))
        return "ok"

    return app


def endpoint_raises_http_exception(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("never"))
        raise HTTPException(status_code=409, detail="conflict")

    return app


def endpoint_raises(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("never"))
        raise RuntimeError("endpoint bug")

    return app


def dependency_raises_after_adding(probe: Probe) -> FastAPI:
    app = FastAPI()

    def adds_then_refuses(background_tasks: BackgroundTasks) -> None:
        probe.add(background_tasks, probe.task("never"))
        raise HTTPException(status_code=403, detail="no")

    @app.get("/")
    async def endpoint(_: Annotated[None, Depends(adds_then_refuses)]) -> str:
        return "ok"

    return app


def response_with_its_own_background(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks) -> Response:
        probe.add(background_tasks, probe.task("dropped"))
        return PlainTextResponse("ok", background=BackgroundTask(probe.task("own_background")))

    return app


def parameter_passed_on_as_the_background(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks) -> Response:
        probe.add(background_tasks, probe.task("passed_on"))
        return JSONResponse({}, background=background_tasks)

    return app


def yield_dependencies(probe: Probe) -> FastAPI:
    app = FastAPI()
    state = {"request_scoped": "closed", "function_scoped": "closed"}

    async def request_scoped() -> AsyncIterator[None]:
        state["request_scoped"] = "open"
        yield
        state["request_scoped"] = "closed"

    def function_scoped() -> Iterator[None]:
        state["function_scoped"] = "open"
        yield
        state["function_scoped"] = "closed"

    @app.get("/")
    async def endpoint(
        background_tasks: BackgroundTasks,
        _: Annotated[None, Depends(request_scoped)],
        __: Annotated[None, Depends(function_scoped, scope="function")],
    ) -> str:
        probe.add(background_tasks, probe.task("sees_the_dependencies", lambda: dict(state)))
        return "ok"

    return app


def failure_seen_by_a_yield_dependency(probe: Probe) -> FastAPI:
    app = FastAPI()

    async def session() -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            probe.seen["dependency_saw"] = type(exc).__name__
            raise

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks, _: Annotated[None, Depends(session)]) -> str:
        probe.add(background_tasks, probe.task("fails", fails=True))
        probe.add(background_tasks, probe.task("never"))
        return "ok"

    return app


def base_http_middleware(probe: Probe) -> FastAPI:
    app = FastAPI()

    async def passthrough(request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)

    @app.get("/")
    async def endpoint(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("first", lambda: 1))
        probe.add(background_tasks, probe.task("fails", fails=True))
        probe.add(background_tasks, probe.task("never"))
        return "ok"

    return app


def mounted_app(probe: Probe) -> FastAPI:
    app = FastAPI()
    sub = FastAPI()

    @sub.get("/")
    async def endpoint(background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("in_the_mounted_app"))
        return "ok"

    app.mount("/sub", sub)
    return app


def websocket_endpoint(probe: Probe) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket, background_tasks: BackgroundTasks) -> None:
        probe.add(background_tasks, probe.task("never"))
        await websocket.accept()
        await websocket.close()

    return app


def alongside_tasks(probe: Probe) -> FastAPI:
    # One request with both: Starlette runs the BackgroundTasks while sending the response; the
    # after_response tasks of fastapi-tasks start when the request's exit stack closes, after them.
    app = FastAPI()
    add_tasks(app)

    def tasks_after_response() -> str:
        probe.seen["background_task_ended_first"] = "outcome" in probe.tasks.get("background", {})
        return "tasks ran"

    @app.get("/")
    async def endpoint(tasks: Tasks, background_tasks: BackgroundTasks) -> str:
        probe.add(background_tasks, probe.task("background", lambda: "background ran"))
        probe.handles.append(tasks.after_response.schedule(probe.task("after_response", tasks_after_response)))
        return "ok"

    return app


SCENARIOS = [
    Scenario(
        "async-endpoint", async_endpoint, expect=_ran_after_the_response("sync_first", "async_second", "sync_third")
    ),
    Scenario("sync-endpoint", sync_endpoint, expect=_ran_after_the_response("async_first", "sync_second")),
    Scenario(
        "dependencies-add-tasks",
        dependencies_add_tasks,
        expect=_ran_after_the_response("from_inner_dependency", "from_outer_dependency", "from_endpoint"),
    ),
    Scenario(
        "a-failing-task-stops-the-rest",
        sync_task_fails,
        expect=_stopped_at("fails", ["runs"]),
        accepted=("failure-reaches-the-server",),
    ),
    Scenario(
        "a-failing-first-task-stops-the-rest",
        async_task_fails_first,
        expect=_stopped_at("fails", []),
        accepted=("failure-reaches-the-server",),
    ),
    Scenario(
        "a-failure-stops-its-own-request-only",
        each_request_its_own,
        requests=("GET /fails", "GET /works"),
        accepted=("failure-reaches-the-server",),
    ),
    Scenario("endpoint-raises-http-exception", endpoint_raises_http_exception, expect=_nothing_ran),
    Scenario("endpoint-raises", endpoint_raises, expect=_nothing_ran),
    Scenario("dependency-raises-after-adding", dependency_raises_after_adding, expect=_nothing_ran),
    Scenario("response-with-its-own-background", response_with_its_own_background),
    Scenario("parameter-passed-on-as-the-background", parameter_passed_on_as_the_background),
    Scenario("yield-dependencies", yield_dependencies, marks=(needs_depends_scope,)),
    Scenario(
        "failure-seen-by-a-yield-dependency",
        failure_seen_by_a_yield_dependency,
        accepted=("failure-reaches-the-server",),
    ),
    Scenario("base-http-middleware", base_http_middleware, accepted=("failure-reaches-the-server",)),
    Scenario("mounted-app", mounted_app, requests=("GET /sub/",)),
    Scenario("websocket-endpoint", websocket_endpoint, websocket=True, expect=_nothing_ran),
    Scenario("alongside-tasks", alongside_tasks, expect=_background_tasks_first),
]

BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")


def _differences(scenario: Scenario, production: Outcome, recorder: Outcome) -> list[str]:
    accepted = {name for kind in scenario.accepted for name in ACCEPTED[kind]}
    rows = []
    for key in sorted(production.keys() | recorder.keys()):
        if key in accepted:
            continue
        if key == "seen":
            for seen in sorted(production["seen"].keys() | recorder["seen"].keys()):
                left, right = production["seen"].get(seen), recorder["seen"].get(seen)
                if left != right and f"seen.{seen}" not in accepted:
                    rows.append(f"- seen.{seen}: production {left!r}, recorder {right!r}")
        elif production.get(key) != recorder.get(key):
            rows.append(f"- {key}: production {production.get(key)!r}, recorder {recorder.get(key)!r}")
    return rows


def _record_status(outcome: Outcome, name: str) -> str:
    task = outcome["tasks"].get(name)
    if task is None:
        return "discarded"
    return "failed" if task["outcome"] == "raised ValueError" else "succeeded"


RECORDER_DRIVERS: tuple[Driver, ...] = ("recorder", "recorder-bare")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("scenario", "anyio_backend", "driver"),
    [
        pytest.param(s, b, d, id=f"{s.id}[{b}-{d}]", marks=s.marks)
        for s in SCENARIOS
        for b in BACKENDS
        for d in RECORDER_DRIVERS
    ],
)
async def test_drivers_agree(scenario: Scenario, anyio_backend: Backend, driver: Driver) -> None:
    production, _ = await run(scenario, "production")
    recorded, recorder = await run(scenario, driver)
    assert recorder is not None

    rows = _differences(scenario, production, recorded)
    assert not rows, (
        f"Scenario {scenario.id!r} ({anyio_backend}, {driver}): the drivers disagree.\n" + "\n".join(rows) + "\n"
        f"Production:\n{pprint.pformat(production)}\n{driver}:\n{pprint.pformat(recorded)}"
    )
    if scenario.expect is not None:
        scenario.expect(production)
    # The records say what the tasks' own reports say.
    records: list[TaskRecord] = [r for r in recorder.records if r.source == "BackgroundTasks"]
    assert [r.name for r in records] == recorded["added"]
    for record in records:
        assert record.phase.value == "after_response"
        assert record.status.value == _record_status(recorded, record.name), recorder.timeline()
        assert (record.reason is not None) == (record.status.value == "discarded"), recorder.timeline()


def test_every_accepted_difference_is_shown() -> None:
    assert {kind for s in SCENARIOS for kind in s.accepted} == set(ACCEPTED)
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)
