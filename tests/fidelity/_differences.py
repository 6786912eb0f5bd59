"""The accepted differences between production and the recorder's run mode: the one table of them.

`docs/testing/fidelity.md` shows the same table (`test_fidelity.py` checks that it does). A scenario
names the kinds it is allowed to show in `Scenario.accepted`; every other difference fails it. The
scenarios of `test_background_tasks.py` take theirs from this table too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACCEPTED_DIFFERENCES", "AcceptedDifference"]


@dataclass(frozen=True)
class AcceptedDifference:
    """One way in which run mode may differ from production, and why that is right.

    Parameters:
        fields: the outcome fields that may differ, as `fnmatch` patterns over their dotted paths
            (`test_background_tasks.py`, which compares FastAPI's `BackgroundTasks`, names fields of its
            own outcomes).
        what: what differs, in words (the docs table's second column).
        reason: why (the docs table's third column).
        backends: the event loops on which it may differ (on the others, the outcomes must agree).
    """

    fields: tuple[str, ...]
    what: str
    reason: str
    backends: tuple[str, ...] = ("asyncio", "trio")


ACCEPTED_DIFFERENCES: dict[str, AcceptedDifference] = {
    "concurrent-start-order": AcceptedDifference(
        fields=("notes.start_orders",),
        backends=("trio",),
        what=(
            "On trio, the order in which tasks started together (the immediate tasks of a request) take their "
            "first step."
        ),
        reason=(
            "Trio shuffles that order on purpose, from run to run, and run mode starts tasks with production's "
            "own spawn, so it shuffles them too: the two runs may differ. A test must not assert that order on "
            "trio. On asyncio, the order is the scheduling order in both."
        ),
    ),
    "lifespan-not-running": AcceptedDifference(
        fields=("requests", "sent", "tasks.*"),
        what=(
            "Whether a request that uses `Tasks` is refused when the app's lifespan does not run: under a bare "
            "`TestClient(app)` (not in a `with` block) or httpx's `ASGITransport` without `LifespanManager`."
        ),
        reason=(
            "Production has no runtime then: the request fails with `FastAPITasksUninitializedAppError`, and no "
            "task is scheduled. A bare test client's call gets the runtime the lifespan would have built (the "
            "app's own options and config) for the time of the call, so that the docs' first test, a bare "
            "`TestClient(app)`, works; a server runs the lifespan (uvicorn and hypercorn do unless told not to), "
            "so only a test client leaves it out. An app mounted in one without `add_tasks`, whose lifespan no "
            "server runs, is refused under the recorder too, with or without the lifespan. Spy mode needs the "
            "lifespan, as production does."
        ),
    ),
    "nothing-outlives-a-bare-call": AcceptedDifference(
        fields=(
            "sent",
            "tasks.*.status",
            "tasks.*.result",
            "tasks.*.exception",
            "tasks.*.seen.*",
            "logs.WARNING *",
            "logs.INFO Background task * was cancelled before it started",
        ),
        what=(
            "Without a lifespan (a bare test client), a task that would outlive its request: one `detach()`ed, "
            "one of a call the client cancelled, or one in a batch that nothing started (a scheduler built in a "
            "task); and how a bare `TestClient` WebSocket session that the client closes ends, seen from outside "
            "the app."
        ),
        reason=(
            "In production such a task goes on in the app's task group, which the lifespan keeps. A call "
            "served without the lifespan has a task group and runtime of its own, which end with the call: "
            "the task is cancelled then (and logged, as a shutdown logs it). A bare `TestClient` cancels a "
            "WebSocket session when the client leaves it: the app and its tasks run to their end, as under a "
            "server, but the call then ends with that cancellation rather than the app's `WebSocketDisconnect`. "
            "Run the lifespan "
            "(`with TestClient(app)`, or `LifespanManager`) to test a task that outlives its request."
        ),
    ),
    "scheduler-built-by-the-endpoint": AcceptedDifference(
        fields=("tasks.direct-*.status", "tasks.direct-*.result", "logs.*'direct-*"),
        what=(
            "The tasks of a `TasksScheduler` that an endpoint builds itself, "
            "`TasksScheduler(request.state.fastapi_tasks_tg)` (the 0.1.0 API)."
        ),
        reason=(
            "Run and record mode replace the `Tasks` dependency, and nothing else: these tasks are not "
            "recorded, and the app's real scheduler runs them, concurrently, as in production, so the "
            "client's call may return before they have ended. Take the scheduler from `Tasks` (a task "
            "that builds `TasksScheduler()` itself gets the request's, which is recorded), or use spy mode "
            "and `drain()`."
        ),
    ),
    "failure-reaches-the-server": AcceptedDifference(
        # Fields of `test_background_tasks.py`'s outcomes, which that suite compares by name.
        fields=(
            "server_errors",
            "seen.dependency_saw",
            "requests",
            "tasks.*.status",
            "tasks.*.exception",
            "tasks.*.result",
            "logs.*",
        ),
        what="What a FastAPI `BackgroundTasks` task that raises does after the response was sent.",
        reason=(
            "In production its exception propagates out of the app: the server logs it, `TestClient` "
            "raises it from the client's call, a `yield` dependency of the request sees it, and the "
            "request, failed after the endpoint returned, discards its `after_response` `Tasks` tasks (see "
            "the next row). Run mode records and logs the failure instead, so that the test can assert on "
            "it (in both, the tasks added after it do not run). Spy mode lets it out, as production does."
        ),
    ),
    "background-failure-keeps-after-response": AcceptedDifference(
        fields=("requests", "tasks.after_response.*", "logs.*"),
        what=(
            "The `after_response` tasks (of `Tasks`) of a request whose FastAPI `BackgroundTasks` task "
            "raised after the response was sent."
        ),
        reason=(
            "In production that exception leaves the request after the endpoint returned, so the request "
            "has failed and its `after_response` batch is discarded (logged at INFO with the exception), "
            "and the client sees the exception; run mode contains the `BackgroundTasks` failure (the row "
            "above), so the request ends normally and the `after_response` tasks run. Spy mode shows "
            "production's behaviour."
        ),
    ),
}
"""Kind of difference -> which outcome fields may differ, and why."""
