"""Scenarios about the request: the three phases, endpoints that raise, dependencies that schedule, cancellation."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and
# some of them name classes and dependencies local to a scenario's factory.

import threading
from collections.abc import Callable, Iterator
from typing import Annotated

import anyio
import anyio.from_thread
import anyio.lowlevel
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from fastapi_tasks import Tasks, TasksScheduler

from ._harness import Client, Outcome, Probe, Scenario, new_app, statuses, task_outcome

__all__ = ["SCENARIOS"]


def _all_succeeded(outcome: Outcome) -> None:
    assert set(statuses(outcome).values()) == {"succeeded"}


def _discard_logs(exception: str) -> dict[str, int]:
    """The discard log lines of a request whose endpoint or dependency raised `exception` after `_schedule_three`."""
    return {
        f"INFO Discarded 1 {phase} task(s) because the endpoint or one of its dependencies raised {exception}: "
        f"'{phase}'": 1
        for phase in ("after_route", "after_response")
    }


def _deferred_discarded(status_code: int | str, exception: str) -> Callable[[Outcome], None]:
    def expect(outcome: Outcome) -> None:
        assert outcome["requests"] == [f"GET /: {status_code}"]
        assert statuses(outcome) == {
            "immediate": "succeeded",
            "after_route": "discarded",
            "after_response": "discarded",
        }
        assert outcome["logs"] == _discard_logs(exception)

    return expect


# --- the three phases ----------------------------------------------------------------------------


def phases_async_endpoint(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def immediate() -> str:
        return "immediate ran"

    async def after_route() -> str:
        return "after_route ran"

    async def after_response() -> str:
        probe.see("after_response", responses_sent=probe.responses_sent)
        return "after_response ran"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> dict[str, str]:
        probe.keep(tasks.schedule(immediate))
        probe.keep(tasks.after_route.schedule(after_route))
        probe.keep(tasks.after_response.schedule(after_response))
        return {"ok": "yes"}

    return app


def after_route_body_timing(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def after_route() -> None:
        probe.see("after_route", responses_sent=probe.responses_sent)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_route.schedule(after_route))

    return app


def _phases_ran_after_the_response(outcome: Outcome) -> None:
    _all_succeeded(outcome)
    assert task_outcome(outcome, "after_response")["seen.responses_sent"] == 1


def phases_sync_endpoint_sync_tasks(probe: Probe) -> FastAPI:
    app = new_app(probe)

    def immediate(label: str) -> str:
        return f"{label} ran"

    def after_route(label: str) -> str:
        return f"{label} ran"

    def after_response(label: str) -> str:
        probe.see("after_response", responses_sent=probe.responses_sent)
        return f"{label} ran"

    @app.get("/")
    def endpoint(tasks: Tasks) -> dict[str, str]:
        probe.keep(tasks.schedule(immediate, "immediate"))
        probe.keep(tasks.after_route.schedule(after_route, "after_route"))
        probe.keep(tasks.after_response.schedule(after_response, label="after_response"))
        return {"ok": "yes"}

    return app


def sync_tasks_in_their_own_threads(probe: Probe) -> FastAPI:
    # One thread for all the app's tasks: they must not need the threads FastAPI gives sync endpoints.
    app = new_app(probe, max_threads=1)
    loop_thread: list[int] = []

    async def note_the_event_loop_thread() -> None:
        loop_thread.append(threading.get_ident())

    def work(label: str) -> str:
        probe.see(label, in_a_worker_thread=threading.get_ident() not in loop_thread)
        return label

    @app.get("/", dependencies=[Depends(note_the_event_loop_thread)])
    def endpoint(tasks: Tasks) -> dict[str, str]:
        immediate = probe.keep(tasks.task(name="immediate").schedule(work, "immediate"))
        # The endpoint's thread waits for the task's: one of the tasks' own, not one of FastAPI's.
        anyio.from_thread.run(immediate.wait)
        probe.keep(tasks.after_route.task(name="after_route").schedule(work, "after_route"))
        probe.keep(tasks.after_response.task(name="after_response").schedule(work, "after_response"))
        return {"immediate": immediate.status.value}

    return app


def _ran_in_worker_threads(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200", 'GET /: body \'{"immediate":"succeeded"}\'']
    _all_succeeded(outcome)
    assert {name: fields["seen.in_a_worker_thread"] for name, fields in outcome["tasks"].items()} == {
        "immediate": True,
        "after_route": True,
        "after_response": True,
    }


def cancelled_while_waiting_for_a_thread(probe: Probe) -> FastAPI:
    # One thread for all the app's tasks, held by the first: the second, shielded, waits for it (in
    # production on its limiter, under the recorder in the request's queue) when it is cancelled.
    app = new_app(probe, max_threads=1)
    release = threading.Event()

    def blocker() -> str:
        release.wait(5)
        return "blocker"

    def waiting() -> str:
        probe.see("waiting", body_ran=True)
        return "waiting"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        holding = probe.keep(tasks.task(name="blocker").schedule(blocker))
        await holding.started.wait()  # it has the thread (on trio, two new tasks start in either order)
        queued = probe.keep(tasks.task(name="waiting", shield=True).schedule(waiting))
        for _ in range(3):  # time for the second to reach the limiter, where production gets it there
            await anyio.lowlevel.checkpoint()
        queued.cancel()
        release.set()

    return app


def _cancelled_never_runs(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200"]
    assert statuses(outcome) == {"blocker": "succeeded", "waiting": "cancelled"}
    assert "seen.body_ran" not in task_outcome(outcome, "waiting")


def generator_function_refused(probe: Probe) -> FastAPI:
    app = new_app(probe)

    def export_rows() -> Iterator[str]:
        yield "never run: calling a generator function only makes a generator"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)
        tasks.after_response.schedule(export_rows)

    return app


def phases_mixed_kinds(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def async_task(n: int) -> int:
        await anyio.lowlevel.checkpoint()
        return n * 2

    def sync_task(n: int) -> int:
        return n * 3

    @app.get("/sync-endpoint")
    def sync_endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="sync-endpoint-immediate").schedule(async_task, 1))
        probe.keep(tasks.after_route.task(name="sync-endpoint-after-route").schedule(async_task, 2))
        probe.keep(tasks.after_response.task(name="sync-endpoint-after-response").schedule(async_task, 3))

    @app.get("/async-endpoint")
    async def async_endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="async-endpoint-immediate").schedule(sync_task, 1))
        probe.keep(tasks.after_route.task(name="async-endpoint-after-route").schedule(sync_task, 2))
        probe.keep(tasks.after_response.task(name="async-endpoint-after-response").schedule(sync_task, 3))

    return app


async def _get_both_kinds(client: Client) -> None:
    await client.get("/sync-endpoint")
    await client.get("/async-endpoint")


def task_definitions(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def work(label: str) -> str:
        return label

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="named-immediate", shield=True).schedule(work, "a"))
        probe.keep(tasks.after_route.task(name="named-after-route").schedule(work, "b"))
        probe.keep(tasks.after_response.task(name="named-after-response", shield=False).schedule(work, "c"))

    return app


def scheduled_from_dependency(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def audit(source: str) -> str:
        return f"audited from {source}"

    async def audit_dependency(tasks: Tasks) -> TasksScheduler:
        probe.keep(tasks.after_response.task(name="from-dependency").schedule(audit, "dependency"))
        return tasks

    @app.get("/")
    async def endpoint(tasks: Tasks, from_dependency: Annotated[TasksScheduler, Depends(audit_dependency)]) -> None:
        probe.note("dependency_got_the_same_scheduler", tasks is from_dependency)
        probe.keep(tasks.after_response.task(name="from-endpoint").schedule(audit, "endpoint"))

    return app


def direct_tasks_scheduler(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def work(label: str) -> str:
        # Far more awaits than a request takes to return to its client: a task that is not run
        # mode's own is still running when the client's call returns, whatever the event loop's order.
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        return label

    @app.get("/")
    async def endpoint(request: Request) -> None:
        # The 0.1.0 way, without the Tasks dependency. The accepted difference knows these tasks by
        # their names: "direct-...".
        tasks = TasksScheduler(request.state.fastapi_tasks_tg)
        probe.keep(tasks.task(name="direct-immediate").schedule(work, "a"))
        probe.keep(tasks.after_response.task(name="direct-after-response").schedule(work, "b"))

    return app


def endpoint_awaits_immediate_task(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def compute(n: int) -> int:
        await anyio.lowlevel.checkpoint()
        return n * n

    @app.get("/")
    async def endpoint(tasks: Tasks) -> dict[str, object]:
        task = probe.keep(tasks.schedule(compute, 7))
        await task.wait()
        return {"status": task.status.value, "result": task.result}

    return app


async def _get_root_text(client: Client) -> None:
    await client.get_text("/")


def starlette_background_tasks_alongside(probe: Probe) -> FastAPI:
    app = new_app(probe)

    def starlette_background() -> None:
        probe.note("starlette_background_ran", True)

    async def after_response() -> None:
        probe.see("after_response", starlette_background_had_run=probe.notes.get("starlette_background_ran", False))

    @app.get("/")
    async def endpoint(tasks: Tasks, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(starlette_background)
        probe.keep(tasks.after_response.schedule(after_response))

    return app


def starlette_background_task_fails(probe: Probe, *, wrong_arguments: bool) -> FastAPI:
    app = new_app(probe)

    def starlette_background(to: str, subject: str) -> None:
        probe.note("starlette_background_ran", True)
        raise RuntimeError("the BackgroundTasks task failed")

    async def after_response() -> str:
        return "after_response ran"

    @app.get("/")
    async def endpoint(tasks: Tasks, background_tasks: BackgroundTasks) -> None:
        probe.keep(tasks.after_response.schedule(after_response))
        if wrong_arguments:
            background_tasks.add_task(starlette_background, "a@b.c")  # type: ignore[call-arg]
        else:
            background_tasks.add_task(starlette_background, "a@b.c", "Welcome")

    return app


# --- endpoints and dependencies that raise -------------------------------------------------------


async def _quick(label: str) -> str:
    await anyio.lowlevel.checkpoint()
    return label


def _schedule_three(probe: Probe, tasks: TasksScheduler) -> None:
    probe.keep(tasks.task(name="immediate").schedule(_quick, "immediate"))
    probe.keep(tasks.after_route.task(name="after_route").schedule(_quick, "after_route"))
    probe.keep(tasks.after_response.task(name="after_response").schedule(_quick, "after_response"))


def http_exception_after_scheduling(probe: Probe) -> FastAPI:
    app = new_app(probe)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)
        await anyio.lowlevel.checkpoint()
        raise HTTPException(status_code=404, detail="no such thing")

    return app


def unhandled_exception_after_scheduling(probe: Probe) -> FastAPI:
    app = new_app(probe)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)
        raise RuntimeError("a bug in the endpoint")

    return app


def custom_exception_handler(probe: Probe) -> FastAPI:
    app = new_app(probe)

    class TeapotError(Exception):
        pass

    @app.exception_handler(TeapotError)
    async def teapot(request: Request, exc: TeapotError) -> JSONResponse:
        return JSONResponse({"detail": "I'm a teapot"}, status_code=418)

    @app.get("/")
    def endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)
        raise TeapotError

    return app


def dependency_raises_after_scheduling(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def require_admin(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)
        raise HTTPException(status_code=403, detail="admins only")

    @app.get("/", dependencies=[Depends(require_admin)])
    async def endpoint() -> None:
        raise AssertionError("not reached")

    return app


def validation_error_after_dependency_scheduled(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def audit_access(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)

    @app.get("/", dependencies=[Depends(audit_access)])
    async def endpoint(count: int) -> None:
        raise AssertionError("not reached: count is not a number")

    return app


async def _get_with_a_bad_query(client: Client) -> None:
    await client.get("/", params={"count": "many"})


def _validation_error_discards(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 422"]
    assert statuses(outcome) == {
        "immediate": "succeeded",
        "after_route": "discarded",
        "after_response": "discarded",
    }
    assert outcome["logs"] == _discard_logs("RequestValidationError")


def request_cancelled_mid_endpoint(probe: Probe) -> FastAPI:
    app = new_app(probe)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        _schedule_three(probe, tasks)
        await probe.tasks["immediate"].wait()
        probe.signal("inside").set()
        await anyio.sleep_forever()

    return app


async def _cancel_once_inside(client: Client) -> None:
    await client.cancel_when("/", client.probe.signal("inside"))


def _cancelled_request_discards(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: cancelled"]
    assert statuses(outcome) == {
        "immediate": "succeeded",
        "after_route": "discarded",
        "after_response": "discarded",
    }
    # The endpoint raised nothing: its request was cancelled (here by its client, which gave up). Issue
    # 11 asks the discard log to say why, not to blame the endpoint for the cancellation it got.
    discards = list(outcome["logs"])
    assert len(discards) == 2, discards
    assert not [line for line in discards if "the endpoint or one of its dependencies raised" in line], discards


def request_cancelled_while_immediate_runs(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def outlives_its_request() -> str:
        await probe.signal("release").wait()
        return "finished after its request"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        task = probe.keep(tasks.task(name="outlives-its-request").schedule(outlives_its_request))
        probe.keep(tasks.after_response.task(name="after_response").schedule(_quick, "after_response"))
        await task.started.wait()
        probe.signal("inside").set()
        await anyio.sleep_forever()

    return app


async def _cancel_then_release(client: Client) -> None:
    await client.cancel_when("/", client.probe.signal("inside"))
    client.probe.signal("release").set()
    # The client's call was cancelled, not returned: run mode's promise that every task of a request
    # has ended by then does not apply, and the task goes on in the app's task group in both engines.
    await client.probe.tasks["outlives-its-request"].wait()


SCENARIOS = [
    Scenario(
        "phases-async-endpoint",
        "An async endpoint schedules an async task in each phase.",
        phases_async_endpoint,
        expect=_phases_ran_after_the_response,
    ),
    Scenario(
        "phases-sync-endpoint-sync-tasks",
        "A sync endpoint (run in a worker thread) schedules a sync task in each phase.",
        phases_sync_endpoint_sync_tasks,
        expect=_phases_ran_after_the_response,
    ),
    Scenario(
        "cancelled-while-waiting-for-a-thread",
        "A shielded sync task cancelled while another holds the app's only thread never runs its body.",
        cancelled_while_waiting_for_a_thread,
        expect=_cancelled_never_runs,
    ),
    Scenario(
        "sync-tasks-in-their-own-threads",
        "A sync endpoint waits for its sync immediate task; sync tasks in each phase, one thread for all tasks.",
        sync_tasks_in_their_own_threads,
        script=_get_root_text,
        expect=_ran_in_worker_threads,
    ),
    Scenario(
        "after-route-body-timing",
        "Whether the response was sent when an after_route task's body began (it is started before).",
        after_route_body_timing,
    ),
    Scenario(
        "phases-mixed-kinds",
        "A sync endpoint with async tasks, an async endpoint with sync tasks.",
        phases_mixed_kinds,
        script=_get_both_kinds,
        expect=_all_succeeded,
    ),
    Scenario(
        "task-definitions",
        "tasks.task(name=..., shield=...) in each phase.",
        task_definitions,
        expect=_all_succeeded,
    ),
    Scenario(
        "scheduled-from-dependency",
        "A dependency and its endpoint schedule through the same Tasks.",
        scheduled_from_dependency,
        expect=_all_succeeded,
    ),
    Scenario(
        "direct-tasks-scheduler",
        "An endpoint builds TasksScheduler(request.state.fastapi_tasks_tg) itself (the 0.1.0 API).",
        direct_tasks_scheduler,
        accepted=("scheduler-built-by-the-endpoint",),
        expect=_all_succeeded,
    ),
    Scenario(
        "endpoint-awaits-immediate-task",
        "An endpoint awaits its immediate task's handle and returns its result.",
        endpoint_awaits_immediate_task,
        script=_get_root_text,
        expect=_all_succeeded,
    ),
    Scenario(
        "starlette-background-tasks-alongside",
        "Starlette's BackgroundTasks and an after_response task in one response.",
        starlette_background_tasks_alongside,
    ),
    Scenario(
        "starlette-background-task-raises",
        "A BackgroundTasks task raises after the response, next to an after_response task.",
        lambda probe: starlette_background_task_fails(probe, wrong_arguments=False),
        accepted=("background-failure-keeps-after-response",),
    ),
    Scenario(
        "starlette-background-task-wrong-arguments",
        'background_tasks.add_task(send, "a@b.c") for send(to, subject), next to an after_response task.',
        lambda probe: starlette_background_task_fails(probe, wrong_arguments=True),
        accepted=("background-failure-keeps-after-response",),
    ),
    Scenario(
        "generator-function-refused",
        "The endpoint schedules a generator function (after scheduling in each phase): TypeError at the call.",
        generator_function_refused,
        expect=_deferred_discarded("raised TypeError", "TypeError"),
    ),
    Scenario(
        "http-exception-after-scheduling",
        "The endpoint raises HTTPException(404) after scheduling in each phase.",
        http_exception_after_scheduling,
        expect=_deferred_discarded(404, "HTTPException"),
    ),
    Scenario(
        "unhandled-exception-after-scheduling",
        "The endpoint raises an unhandled exception after scheduling in each phase.",
        unhandled_exception_after_scheduling,
        expect=_deferred_discarded("raised RuntimeError", "RuntimeError"),
    ),
    Scenario(
        "custom-exception-handler",
        "A sync endpoint raises an exception that a custom exception handler turns into a 418.",
        custom_exception_handler,
        expect=_deferred_discarded(418, "TeapotError"),
    ),
    Scenario(
        "dependency-raises-after-scheduling",
        "A dependency schedules in each phase, then raises HTTPException(403).",
        dependency_raises_after_scheduling,
        expect=_deferred_discarded(403, "HTTPException"),
    ),
    Scenario(
        "validation-error-after-dependency-scheduled",
        "A dependency schedules, then the request fails validation (422).",
        validation_error_after_dependency_scheduled,
        script=_get_with_a_bad_query,
        expect=_validation_error_discards,
    ),
    Scenario(
        "request-cancelled-mid-endpoint",
        "The client gives up while the endpoint waits, after it scheduled in each phase.",
        request_cancelled_mid_endpoint,
        script=_cancel_once_inside,
        expect=_cancelled_request_discards,
    ),
    Scenario(
        "request-cancelled-while-immediate-runs",
        "The client gives up while the endpoint's immediate task is still running.",
        request_cancelled_while_immediate_runs,
        script=_cancel_then_release,
        accepted_bare=("nothing-outlives-a-bare-call",),
    ),
]
