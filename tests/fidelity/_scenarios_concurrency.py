"""Scenarios about each task being a task of its own: its context, its identity, tasks that wait for each
other or are cancelled while they run, and tasks that outlive their request (issue 20, #2 and #3)."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and
# some of them name classes and dependencies local to a scenario's factory.

import asyncio
import contextvars
import gc
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import sniffio
import trio
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_tasks import Task, TaskConfig, Tasks, TasksScheduler
from fastapi_tasks_testing import RecordingScheduler

from ._harness import HANG_GUARD, Client, Outcome, Probe, Scenario, new_app, statuses, task_outcome

__all__ = ["SCENARIOS"]


def _all_succeeded(outcome: Outcome) -> None:
    assert set(statuses(outcome).values()) == {"succeeded"}, statuses(outcome)


# --- context -------------------------------------------------------------------------------------

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""Set per request by a middleware, as request-id, tenant, structlog and OpenTelemetry contexts are."""
set_by_a_task: contextvars.ContextVar[str | None] = contextvars.ContextVar("set_by_a_task", default=None)
stage: contextvars.ContextVar[str | None] = contextvars.ContextVar("stage", default=None)


class RequestIdMiddleware:
    """Pure ASGI middleware that sets `request_id` for the request (`req-<path>`), and gives it a fresh `stage`.

    A server runs each request in a task of its own; httpx's `ASGITransport` runs it in the client's,
    so what the endpoint sets would outlive its request: the middleware restores both when it returns.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = request_id.set(f"req{scope['path'].replace('/', '-')}")
        stage_token = stage.set(None)
        try:
            await self.app(scope, receive, send)
        finally:
            stage.reset(stage_token)
            request_id.reset(token)


def context_app(probe: Probe) -> FastAPI:
    app = new_app(probe)
    app.add_middleware(RequestIdMiddleware)

    def look(name: str) -> None:
        probe.see(name, request_id=request_id.get(), set_by_a_task=set_by_a_task.get(), stage=stage.get())

    async def sets_a_variable(name: str) -> None:
        look(name)
        set_by_a_task.set(name)
        await anyio.lowlevel.checkpoint()

    async def later(name: str) -> None:
        look(name)
        await anyio.lowlevel.checkpoint()

    @app.get("/{n}")
    async def endpoint(n: int, tasks: Tasks) -> None:
        first = probe.keep(tasks.task(name=f"first-{n}").schedule(sets_a_variable, f"first-{n}"))
        probe.keep(tasks.after_route.task(name=f"after-route-{n}").schedule(later, f"after-route-{n}"))
        probe.keep(tasks.after_response.task(name=f"after-response-{n}").schedule(later, f"after-response-{n}"))
        await first.wait()
        # After the deferred tasks were scheduled: production copies their context when it starts them.
        stage.set(f"set by endpoint {n} after scheduling")
        probe.keep(tasks.task(name=f"second-{n}").schedule(later, f"second-{n}"))

    return app


async def _two_requests(client: Client) -> None:
    await client.get("/1")
    await client.get("/2")


def _context_as_production_gives_it(outcome: Outcome) -> None:
    _all_succeeded(outcome)
    for n in (1, 2):
        for name in (f"first-{n}", f"second-{n}", f"after-route-{n}", f"after-response-{n}"):
            fields = task_outcome(outcome, name)
            assert fields["seen.request_id"] == f"req-{n}", (name, fields)
            assert fields["seen.set_by_a_task"] is None, (name, fields)
        assert task_outcome(outcome, f"first-{n}")["seen.stage"] is None
        assert task_outcome(outcome, f"second-{n}")["seen.stage"] == f"set by endpoint {n} after scheduling"


# --- identity ------------------------------------------------------------------------------------


def _current_task() -> object:
    """The task running now, as the event loop knows it (what `async_scoped_session(scopefunc=...)` keys on)."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # not asyncio's loop
        return trio.lowlevel.current_task()


def task_identity_app(probe: Probe) -> FastAPI:
    """A session registry keyed on the current task, as SQLAlchemy's `async_scoped_session` keys it."""
    app = new_app(probe)
    registry: dict[int, tuple[object, str]] = {}  # id(task) -> (the task, kept alive so no id is reused; owner)

    def session_for(owner: str) -> str:
        task = _current_task()
        return registry.setdefault(id(task), (task, owner))[1]

    async def use_session(name: str) -> None:
        probe.see(name, got_the_session_of=session_for(name))
        await anyio.lowlevel.checkpoint()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.note("endpoint got the session of", session_for("endpoint"))
        first = probe.keep(tasks.task(name="immediate-1").schedule(use_session, "immediate-1"))
        second = probe.keep(tasks.task(name="immediate-2").schedule(use_session, "immediate-2"))
        probe.keep(tasks.after_route.task(name="after-route").schedule(use_session, "after-route"))
        probe.keep(tasks.after_response.task(name="after-response").schedule(use_session, "after-response"))
        await first.wait()
        await second.wait()

    return app


def _each_its_own_task(outcome: Outcome) -> None:
    _all_succeeded(outcome)
    assert outcome["notes"] == {"endpoint got the session of": "endpoint"}
    for name, fields in outcome["tasks"].items():
        assert fields["seen.got_the_session_of"] == name, (name, fields)


# --- tasks that wait for each other --------------------------------------------------------------


def handshake_app(probe: Probe) -> FastAPI:
    """Two immediate tasks that each wait for the other to have begun."""
    app = new_app(probe)

    async def ping() -> str:
        probe.signal("ping").set()
        await probe.signal("pong").wait()
        return "ping"

    async def pong() -> str:
        await probe.signal("ping").wait()
        probe.signal("pong").set()
        return "pong"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.schedule(pong))  # first, and it waits for the second
        probe.keep(tasks.schedule(ping))

    return app


def after_route_waits_for_after_response_app(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def waits_for_after_response() -> str:
        await probe.signal("after_response began").wait()
        return "the after_response task began"

    async def signals() -> str:
        probe.signal("after_response began").set()
        return "signalled"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_route.schedule(waits_for_after_response))
        probe.keep(tasks.after_response.schedule(signals))

    return app


# --- cancelling a running task -------------------------------------------------------------------


def cancel_second_app(probe: Probe) -> FastAPI:
    """The endpoint cancels the second of two immediate tasks once the first has signalled."""
    app = new_app(probe)

    async def first() -> str:
        probe.signal("first ran").set()
        return "first"

    async def second() -> str:
        probe.see("second", began=True)
        await probe.signal("never set").wait()
        return "not reached"  # pragma: no cover - cancelled while it waits

    @app.get("/")
    async def endpoint(tasks: Tasks) -> dict[str, object]:
        probe.keep(tasks.schedule(first))
        task = probe.keep(tasks.schedule(second))
        await probe.signal("first ran").wait()
        started_when_cancelled = task.started.is_set()
        task.cancel()
        await task.wait()
        return {"started when cancelled": started_when_cancelled, "status": task.status.value}

    return app


async def _get_root_text(client: Client) -> None:
    await client.get_text("/")


def _second_cancelled_while_running(outcome: Outcome) -> None:
    assert outcome["requests"] == [
        "GET /: 200",
        'GET /: body \'{"started when cancelled":true,"status":"cancelled"}\'',
    ]
    assert statuses(outcome) == {"first": "succeeded", "second": "cancelled"}
    assert task_outcome(outcome, "second")["seen.began"] is True


# --- tasks that outlive their request ------------------------------------------------------------

MIDDLEWARE_TIMEOUT = HANG_GUARD / 2
"""The timeout middleware's limit: what a request waiting for its tasks inside the app would run into."""


class TimeoutMiddleware:
    """Pure ASGI middleware that times each request out (`anyio.fail_after`), and says when it returned."""

    def __init__(self, app: ASGIApp, probe: Probe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            with anyio.fail_after(MIDDLEWARE_TIMEOUT):
                await self.app(scope, receive, send)
        finally:
            self.probe.signal("the middleware returned").set()


def timeout_middleware_app(probe: Probe) -> FastAPI:
    app = new_app(probe)
    app.add_middleware(TimeoutMiddleware, probe=probe)

    async def outlives_the_middleware() -> str:
        # Deterministically longer than the request: it ends only once the middleware has returned.
        await probe.signal("the middleware returned").wait()
        return "finished after its request"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> dict[str, str]:
        probe.keep(tasks.after_response.schedule(outlives_the_middleware))
        return {"ok": "yes"}

    return app


async def poll_until_stopped(probe: Probe) -> str:
    """A poller that runs until its app stops it (never, as far as its request knows)."""
    probe.see("poll_until_stopped", began=True)
    await probe.signal("stop polling").wait()
    probe.see("poll_until_stopped", responses_sent_when_stopped=probe.responses_sent)
    return "stopped"


def poller_app(probe: Probe) -> FastAPI:
    app = new_app(probe)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> dict[str, str]:
        probe.keep(tasks.schedule(poll_until_stopped, probe))
        return {"polling": "yes"}

    return app


def _detach_the_poller(recorder: RecordingScheduler) -> None:
    # As a test says it: the request need not wait for this task, which outlives it on purpose.
    recorder.detach(poll_until_stopped)  # type: ignore[attr-defined,unused-ignore]  # new in issue 20


async def _get_then_stop_the_poller(client: Client) -> None:
    await client.get("/")
    client.probe.signal("stop polling").set()
    # Nothing waits for a detached task: the test that detached it does, as its app would stop it.
    await client.probe.tasks["poll_until_stopped"].wait()


def _answered_while_polling(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200"]
    assert task_outcome(outcome, "poll_until_stopped")["status"] == "succeeded"
    assert task_outcome(outcome, "poll_until_stopped")["seen.responses_sent_when_stopped"] == 1


def _statuses(expected: dict[str, str]) -> Callable[[Outcome], None]:
    def expect(outcome: Outcome) -> None:
        assert outcome["requests"] == ["GET /: 200"]
        assert statuses(outcome) == expected

    return expect


# --- schedulers built in helper tasks of a background task --------------------------------------


class RequestReturnedMiddleware:
    """Pure ASGI middleware, outside `add_tasks`'s, that sets "the request returned" once the app's call is over."""

    def __init__(self, app: ASGIApp, probe: Probe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.probe.signal("the request returned").set()


HELPER_TIMINGS = ("while-streaming", "after-the-request")


def helper_task_schedulers_app(probe: Probe) -> FastAPI:
    """Issue 21 #3: background tasks that build schedulers in helper tasks (a task group's task, a worker
    thread, and on asyncio `asyncio.gather`), while the response streams and after the request's call returned.

    Each helper builds `TasksScheduler()`, schedules an immediate task and an after_route task (whose batch,
    bound to no request, it starts by hand), and builds `TasksScheduler(tg)` on the app's task group, whose
    task fails: both must be the app's (its on_error, its shutdown), never the ended request's.
    """

    async def handled(task: Task[..., Any], exc: Exception) -> None:
        probe.see(task.name, handled_by_the_apps_on_error=str(exc))

    app = new_app(probe, config=TaskConfig(on_error=handled))
    app.add_middleware(RequestReturnedMiddleware, probe=probe)

    async def child(label: str) -> str:
        await anyio.lowlevel.checkpoint()
        return label

    async def fails(label: str) -> None:
        await anyio.lowlevel.checkpoint()
        raise ValueError(label)

    def build(label: str, tg: anyio.abc.TaskGroup) -> None:
        tasks = TasksScheduler()
        probe.keep(tasks.task(name=f"{label}-immediate").schedule(child, label))
        probe.keep(tasks.after_route.task(name=f"{label}-after-route").schedule(child, label))
        tasks.after_route.__start__(tasks)  # bound to no request: started by hand
        probe.keep(TasksScheduler(tg).task(name=f"{label}-from-tg").schedule(fails, label))
        # A scheduler dropped with its batch never started (only the task's handle is kept): the shutdown
        # cancels and names the task, however soon the garbage collector frees the scheduler.
        never = TasksScheduler().after_route.task(name=f"{label}-never-started").schedule(child, label)
        probe.keep(never, starts=False)

    async def build_here(label: str, tg: anyio.abc.TaskGroup) -> None:
        build(label, tg)

    async def background(when: str, tg: anyio.abc.TaskGroup) -> None:
        await probe.signal("streaming" if when == "while-streaming" else "the request returned").wait()
        async with anyio.create_task_group() as helpers:
            helpers.start_soon(build_here, f"{when}-task-group", tg)
        await anyio.to_thread.run_sync(build, f"{when}-to-thread", tg)
        if sniffio.current_async_library() == "asyncio":
            await asyncio.gather(build_here(f"{when}-gather", tg))
        gc.collect()
        probe.signal(f"built {when}").set()

    @app.get("/")
    async def endpoint(request: Request, tasks: Tasks) -> StreamingResponse:
        tg = request.state.fastapi_tasks_tg
        for when in HELPER_TIMINGS:
            probe.keep(tasks.task(name=when).schedule(background, when, tg))

        async def stream() -> Any:
            probe.signal("streaming").set()
            await probe.signal("built while-streaming").wait()
            yield b"streamed"

        return StreamingResponse(stream())

    return app


def _helper_schedulers_bound_to_the_app(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200", "GET /: body 'streamed'"]
    helpers = ["task-group", "to-thread", *(["gather"] if "while-streaming-gather-from-tg" in outcome["tasks"] else [])]
    expected: dict[str, object] = dict.fromkeys(HELPER_TIMINGS, "succeeded")
    for when in HELPER_TIMINGS:
        for helper in helpers:
            label = f"{when}-{helper}"
            expected |= {f"{label}-immediate": "succeeded", f"{label}-after-route": "succeeded"}
            expected[f"{label}-never-started"] = "pending"  # until the shutdown, which the log line shows
            never_started = (
                f"WARNING Cancelled 1 after_route task(s) whose batch was never started: '{label}-never-started'. A "
                "TasksScheduler built outside a request (in a task, or in the lifespan) starts its batches by hand: "
                "batch.__start__(scheduler)"
            )
            assert outcome["logs"].get(never_started) == 1, outcome["logs"]
            expected[f"{label}-from-tg"] = "failed"
            fields = task_outcome(outcome, f"{label}-from-tg")
            # The app's runtime: the app-wide on_error, inherited and called.
            assert fields["config.on_error"] == "handled", fields
            assert fields["seen.handled_by_the_apps_on_error"] == label, fields
    assert statuses(outcome) == expected


SCENARIOS = [
    Scenario(
        "context-as-production-gives-it",
        "Issue 20 #2a: tasks of two requests read a ContextVar a middleware sets, one an earlier task sets (which "
        "must not leak), and one the endpoint sets after scheduling.",
        context_app,
        script=_two_requests,
        expect=_context_as_production_gives_it,
    ),
    Scenario(
        "each-task-its-own-task",
        "Issue 20 #2b: a session registry keyed on the current task (async_scoped_session): each task, in each "
        "phase, is a task of its own, and none is the endpoint's.",
        task_identity_app,
        expect=_each_its_own_task,
    ),
    Scenario(
        "immediate-tasks-wait-for-each-other",
        "Issue 20 #2c: two immediate tasks that each wait for the other to have begun both complete.",
        handshake_app,
        expect=_statuses({"pong": "succeeded", "ping": "succeeded"}),
    ),
    Scenario(
        "after-route-waits-for-after-response",
        "Issue 20 #2c: an after_route task waits until the request's after_response task has begun.",
        after_route_waits_for_after_response_app,
        expect=_statuses({"waits_for_after_response": "succeeded", "signals": "succeeded"}),
    ),
    Scenario(
        "cancel-second-immediate-task",
        "Issue 20 #2d: task.cancel() on the second of two immediate tasks once the first has signalled: it had "
        "begun, and ends cancelled.",
        cancel_second_app,
        script=_get_root_text,
        expect=_second_cancelled_while_running,
    ),
    Scenario(
        "timeout-middleware-after-response-outlives-it",
        "Issue 20 #3: a pure ASGI timeout middleware (anyio.fail_after) around the app; an after_response task "
        "that ends only once the middleware has returned still succeeds.",
        timeout_middleware_app,
        expect=_statuses({"outlives_the_middleware": "succeeded"}),
    ),
    Scenario(
        "poller-detached",
        "Issue 20 #3: an endpoint starts a poller that runs until the script stops it, after the response; the "
        "recorder is told to detach() it, so that the client's call returns.",
        poller_app,
        script=_get_then_stop_the_poller,
        recorder_setup=_detach_the_poller,
        accepted_bare=("nothing-outlives-a-bare-call",),
        expect=_answered_while_polling,
    ),
    Scenario(
        "helper-task-schedulers",
        "Issue 21 #3: background tasks build TasksScheduler() and TasksScheduler(tg) in helper tasks (a task group, "
        "to_thread, asyncio.gather) while the response streams and after the request's call returned: immediate "
        "tasks, an after_route batch started by hand, one never started (its scheduler dropped and collected), "
        "and the app's on_error for a failure.",
        helper_task_schedulers_app,
        script=_get_root_text,
        expect=_helper_schedulers_bound_to_the_app,
        # Without a lifespan the never-started tasks are cancelled when the call's own runtime ends with it.
        accepted_bare=("nothing-outlives-a-bare-call",),
    ),
]
