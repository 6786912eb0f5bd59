"""Scenarios about what surrounds the endpoint: middleware, streams, WebSockets, mounts, routers, the lifespan."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and
# some of them name classes and dependencies local to a scenario's factory.

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.lowlevel
from fastapi import APIRouter, Depends, FastAPI, Request, Response, WebSocket
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from fastapi_tasks import Task, TaskConfig, Tasks, TasksScheduler, add_tasks
from fastapi_tasks.errors import BatchClosedError, FastAPITasksShutdownError, FastAPITasksUninitializedAppError

from ._harness import Client, Outcome, Probe, Scenario, SyncClient, new_app, short_name, statuses, task_outcome

ROUTER_LIFESPANS = ((0, 112, 2), "The lifespan of an included router")
"""What a scenario of a router with a lifespan of its own needs."""

TEARDOWN_AFTER_RESPONSE = (
    (0, 121),
    "Tearing a yield dependency down after the response was sent (before 0.118: before it)",
)
"""What a scenario needs whose request-scoped teardown must come after the response (0.118-0.120 are refused)."""

__all__ = ["SCENARIOS"]


async def _work(label: str) -> str:
    await anyio.lowlevel.checkpoint()
    return label


def _schedule_three(probe: Probe, tasks: TasksScheduler) -> None:
    probe.keep(tasks.task(name="immediate").schedule(_work, "immediate"))
    probe.keep(tasks.after_route.task(name="after_route").schedule(_work, "after_route"))
    probe.keep(tasks.after_response.task(name="after_response").schedule(_work, "after_response"))


def _all_succeeded(outcome: Outcome) -> None:
    assert set(statuses(outcome).values()) == {"succeeded"}


# --- middleware ----------------------------------------------------------------------------------


def base_http_middleware(probe: Probe) -> FastAPI:
    app = new_app(probe)

    @app.middleware("http")
    async def add_header(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["x-middleware"] = "ran"
        return response

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)

    return app


class PathPrefixStripper:
    """Pure ASGI middleware that hands the app a copy of the scope with `/v1` taken off the path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            scope = dict(scope, path=scope["path"][3:])
        await self.app(scope, receive, send)


def scope_copying_middleware(probe: Probe, *, added_after_add_tasks: bool) -> FastAPI:
    if added_after_add_tasks:
        app = new_app(probe)
        app.add_middleware(PathPrefixStripper)  # outside the add_tasks middleware
    else:
        app = FastAPI()
        app.add_middleware(PathPrefixStripper)  # inside the add_tasks middleware
        new_app(probe, app=app)

    @app.get("/items")
    async def items(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)

    return app


async def _get_v1_items(client: Client) -> None:
    await client.get("/v1/items")


def gzip(probe: Probe) -> FastAPI:
    app = new_app(probe)
    app.add_middleware(GZipMiddleware, minimum_size=100)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> PlainTextResponse:
        _schedule_three(probe, tasks)
        return PlainTextResponse("compressible " * 100)

    return app


# --- streaming responses -------------------------------------------------------------------------

StreamEnd = Literal["read-fully", "cancel", "send-fails", "disconnect"]


def streaming_app(probe: Probe, end: StreamEnd) -> FastAPI:
    app = new_app(probe)

    async def from_stream() -> str:
        return "scheduled while streaming"

    async def chunks(tasks: TasksScheduler) -> AsyncIterator[str]:
        try:
            yield "first chunk "
            probe.keep(tasks.after_response.schedule(from_stream))
            if end in ("cancel", "disconnect"):
                await anyio.sleep_forever()  # the client walks away while the stream waits
            if end != "send-fails":
                # With send-fails, the message that fails is the one ending the body: the generator
                # is exhausted by then, not left at a yield for the garbage collector to close.
                yield "second chunk"
        finally:
            probe.note("stream_closed", True)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> StreamingResponse:
        _schedule_three(probe, tasks)
        return StreamingResponse(chunks(tasks), media_type="text/plain")

    return app


def _discards_honestly(outcome: Outcome) -> None:
    # The endpoint returned normally: the after_response tasks were dropped because the response
    # could not be sent, and the discard log must say so rather than blame the endpoint.
    assert statuses(outcome) == {
        "immediate": "succeeded",
        "after_route": "succeeded",
        "after_response": "discarded",
        "from_stream": "discarded",
    }
    discards = [line for line in outcome.get("logs", {}) if "Discarded" in line]
    assert len(discards) == 1, outcome.get("logs")
    [line] = discards
    # Cancelled ("cancel"), the request cannot tell a client that left from a server shutting down.
    assert line.startswith(
        (
            "INFO Discarded 2 after_response task(s) because the client went away before the ",
            "INFO Discarded 2 after_response task(s) because the request was cancelled before the response was sent",
        )
    ), line
    assert line.endswith(": 'after_response', 'streaming_app.<locals>.from_stream'"), line


def _abandon(how: Literal["cancel", "send-fails", "disconnect"]) -> Callable[[Client], Awaitable[None]]:
    async def script(client: Client) -> None:
        await client.abandon_stream("/", how)
        if how == "cancel":
            # A cancelled call ends at once, in production and under the recorder, and the request's tasks
            # go on without it: the script waits for them, as a test of a cancelled call must.
            for task in list(client.probe.tasks.values()):
                await task.wait()

    return script


async def _read_fully(client: Client) -> None:
    await client.get_text("/")


def batches_first_used_late(probe: Probe) -> FastAPI:
    """No task deferred while the endpoint runs: the batches are first used once their phase is over, or not."""
    app = new_app(probe)

    def try_after_route(tasks: TasksScheduler, where: str) -> None:
        try:
            tasks.after_route.schedule(_work, "too late")
        except BatchClosedError as exc:
            probe.note(f"after_route {where}", str(exc).split(":")[0])
        else:
            probe.note(f"after_route {where}", "accepted")

    async def teardown(tasks: Tasks, request: Request) -> AsyncIterator[None]:
        yield
        # The response was sent; the request's own teardown runs before its after_response phase.
        try_after_route(tasks, f"in the teardown of {request.url.path}")
        name = "from_teardown" if request.url.path == "/" else "first_from_teardown"
        probe.keep(tasks.after_response.task(name=name).schedule(_work, name))

    async def chunks(tasks: TasksScheduler) -> AsyncIterator[str]:
        yield "first chunk"
        # The endpoint has returned: after_route is over, after_response is still to come.
        try_after_route(tasks, "in the stream")
        probe.keep(tasks.after_response.task(name="from_stream").schedule(_work, "from_stream"))
        yield "second chunk"

    @app.get("/", dependencies=[Depends(teardown)])
    async def streams(tasks: Tasks) -> StreamingResponse:
        probe.keep(tasks.task(name="immediate").schedule(_work, "immediate"))
        return StreamingResponse(chunks(tasks), media_type="text/plain")

    @app.get("/plain", dependencies=[Depends(teardown)])
    async def plain(tasks: Tasks) -> None:
        """Nothing deferred, no stream: the teardown is the first to use after_response."""

    return app


async def _read_both(client: Client) -> None:
    await client.get_text("/")
    await client.get("/plain")


def _late_uses_follow_the_phases(outcome: Outcome) -> None:
    assert statuses(outcome) == {
        "immediate": "succeeded",
        "from_stream": "succeeded",
        "from_teardown": "succeeded",
        "first_from_teardown": "succeeded",
    }
    refused = "Cannot add '_work' to the after_route batch"
    assert outcome["notes"] == {
        "after_route in the stream": refused,
        "after_route in the teardown of /": refused,
        "after_route in the teardown of /plain": refused,
    }


# --- WebSockets ----------------------------------------------------------------------------------


BUSY_CHECKPOINTS = 2000
"""Awaits of `_busy_work`: some milliseconds of work, far longer than `TestClient` takes to leave a session."""


async def _busy_work(label: str) -> str:
    for _ in range(BUSY_CHECKPOINTS):
        await anyio.lowlevel.checkpoint()
    return label


def websocket_app(probe: Probe, *, server_closes: bool, busy: bool = False) -> FastAPI:
    app = new_app(probe)

    @app.websocket("/ws")
    async def chat(websocket: WebSocket, tasks: Tasks) -> None:
        await websocket.accept()
        if busy:
            probe.keep(tasks.task(name="immediate").schedule(_busy_work, "immediate"))
            probe.keep(tasks.after_route.task(name="after_route").schedule(_busy_work, "after_route"))
            probe.keep(tasks.after_response.task(name="after_response").schedule(_busy_work, "after_response"))
        else:
            _schedule_three(probe, tasks)
        if server_closes:
            text = await websocket.receive_text()
            await websocket.send_text(text.upper())
            await websocket.close(code=1000)
            return
        while True:  # until the client goes away: WebSocketDisconnect
            await websocket.send_text(await websocket.receive_text())

    return app


# Both scripts wait until the app has ended the session before they leave the `websocket_connect()`
# block, whose exit cancels the app: else what the client sees would depend on how far the app got
# (in run mode, a request waits for its tasks at the bottom of its exit stacks) when it was cancelled.


def _chat_then_server_closes(client: SyncClient) -> None:
    with client.client.websocket_connect("/ws") as websocket:
        websocket.send_text("hello")
        reply = websocket.receive_text()
        try:
            websocket.receive_text()
        except WebSocketDisconnect as exc:
            closed = f"closed by the server with {exc.code}"
        else:
            closed = "not closed"
        client.wait_until_served("/ws", websocket)
    client.probe.requests.append(f"WEBSOCKET /ws: {reply!r}, {closed}")


def _chat_then_client_leaves(client: SyncClient) -> None:
    try:
        with client.client.websocket_connect("/ws") as websocket:
            websocket.send_text("hello")
            reply = websocket.receive_text()
            websocket.close(code=1001)
            client.wait_until_served("/ws", websocket)
    except Exception as exc:
        # The app let the session's WebSocketDisconnect out, as FastAPI does; TestClient re-raises it.
        client.probe.requests.append(f"WEBSOCKET /ws: {reply!r}, client left, then raised {type(exc).__name__}")
    else:
        client.probe.requests.append(f"WEBSOCKET /ws: {reply!r}, client left")


def _chat_then_client_leaves_at_once(client: SyncClient) -> None:
    # As a test does it: whatever TestClient raises on leaving the block depends on how far the app got
    # before TestClient cancelled it, so it is noted, not told apart.
    try:
        with client.client.websocket_connect("/ws") as websocket:
            websocket.send_text("hello")
            reply = websocket.receive_text()
            websocket.close(code=1001)
    except WebSocketDisconnect:
        pass
    client.probe.requests.append(f"WEBSOCKET /ws: {reply!r}, client left")


def _get_with_testclient(client: SyncClient) -> None:
    client.get("/")


def testclient_http(probe: Probe) -> FastAPI:
    app = new_app(probe)

    def audit(label: str) -> str:
        return label

    @app.get("/")
    def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="immediate").schedule(audit, "immediate"))
        probe.keep(tasks.after_route.task(name="after_route").schedule(audit, "after_route"))
        probe.keep(tasks.after_response.task(name="after_response").schedule(audit, "after_response"))

    return app


# --- mounted apps, routers, the lifespan ---------------------------------------------------------


def mounted_app(probe: Probe) -> FastAPI:
    app = new_app(probe)
    sub = FastAPI()

    @sub.get("/")
    async def sub_endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)

    app.mount("/sub", sub)
    return app


async def _get_sub(client: Client) -> None:
    await client.get("/sub/")


def _on_error_noting(probe: Probe, handler_name: str) -> Callable[[Task[..., Any], Exception], None]:
    def handler(task: Task[..., Any], exc: Exception) -> None:
        probe.see(short_name(task.name), handled_by=handler_name)

    handler.__qualname__ = handler_name
    return handler


def mounted_app_own_config(probe: Probe) -> FastAPI:
    app = new_app(probe, config=TaskConfig(on_error=_on_error_noting(probe, "parent_handler")))
    sub = new_app(probe, config=TaskConfig(on_error=_on_error_noting(probe, "sub_handler")))

    async def fail() -> None:
        raise ValueError("the mounted app's task failed")

    @sub.get("/")
    async def sub_endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_response.schedule(fail))

    app.mount("/sub", sub)
    return app


def _mounted(app: FastAPI) -> FastAPI:
    [mount] = [route for route in app.routes if isinstance(route, Mount)]
    assert isinstance(mount.app, FastAPI)
    return mount.app


class Pool:
    """A connection pool that the router's lifespan opens and closes."""

    def __init__(self) -> None:
        self.closed = False


def router_with_lifespan(probe: Probe) -> FastAPI:
    app = new_app(probe)

    @asynccontextmanager
    async def router_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        pool = Pool()
        yield {"pool": pool}
        pool.closed = True

    router = APIRouter(lifespan=router_lifespan)

    async def use_pool(pool: Pool) -> str:
        probe.see("use_pool", pool_closed=pool.closed)
        return "queried"

    @router.get("/")
    async def endpoint(request: Request, tasks: Tasks) -> None:
        probe.keep(tasks.after_response.schedule(use_pool, request.state.pool))

    app.include_router(router)
    return app


def _pool_was_open(outcome: Outcome) -> None:
    assert task_outcome(outcome, "use_pool")["seen.pool_closed"] is False
    _all_succeeded(outcome)


def router_pool_at_shutdown(probe: Probe) -> FastAPI:
    # A grace period long enough for the task, which ends as soon as the shutdown has begun.
    app = new_app(probe, shutdown_timeout=5)

    @asynccontextmanager
    async def router_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        pool = Pool()
        yield {"pool": pool}
        pool.closed = True
        probe.note("pool_closed", True)

    router = APIRouter(lifespan=router_lifespan)

    async def flush_to_pool(pool: Pool) -> str:
        await probe.signal("shutdown").wait()
        await anyio.lowlevel.checkpoint()
        probe.see("flush_to_pool", pool_closed=pool.closed)
        return "flushed"

    @router.get("/")
    async def endpoint(request: Request, tasks: Tasks) -> None:
        probe.keep(tasks.schedule(flush_to_pool, request.state.pool))
        probe.signal("scheduled").set()

    app.include_router(router)
    return app


async def _shut_down_while_a_task_runs(client: Client) -> None:
    async with anyio.create_task_group() as tg:
        # In run mode the request waits for its task, which waits for the shutdown: make it concurrently.
        tg.start_soon(client.get, "/")
        await client.probe.signal("scheduled").wait()
        await client.shutdown()


def _pool_open_during_shutdown(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200"]
    assert task_outcome(outcome, "flush_to_pool")["seen.pool_closed"] is False
    assert outcome["notes"] == {"pool_closed": True}
    _all_succeeded(outcome)


def endpoint_returns_after_shutdown(probe: Probe, *, schedules_late: bool) -> FastAPI:
    app = new_app(probe)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> dict[str, str]:
        probe.keep(tasks.after_route.task(name="after_route").schedule(_work, "after_route"))
        probe.keep(tasks.after_response.task(name="after_response").schedule(_work, "after_response"))
        probe.signal("inside").set()
        await probe.signal("shut down").wait()
        if schedules_late:
            try:
                probe.keep(tasks.task(name="too-late").schedule(_work, "too late"))
            except FastAPITasksShutdownError:
                probe.note("schedule_after_shutdown", "refused: FastAPITasksShutdownError")
        return {"ok": "yes"}

    return app


async def _shut_down_mid_request(client: Client) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.get, "/")
        await client.probe.signal("inside").wait()
        await client.shutdown()
        client.probe.signal("shut down").set()


def batch_never_started(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def forgotten() -> str:
        return "ran"  # pragma: no cover - its batch is never started

    async def parent() -> None:
        # A scheduler built in a task is bound to no request: its batches start when its code says so.
        scheduler = TasksScheduler()
        probe.keep(scheduler.after_response.task(name="forgotten").schedule(forgotten))
        probe.signal("scheduled").set()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="parent").schedule(parent))

    return app


async def _request_then_shut_down(client: Client) -> None:
    await client.get("/")
    await client.probe.signal("scheduled").wait()
    await client.shutdown()


def _never_started_cancelled_with_a_warning(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200"]
    assert statuses(outcome) == {"parent": "succeeded", "forgotten": "cancelled"}
    warning = (
        "WARNING Cancelled 1 after_response task(s) whose batch was never started: 'forgotten'. A TasksScheduler "
        "built outside a request (in a task, or in the lifespan) starts its batches by hand: "
        "batch.__start__(scheduler)"
    )
    assert outcome["logs"] == {warning: 1}


def _deferred_cancelled_with_a_warning(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200"]
    assert statuses(outcome) == {"after_route": "cancelled", "after_response": "cancelled"}
    assert outcome["logs"] == {
        f"WARNING Cancelled 1 {phase} task(s) of a request that ended after the app shut down: '{phase}'": 1
        for phase in ("after_route", "after_response")
    }


def _refused_after_shutdown(outcome: Outcome) -> None:
    _deferred_cancelled_with_a_warning(outcome)
    assert outcome["notes"] == {"schedule_after_shutdown": "refused: FastAPITasksShutdownError"}


def schedule_three_app(probe: Probe, *, tasks: bool = True) -> FastAPI:
    app = new_app(probe, tasks=tasks)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)

    return app


def _uninitialized(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: raised FastAPITasksUninitializedAppError"]
    assert outcome["tasks"] == {}


def _ran_without_the_lifespan(outcome: Outcome) -> None:
    # What the accepted difference allows, and no more: the request is served and every task succeeds,
    # as production does it with its lifespan.
    assert outcome["requests"] == ["GET /: 200"]
    assert outcome["sent"] == ["GET /: 200"]
    assert statuses(outcome) == {"immediate": "succeeded", "after_route": "succeeded", "after_response": "succeeded"}


# --- issue 20: a WebSocket the client closes, a mounted app whose parent has no add_tasks --------


def websocket_cleanup_on_disconnect(probe: Probe) -> FastAPI:
    """Tasks after the session, and a cleanup task scheduled where the client's leaving is noticed."""
    app = new_app(probe)

    def sync_work(label: str) -> str:
        return label

    @app.websocket("/ws")
    async def chat(websocket: WebSocket, tasks: Tasks) -> None:
        await websocket.accept()
        probe.keep(tasks.after_response.task(name="after_response").schedule(_work, "after_response"))
        probe.keep(tasks.after_response.task(name="sync-after-response").schedule(sync_work, "sync"))
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            probe.keep(tasks.after_route.task(name="cleanup").schedule(_work, "cleanup"))

    return app


def _cleanup_ran(outcome: Outcome) -> None:
    assert outcome["requests"] == ["WEBSOCKET /ws: 'hello', client left"]
    assert statuses(outcome) == {
        "after_response": "succeeded",
        "sync-after-response": "succeeded",
        "cleanup": "succeeded",
    }


class _NotesRefusal:
    """Pure ASGI middleware that notes, in `probe.sent`, whether a refusal of `Tasks` names mounted apps."""

    def __init__(self, app: ASGIApp, probe: Probe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except FastAPITasksUninitializedAppError as exc:
            names = "names" if "mount" in str(exc).lower() else "does not name"
            self.probe.sent.append(f"{scope['method']} {scope['path']}: refused; the error {names} mounted apps")
            raise


def mounted_app_without_parent_tasks(probe: Probe) -> FastAPI:
    """`add_tasks(sub)` on a mounted app; the parent has none, so no server ever runs the sub-app's lifespan."""
    app = new_app(probe, tasks=False)
    app.add_middleware(_NotesRefusal, probe=probe)
    sub = FastAPI()
    add_tasks(sub, config=TaskConfig(on_error=_on_error_noting(probe, "sub_handler"), shield=True))

    @sub.get("/")
    async def sub_endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)

    app.mount("/sub", sub)
    return app


def _refused_naming_mounted_apps(outcome: Outcome) -> None:
    [request] = outcome["requests"]
    assert request == "GET /sub/: raised FastAPITasksUninitializedAppError"
    assert "GET /sub/: refused; the error names mounted apps" in outcome["sent"], outcome["sent"]
    assert outcome["tasks"] == {}


def _ran_with_the_mounted_apps_config(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /sub/: 200"]
    assert statuses(outcome) == {"immediate": "succeeded", "after_route": "succeeded", "after_response": "succeeded"}
    for name, fields in outcome["tasks"].items():
        assert (fields["config.on_error"], fields["config.shield"]) == ("sub_handler", True), (name, fields)


def _get_sub_with_testclient(client: SyncClient) -> None:
    client.get("/sub/")


SCENARIOS = [
    Scenario(
        "batches-first-used-late",
        "after_route first used in a stream or a request-scoped teardown is refused; after_response is taken.",
        batches_first_used_late,
        script=_read_both,
        expect=_late_uses_follow_the_phases,
        fastapi=TEARDOWN_AFTER_RESPONSE,
    ),
    Scenario(
        "base-http-middleware",
        "A BaseHTTPMiddleware (@app.middleware('http')) around an endpoint that schedules in each phase.",
        base_http_middleware,
        expect=_all_succeeded,
    ),
    Scenario(
        "scope-copying-middleware-outside",
        "A pure ASGI middleware added after add_tasks hands the app dict(scope, path=...).",
        lambda probe: scope_copying_middleware(probe, added_after_add_tasks=True),
        script=_get_v1_items,
        expect=_all_succeeded,
    ),
    Scenario(
        "scope-copying-middleware-inside",
        "A pure ASGI middleware added before add_tasks hands the app dict(scope, path=...).",
        lambda probe: scope_copying_middleware(probe, added_after_add_tasks=False),
        script=_get_v1_items,
        expect=_all_succeeded,
    ),
    Scenario(
        "gzip",
        "GZipMiddleware compresses the response of an endpoint that schedules in each phase.",
        gzip,
        expect=_all_succeeded,
    ),
    Scenario(
        "streaming-read-fully",
        "A streaming response, read to its end, whose generator schedules an after_response task.",
        lambda probe: streaming_app(probe, "read-fully"),
        script=_read_fully,
        expect=_all_succeeded,
    ),
    Scenario(
        "streaming-abandoned-cancelled",
        "Issue 11 #10: the client stops reading a stream and the server cancels the request.",
        lambda probe: streaming_app(probe, "cancel"),
        script=_abandon("cancel"),
        accepted_bare=("nothing-outlives-a-bare-call",),
        expect=_discards_honestly,
    ),
    Scenario(
        "streaming-abandoned-send-fails",
        "The client of a stream goes away and sending the next chunk fails (ASGI 2.4: ClientDisconnect).",
        lambda probe: streaming_app(probe, "send-fails"),
        script=_abandon("send-fails"),
        expect=_discards_honestly,
    ),
    Scenario(
        "streaming-abandoned-disconnect-message",
        "The client of a stream goes away and the server says http.disconnect (ASGI 2.0).",
        lambda probe: streaming_app(probe, "disconnect"),
        script=_abandon("disconnect"),
    ),
    Scenario(
        "websocket-normal-close",
        "A WebSocket endpoint schedules in each phase, answers, and closes normally.",
        lambda probe: websocket_app(probe, server_closes=True),
        sync_script=_chat_then_server_closes,
        expect=_all_succeeded,
    ),
    Scenario(
        "websocket-client-disconnect",
        "A WebSocket endpoint schedules in each phase; the client goes away (WebSocketDisconnect: a normal end).",
        lambda probe: websocket_app(probe, server_closes=False),
        sync_script=_chat_then_client_leaves,
        expect=_all_succeeded,
    ),
    Scenario(
        "websocket-client-leaves-while-tasks-run",
        "The client leaves a WebSocket session (TestClient's block ends) while the session's tasks still run.",
        lambda probe: websocket_app(probe, server_closes=False, busy=True),
        sync_script=_chat_then_client_leaves_at_once,
        expect=_all_succeeded,
        accepted_bare=("nothing-outlives-a-bare-call",),
        # An older TestClient neither cancels the session nor waits for it when the block ends: what the
        # script reads next, the session may not have done yet, with or without the recorder.
        starlette=((0, 45), "TestClient waiting for the end of a WebSocket session it leaves"),
    ),
    Scenario(
        "testclient-http",
        "A sync endpoint with sync tasks, through TestClient (its lifespan in a `with` block).",
        testclient_http,
        sync_script=_get_with_testclient,
        expect=_all_succeeded,
    ),
    Scenario(
        "mounted-app",
        "An app without add_tasks, mounted in one with it, schedules in each phase.",
        mounted_app,
        script=_get_sub,
        expect=_all_succeeded,
    ),
    Scenario(
        "mounted-app-own-config-recorder-on-parent",
        "Issue 11 #7: parent and mounted app each add_tasks with their own on_error; recorder on the parent.",
        mounted_app_own_config,
        script=_get_sub,
    ),
    Scenario(
        "mounted-app-own-config-recorder-on-sub",
        "Issue 11 #7: parent and mounted app each add_tasks with their own on_error; recorder on the mounted app.",
        mounted_app_own_config,
        script=_get_sub,
        install_on=_mounted,
    ),
    Scenario(
        "router-with-lifespan",
        "A router included with its own lifespan (a pool) that an after_response task uses.",
        router_with_lifespan,
        fastapi=ROUTER_LIFESPANS,
        bare_opt_out="the endpoint reads the pool its router's lifespan opens: without it the app fails, tasks or not",
        expect=_pool_was_open,
    ),
    Scenario(
        "router-lifespan-pool-at-shutdown",
        "A task uses the pool of a router's lifespan (included after add_tasks) once the shutdown has begun.",
        router_pool_at_shutdown,
        fastapi=ROUTER_LIFESPANS,
        script=_shut_down_while_a_task_runs,
        bare_opt_out="the script shuts the app down: a bare client runs no lifespan to shut down",
        expect=_pool_open_during_shutdown,
    ),
    Scenario(
        "batch-never-started",
        "A task builds TasksScheduler() and adds to its after_response batch, which nobody starts; then shutdown.",
        batch_never_started,
        script=_request_then_shut_down,
        bare_opt_out="the script shuts the app down: a bare client runs no lifespan to shut down",
        expect=_never_started_cancelled_with_a_warning,
    ),
    Scenario(
        "endpoint-returns-after-shutdown",
        "The app shuts down while an endpoint that scheduled after_route and after_response tasks waits.",
        lambda probe: endpoint_returns_after_shutdown(probe, schedules_late=False),
        script=_shut_down_mid_request,
        bare_opt_out="the script shuts the app down: a bare client runs no lifespan to shut down",
        expect=_deferred_cancelled_with_a_warning,
    ),
    Scenario(
        "schedule-after-shutdown-refused",
        "After the app shut down, an endpoint schedules an immediate task: FastAPITasksShutdownError.",
        lambda probe: endpoint_returns_after_shutdown(probe, schedules_late=True),
        script=_shut_down_mid_request,
        bare_opt_out="the script shuts the app down: a bare client runs no lifespan to shut down",
        expect=_refused_after_shutdown,
    ),
    Scenario(
        "lifespan-not-running",
        "Issue 20 #4: the app's lifespan does not run: production refuses, a bare test client runs the tasks.",
        schedule_three_app,
        lifespan=False,
        accepted=("lifespan-not-running",),
        expect=_uninitialized,
        expect_recorder=_ran_without_the_lifespan,
    ),
    Scenario(
        "no-add-tasks",
        "Issue 11 #2: an app that uses Tasks but never called add_tasks(app).",
        lambda probe: schedule_three_app(probe, tasks=False),
        expect=_uninitialized,
    ),
    Scenario(
        "websocket-client-closes-cleanup-task",
        "Issue 20 #5: the client closes a WebSocket; the endpoint schedules an after_route cleanup task in "
        "`except WebSocketDisconnect`, after two after_response tasks: all of them run (bare: TestClient(app)).",
        websocket_cleanup_on_disconnect,
        sync_script=_chat_then_client_leaves,
        expect=_cleanup_ran,
    ),
    Scenario(
        "mounted-app-without-parent-tasks",
        "Issue 20 #7: add_tasks(sub) on a mounted app under a parent without it, recorder on the parent. Production "
        "refuses (no server runs a mounted app's lifespan), naming mounted apps; so does the recorder, with the "
        "lifespan and bare: no lifespan of this app could ever run the tasks.",
        mounted_app_without_parent_tasks,
        script=_get_sub,
        expect=_refused_naming_mounted_apps,
    ),
    Scenario(
        "mounted-app-without-parent-tasks-testclient",
        "Issue 20 #7: as mounted-app-without-parent-tasks, through TestClient: with the lifespan (in a `with` block) "
        "and bare.",
        mounted_app_without_parent_tasks,
        sync_script=_get_sub_with_testclient,
        expect=_refused_naming_mounted_apps,
    ),
]
