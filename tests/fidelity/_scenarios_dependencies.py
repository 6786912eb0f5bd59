"""Scenarios about `yield` dependencies: when their teardown runs relative to the tasks that use what they gave."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and
# some of them name classes and dependencies local to a scenario's factory.

import functools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal, get_args

import anyio.lowlevel
from fastapi import Depends, FastAPI, HTTPException

from fastapi_tasks import Tasks

from ._harness import HANG_GUARD, Outcome, Probe, Scenario, SyncClient, new_app, statuses, task_outcome

DEPENDS_SCOPE = ((0, 121), "Depends(scope=...)")
"""What a scenario of a yield dependency declared with a scope needs."""

TEARDOWN_AFTER_RESPONSE = (
    (0, 121),
    "Tearing a yield dependency down after the response was sent (before 0.118: before it)",
)
"""What a scenario needs whose request-scoped teardown must come after the response (0.118-0.120 are refused)."""

__all__ = ["SCENARIOS"]

DependencyScope = Literal["function", "request"]
Phase = Literal["immediate", "after_route", "after_response"]
PHASES: tuple[Phase, ...] = get_args(Phase)


class Session:
    """A database session as an app would have one: unusable once its dependency closed it."""

    def __init__(self) -> None:
        self.closed = False

    def query(self) -> str:
        if self.closed:
            raise RuntimeError("session is closed")
        return "rows"


def session_app(probe: Probe, *, scope: DependencyScope, phase: Phase, await_task: bool = False) -> FastAPI:
    """An endpoint with a session dependency of `scope` that a task of `phase` uses."""
    app = new_app(probe)

    async def get_session() -> AsyncIterator[Session]:
        session = Session()
        try:
            yield session
        finally:
            session.closed = True

    async def use_session(session: Session) -> str:
        probe.see("use_session", session_closed=session.closed)
        return session.query()

    @app.get("/")
    async def endpoint(session: Annotated[Session, Depends(get_session, scope=scope)], tasks: Tasks) -> dict[str, bool]:
        if phase == "immediate":
            task = probe.keep(tasks.schedule(use_session, session))
        elif phase == "after_route":
            task = probe.keep(tasks.after_route.schedule(use_session, session))
        else:
            task = probe.keep(tasks.after_response.schedule(use_session, session))
        if await_task:
            await task.wait()
        return {"closed": session.closed}

    return app


def _session_seen(closed: bool) -> Callable[[Outcome], None]:
    def expect(outcome: Outcome) -> None:
        task = task_outcome(outcome, "use_session")
        assert task["seen.session_closed"] is closed
        if closed:
            assert (task["status"], task["exception"]) == ("failed", "RuntimeError")
        else:
            assert task["status"] == "succeeded"

    return expect


class TeardownError(Exception):
    """What a dependency's teardown raises."""


def teardown_raises_app(probe: Probe, *, scope: DependencyScope, tasks_first: bool) -> FastAPI:
    """An endpoint that schedules in each phase, with a dependency whose teardown raises.

    `tasks_first`: `Tasks` comes before the dependency in the signature, so that FastAPI solves it
    first: were the batches' exit callbacks pushed where `Tasks` is solved, they would run after the
    teardown (exit stacks unwind last in, first out) instead of before it. The fate of the tasks must
    not depend on that order.
    """
    app = new_app(probe)

    async def flaky_resource() -> AsyncIterator[str]:
        yield "resource"
        probe.note("teardown_ran", True)
        raise TeardownError("the dependency's teardown failed")

    async def work(label: str) -> str:
        await anyio.lowlevel.checkpoint()
        return label

    def schedule(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="immediate").schedule(work, "immediate"))
        probe.keep(tasks.after_route.task(name="after_route").schedule(work, "after_route"))
        probe.keep(tasks.after_response.task(name="after_response").schedule(work, "after_response"))

    if tasks_first:

        @app.get("/")
        async def endpoint_tasks_first(
            tasks: Tasks, resource: Annotated[str, Depends(flaky_resource, scope=scope)]
        ) -> None:
            schedule(tasks)

    else:

        @app.get("/")
        async def endpoint(resource: Annotated[str, Depends(flaky_resource, scope=scope)], tasks: Tasks) -> None:
            schedule(tasks)

    return app


def _teardown_raised(scope: DependencyScope) -> Callable[[Outcome], None]:
    # The same fate whatever the order of the endpoint's parameters: the deferred tasks whose batch
    # would start after the teardown are discarded, and the log says why.
    def expect(outcome: Outcome) -> None:
        assert outcome["notes"] == {"teardown_ran": True}
        assert outcome["requests"] == ["GET /: raised TeardownError"]
        if scope == "function":
            assert outcome["sent"] == ["GET /: 500"]
            assert statuses(outcome) == {
                "immediate": "succeeded",
                "after_route": "discarded",
                "after_response": "discarded",
            }
            assert outcome["logs"] == {
                f"INFO Discarded 1 {phase} task(s) because the endpoint or one of its dependencies raised "
                f"TeardownError: '{phase}'": 1
                for phase in ("after_route", "after_response")
            }
        else:
            assert outcome["sent"] == ["GET /: 200"]
            assert statuses(outcome) == {
                "immediate": "succeeded",
                "after_route": "succeeded",
                "after_response": "discarded",
            }
            assert outcome["logs"] == {
                "INFO Discarded 1 after_response task(s) because sending the response or tearing down a "
                "request-scoped dependency raised TeardownError after the endpoint returned: 'after_response'": 1
            }

    return expect


def dependency_sees_endpoint_error(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def transaction() -> AsyncIterator[str]:
        try:
            yield "transaction"
        except HTTPException as exc:
            probe.note("dependency_saw", f"HTTPException {exc.status_code}")
            raise

    async def work(label: str) -> str:
        return label

    @app.get("/")
    async def endpoint(tx: Annotated[str, Depends(transaction)], tasks: Tasks) -> None:
        probe.keep(tasks.task(name="immediate").schedule(work, "immediate"))
        probe.keep(tasks.after_route.task(name="after_route").schedule(work, "after_route"))
        probe.keep(tasks.after_response.task(name="after_response").schedule(work, "after_response"))
        raise HTTPException(status_code=409, detail="conflict")

    return app


def _endpoint_error_discards(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 409"]
    assert outcome["notes"] == {"dependency_saw": "HTTPException 409"}
    assert statuses(outcome) == {
        "immediate": "succeeded",
        "after_route": "discarded",
        "after_response": "discarded",
    }


# --- issue 20: a bare TestClient with an async yield dependency; the race of a sync after_route task --


def async_yield_dependency_app(probe: Probe, *, phase: Phase) -> FastAPI:
    """An async endpoint with an `async def` yield dependency (a database session) schedules a task in `phase`."""
    app = new_app(probe)

    async def get_session() -> AsyncIterator[Session]:
        session = Session()
        try:
            yield session
        finally:
            session.closed = True

    async def audit(label: str) -> str:
        await anyio.lowlevel.checkpoint()
        return label

    @app.get("/")
    async def endpoint(session: Annotated[Session, Depends(get_session)], tasks: Tasks) -> dict[str, str]:
        batch = {"immediate": tasks, "after_route": tasks.after_route, "after_response": tasks.after_response}[phase]
        probe.keep(batch.task(name=phase).schedule(audit, phase))
        return {"rows": session.query()}

    return app


def _get_root_with_testclient(client: SyncClient) -> None:
    client.get("/")


def _served_and_succeeded(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200"]
    assert set(statuses(outcome).values()) == {"succeeded"}


def sync_after_route_session(probe: Probe, *, wait_for_teardown: bool = False) -> FastAPI:
    """A `def` after_route task (in a worker thread) handed the session of a request-scoped yield dependency.

    It notes whether the session was closed when its body began. In production that is a race between
    the task's worker thread and the event loop, which sends the response and tears the request's
    dependencies down (on uvicorn the task lost 45 of 50 times). `wait_for_teardown`: the body waits,
    before it looks, until the dependency's teardown has run, so that production loses every time.
    """
    app = new_app(probe)
    torn_down = threading.Event()

    async def get_session() -> AsyncIterator[Session]:
        session = Session()
        try:
            yield session
        finally:
            session.closed = True
            torn_down.set()

    def look_at_session(session: Session) -> str:
        if wait_for_teardown:
            torn_down.wait(HANG_GUARD)
        probe.see("look_at_session", session_closed=session.closed)
        return session.query()

    @app.get("/")
    async def endpoint(session: Annotated[Session, Depends(get_session)], tasks: Tasks) -> None:
        probe.keep(tasks.after_route.schedule(look_at_session, session))

    return app


RACY_SESSION = (
    "tasks.look_at_session.seen.session_closed",
    "tasks.look_at_session.status",
    "tasks.look_at_session.exception",
    "tasks.look_at_session.result",
    "logs.ERROR Background task 'sync_after_route_session.<locals>.look_at_session' failed: *",
)
"""What the race of `sync_after_route_session` decides in production: whether the task found the session open."""


def _lost_the_race(outcome: Outcome) -> None:
    # Run mode's rule where a thread races the loop: the task loses, with every client, every time.
    task = task_outcome(outcome, "look_at_session")
    assert task["seen.session_closed"] is True, task
    assert (task["status"], task["exception"]) == ("failed", "RuntimeError"), task


def async_after_route_behind_immediate_tasks(probe: Probe) -> FastAPI:
    """An async after_route task uses the request-scoped session before its first await, behind immediate tasks."""
    app = new_app(probe)

    async def get_session() -> AsyncIterator[Session]:
        session = Session()
        try:
            yield session
        finally:
            session.closed = True

    async def busy(label: str) -> str:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        return label

    async def use_session(session: Session) -> str:
        probe.see("use_session", session_closed=session.closed)
        rows = session.query()
        await anyio.lowlevel.checkpoint()
        return rows

    @app.get("/")
    async def endpoint(session: Annotated[Session, Depends(get_session)], tasks: Tasks) -> None:
        probe.keep(tasks.task(name="busy-1").schedule(busy, "busy-1"))
        probe.keep(tasks.task(name="busy-2").schedule(busy, "busy-2"))
        probe.keep(tasks.after_route.schedule(use_session, session))

    return app


SCENARIOS = [
    Scenario(
        "yield-session-after-response",
        "Issue 11 #1: an after_response task uses the session of a yield dependency that closes it on exit.",
        lambda probe: session_app(probe, scope="request", phase="after_response"),
        fastapi=DEPENDS_SCOPE,
        expect=_session_seen(closed=True),
    ),
    Scenario(
        "yield-session-request-scope-after-route",
        "An after_route task uses the session of a request-scoped yield dependency.",
        lambda probe: session_app(probe, scope="request", phase="after_route"),
        fastapi=DEPENDS_SCOPE,
    ),
    Scenario(
        "yield-session-function-scope-after-route",
        'An after_route task uses the session of a Depends(scope="function") yield dependency.',
        lambda probe: session_app(probe, scope="function", phase="after_route"),
        fastapi=DEPENDS_SCOPE,
        expect=_session_seen(closed=True),
    ),
    Scenario(
        "yield-session-function-scope-after-response",
        'An after_response task uses the session of a Depends(scope="function") yield dependency.',
        lambda probe: session_app(probe, scope="function", phase="after_response"),
        fastapi=DEPENDS_SCOPE,
        expect=_session_seen(closed=True),
    ),
    Scenario(
        "yield-session-immediate-awaited",
        "An immediate task uses the session while the endpoint awaits it: the session is still open.",
        lambda probe: session_app(probe, scope="request", phase="immediate", await_task=True),
        fastapi=DEPENDS_SCOPE,
        expect=_session_seen(closed=False),
    ),
    Scenario(
        "yield-teardown-raises-request-scope",
        "A request-scoped yield dependency's teardown raises after the response (Tasks declared after it).",
        lambda probe: teardown_raises_app(probe, scope="request", tasks_first=False),
        fastapi=DEPENDS_SCOPE,
        expect=_teardown_raised("request"),
    ),
    Scenario(
        "yield-teardown-raises-request-scope-tasks-first",
        "A request-scoped yield dependency's teardown raises after the response (Tasks declared before it).",
        lambda probe: teardown_raises_app(probe, scope="request", tasks_first=True),
        fastapi=DEPENDS_SCOPE,
        expect=_teardown_raised("request"),
    ),
    Scenario(
        "yield-teardown-raises-function-scope",
        'A Depends(scope="function") yield dependency\'s teardown raises when the endpoint returns (Tasks after it).',
        lambda probe: teardown_raises_app(probe, scope="function", tasks_first=False),
        fastapi=DEPENDS_SCOPE,
        expect=_teardown_raised("function"),
    ),
    Scenario(
        "yield-teardown-raises-function-scope-tasks-first",
        'A Depends(scope="function") yield dependency\'s teardown raises when the endpoint returns (Tasks before it).',
        lambda probe: teardown_raises_app(probe, scope="function", tasks_first=True),
        fastapi=DEPENDS_SCOPE,
        expect=_teardown_raised("function"),
    ),
    Scenario(
        "yield-dependency-sees-endpoint-error",
        "A yield dependency catches and re-raises the endpoint's HTTPException(409).",
        dependency_sees_endpoint_error,
        expect=_endpoint_error_discards,
    ),
    *(
        Scenario(
            f"testclient-async-yield-dependency-{phase.replace('_', '-')}",
            f"Issue 20 #1: an async def yield dependency, and a task scheduled {phase}, through TestClient (bare: "
            "TestClient(app), not in a `with` block, as the docs' first test).",
            functools.partial(async_yield_dependency_app, phase=phase),
            sync_script=_get_root_with_testclient,
            expect=_served_and_succeeded,
        )
        for phase in PHASES
    ),
    Scenario(
        "sync-after-route-session-race",
        "Issue 20 #4: a def after_route task looks at a request-scoped session when its body begins. Production's "
        "answer is a race (not compared); run mode finds it closed every time.",
        sync_after_route_session,
        racy=RACY_SESSION,
        expect_recorder=_lost_the_race,
    ),
    Scenario(
        "sync-after-route-session-race-testclient",
        "Issue 20 #4: sync-after-route-session-race through TestClient, in a `with` block and bare.",
        sync_after_route_session,
        sync_script=_get_root_with_testclient,
        racy=RACY_SESSION,
        expect_recorder=_lost_the_race,
    ),
    Scenario(
        "sync-after-route-session-after-teardown",
        "Issue 20 #4: a def after_route task waits until the request's session is torn down, then uses it: "
        "production loses the race every time, and so does run mode.",
        functools.partial(sync_after_route_session, wait_for_teardown=True),
        expect=_lost_the_race,
    ),
    Scenario(
        "async-after-route-session-behind-immediate-tasks",
        "Issue 20 #4: an async after_route task, behind two immediate tasks, uses a request-scoped session before "
        "its first await, through TestClient: the event loop decides, the same way in every driver. With Starlette "
        "1.x it finds the session open (as on uvicorn); with the Starlette of FastAPI 0.121 (0.49), whose response "
        "is sent without a turn of the loop, the request-scoped teardown comes first and it finds it closed.",
        async_after_route_behind_immediate_tasks,
        sync_script=_get_root_with_testclient,
        fastapi=TEARDOWN_AFTER_RESPONSE,
    ),
    Scenario(
        "async-after-route-session-behind-immediate-tasks-httpx",
        "Issue 20 #4: as async-after-route-session-behind-immediate-tasks, through httpx's ASGITransport, which takes "
        "the response without a checkpoint: the request's teardown runs before the task's first step, in both.",
        async_after_route_behind_immediate_tasks,
        expect=_session_seen(closed=True),
    ),
]
