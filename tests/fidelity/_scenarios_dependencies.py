"""Scenarios about `yield` dependencies: when their teardown runs relative to the tasks that use what they gave."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and
# some of them name classes and dependencies local to a scenario's factory.

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal

import anyio.lowlevel
from fastapi import Depends, FastAPI, HTTPException

from fastapi_tasks import Tasks

from ._harness import Outcome, Probe, Scenario, new_app, statuses, task_outcome

__all__ = ["SCENARIOS"]

DependencyScope = Literal["function", "request"]
Phase = Literal["immediate", "after_route", "after_response"]


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


SCENARIOS = [
    Scenario(
        "yield-session-after-response",
        "Issue 11 #1: an after_response task uses the session of a yield dependency that closes it on exit.",
        lambda probe: session_app(probe, scope="request", phase="after_response"),
        expect=_session_seen(closed=True),
    ),
    Scenario(
        "yield-session-request-scope-after-route",
        "An after_route task uses the session of a request-scoped yield dependency.",
        lambda probe: session_app(probe, scope="request", phase="after_route"),
    ),
    Scenario(
        "yield-session-function-scope-after-route",
        'An after_route task uses the session of a Depends(scope="function") yield dependency.',
        lambda probe: session_app(probe, scope="function", phase="after_route"),
        expect=_session_seen(closed=True),
    ),
    Scenario(
        "yield-session-function-scope-after-response",
        'An after_response task uses the session of a Depends(scope="function") yield dependency.',
        lambda probe: session_app(probe, scope="function", phase="after_response"),
        expect=_session_seen(closed=True),
    ),
    Scenario(
        "yield-session-immediate-awaited",
        "An immediate task uses the session while the endpoint awaits it: the session is still open.",
        lambda probe: session_app(probe, scope="request", phase="immediate", await_task=True),
        expect=_session_seen(closed=False),
    ),
    Scenario(
        "yield-teardown-raises-request-scope",
        "A request-scoped yield dependency's teardown raises after the response (Tasks declared after it).",
        lambda probe: teardown_raises_app(probe, scope="request", tasks_first=False),
        expect=_teardown_raised("request"),
    ),
    Scenario(
        "yield-teardown-raises-request-scope-tasks-first",
        "A request-scoped yield dependency's teardown raises after the response (Tasks declared before it).",
        lambda probe: teardown_raises_app(probe, scope="request", tasks_first=True),
        expect=_teardown_raised("request"),
    ),
    Scenario(
        "yield-teardown-raises-function-scope",
        'A Depends(scope="function") yield dependency\'s teardown raises when the endpoint returns (Tasks after it).',
        lambda probe: teardown_raises_app(probe, scope="function", tasks_first=False),
        expect=_teardown_raised("function"),
    ),
    Scenario(
        "yield-teardown-raises-function-scope-tasks-first",
        'A Depends(scope="function") yield dependency\'s teardown raises when the endpoint returns (Tasks before it).',
        lambda probe: teardown_raises_app(probe, scope="function", tasks_first=True),
        expect=_teardown_raised("function"),
    ),
    Scenario(
        "yield-dependency-sees-endpoint-error",
        "A yield dependency catches and re-raises the endpoint's HTTPException(409).",
        dependency_sees_endpoint_error,
        expect=_endpoint_error_discards,
    ),
]
