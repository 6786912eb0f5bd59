"""Scenarios about the tasks themselves: failures, on_error, arguments, tasks that schedule, order, cancellation."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and
# some of them name classes and dependencies local to a scenario's factory.

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
from fastapi import FastAPI

from fastapi_tasks import Phase, Task, TaskConfig, Tasks, TasksScheduler
from fastapi_tasks.errors import BatchClosedError

from ._harness import Client, Outcome, Probe, Scenario, new_app, short_name, statuses, task_outcome

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # anyio depends on the backport before 3.11
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["SCENARIOS"]

ORDER_REQUESTS = 30
"""Requests in `immediate-order`: trio varies the order of concurrent tasks, so one request proves little."""


def _all_succeeded(outcome: Outcome) -> None:
    assert set(statuses(outcome).values()) == {"succeeded"}


# --- failures and on_error -----------------------------------------------------------------------


def task_raises_in_each_phase(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def immediate() -> None:
        raise ValueError("immediate failed")

    def after_route() -> None:
        raise KeyError("after_route failed")

    async def after_response() -> None:
        await anyio.lowlevel.checkpoint()
        raise LookupError("after_response failed")

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.schedule(immediate))
        probe.keep(tasks.after_route.schedule(after_route))
        probe.keep(tasks.after_response.schedule(after_response))

    @app.get("/later")
    async def later() -> None:
        pass

    return app


async def _get_root_then_later(client: Client) -> None:
    await client.get("/")
    await client.get("/later")


def _failures_contained(outcome: Outcome) -> None:
    assert outcome["requests"] == ["GET /: 200", "GET /later: 200"]
    assert {name: (fields["status"], fields["exception"]) for name, fields in outcome["tasks"].items()} == {
        "immediate": ("failed", "ValueError"),
        "after_route": ("failed", "KeyError"),
        "after_response": ("failed", "LookupError"),
    }


def on_error_app(probe: Probe, *, sync: bool, handler_raises: bool = False) -> FastAPI:
    app = new_app(probe)

    def sync_handler(task: Task[..., Any], exc: Exception) -> None:
        probe.see(short_name(task.name), handled_by="sync_handler", handled=type(exc).__name__)
        if handler_raises:
            raise RuntimeError("the on_error handler failed too")

    async def async_handler(task: Task[..., Any], exc: Exception) -> None:
        await anyio.lowlevel.checkpoint()
        probe.see(short_name(task.name), handled_by="async_handler", handled=type(exc).__name__)
        if handler_raises:
            raise RuntimeError("the on_error handler failed too")

    handler = sync_handler if sync else async_handler

    def sync_charge(amount: int) -> None:
        raise ValueError(f"card declined for {amount}")

    async def async_charge(amount: int) -> None:
        raise ValueError(f"card declined for {amount}")

    charge = sync_charge if sync else async_charge

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="charge-now", on_error=handler).schedule(charge, 1))
        probe.keep(tasks.after_response.task(name="charge-later", on_error=handler).schedule(charge, 2))

    @app.get("/later")
    async def later() -> None:
        pass

    return app


def _handled_by(handler_name: str) -> Callable[[Outcome], None]:
    def expect(outcome: Outcome) -> None:
        assert outcome["requests"] == ["GET /: 200", "GET /later: 200"]
        for name in ("charge-now", "charge-later"):
            task = task_outcome(outcome, name)
            assert (task["status"], task["exception"]) == ("failed", "ValueError")
            assert (task["seen.handled_by"], task["seen.handled"]) == (handler_name, "ValueError")

    return expect


def on_error_app_config_and_override(probe: Probe) -> FastAPI:
    def app_handler(task: Task[..., Any], exc: Exception) -> None:
        probe.see(short_name(task.name), handled_by="app_handler")

    async def task_handler(task: Task[..., Any], exc: Exception) -> None:
        probe.see(short_name(task.name), handled_by="task_handler")

    app = new_app(probe, config=TaskConfig(on_error=app_handler, shield=True))

    async def fail() -> None:
        raise ValueError("failed")

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="inherits").schedule(fail))
        probe.keep(tasks.after_route.task(name="overrides", on_error=task_handler, shield=False).schedule(fail))
        probe.keep(tasks.after_response.task(name="inherits-later").schedule(fail))

    return app


def _config_merged(outcome: Outcome) -> None:
    handled = {name: fields.get("seen.handled_by") for name, fields in outcome["tasks"].items()}
    assert handled == {"inherits": "app_handler", "overrides": "task_handler", "inherits-later": "app_handler"}


class Abort(BaseException):
    """A BaseException of the app's own (not KeyboardInterrupt or SystemExit): contained like any failure."""


def _abort() -> BaseException:
    return Abort("a BaseException of the app's own")


def _generator_exit() -> BaseException:
    return GeneratorExit()


def _exception_group() -> BaseException:
    group: BaseException = BaseExceptionGroup("two things broke", [Abort("abort"), ValueError("boom")])
    return group


def base_exception_app(
    probe: Probe, make: Callable[[], BaseException], phase: Phase, *, sync: bool = False, in_handler: bool = False
) -> FastAPI:
    """A task of `phase` raises `make()` (or fails, and its on_error raises it), next to a bystander.

    A later request schedules a task too: nothing of the app may be disturbed.
    """
    app = new_app(probe)

    def sync_raises() -> None:
        if in_handler:
            raise ValueError("the task failed")
        raise make()

    async def async_raises() -> None:
        await anyio.lowlevel.checkpoint()
        sync_raises()

    def handler(task: Task[..., Any], exc: Exception) -> None:
        probe.see("raises", handled=type(exc).__name__)
        raise make()

    async def bystander() -> str:
        await anyio.lowlevel.checkpoint()
        return "unaffected"

    async def later() -> str:
        return "later"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        batch = {
            Phase.IMMEDIATE: tasks,
            Phase.AFTER_ROUTE: tasks.after_route,
            Phase.AFTER_RESPONSE: tasks.after_response,
        }
        definition = batch[phase].task(name="raises", on_error=handler if in_handler else None)
        probe.keep(definition.schedule(sync_raises if sync else async_raises))
        probe.keep(batch[phase].task(name="bystander").schedule(bystander))

    @app.get("/later")
    async def later_request(tasks: Tasks) -> None:
        probe.keep(tasks.after_response.task(name="later").schedule(later))

    return app


def _base_exception_contained(exception: str, logged: str, *, in_handler: bool = False) -> Callable[[Outcome], None]:
    """`exception`: the type the outcome shows; `logged`: how the ERROR line describes it."""

    def expect(outcome: Outcome) -> None:
        assert outcome["requests"] == ["GET /: 200", "GET /later: 200"]
        assert "hung" not in outcome
        assert "lifespan" not in outcome
        raises = task_outcome(outcome, "raises")
        assert raises["status"] == "failed"
        assert raises["exception"] == ("ValueError" if in_handler else exception)
        if in_handler:
            assert raises["seen.handled"] == "ValueError"
        assert task_outcome(outcome, "bystander")["status"] == "succeeded"
        assert task_outcome(outcome, "later")["status"] == "succeeded"
        errors = [line for line in outcome["logs"] if line.startswith("ERROR ")]
        if in_handler:
            assert errors == [
                "ERROR Background task 'raises' failed: ValueError: the task failed",
                f"ERROR The on_error handler base_exception_app.<locals>.handler of background task 'raises' "
                f"raised: {logged}",
            ], errors
        else:
            assert errors == [f"ERROR Background task 'raises' failed: {logged}"], errors

    return expect


def foreign_cancellation(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def awaits_a_cancelled_future() -> None:
        # asyncio only: a future that something else cancels raises CancelledError in whoever awaits
        # it, though no cancel scope around the task was cancelled.
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        loop.call_soon(future.cancel)
        await future

    async def bystander() -> str:
        await anyio.lowlevel.checkpoint()
        return "unaffected"

    async def later() -> str:
        return "later"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_response.task(name="raises").schedule(awaits_a_cancelled_future))
        probe.keep(tasks.after_response.task(name="bystander").schedule(bystander))

    @app.get("/later")
    async def later_request(tasks: Tasks) -> None:
        probe.keep(tasks.after_response.task(name="later").schedule(later))

    return app


# --- arguments -----------------------------------------------------------------------------------


def wrong_arguments(probe: Probe, *, deferred: bool) -> FastAPI:
    app = new_app(probe)

    async def send(to: str, subject: str) -> str:
        return f"sent {subject!r} to {to}"

    async def audit() -> str:
        return "audited"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_response.schedule(audit))
        if deferred:
            probe.keep(tasks.after_response.schedule(send, "a@b.c"))  # type: ignore[call-overload]
        else:
            probe.keep(tasks.schedule(send, "a@b.c"))  # type: ignore[call-overload]

    return app


def _wrong_arguments_fail_one_way(outcome: Outcome) -> None:
    # Either the call fails where it is made (a clear TypeError from schedule()), or the request
    # succeeds and the task fails in the background: both are DESIGN.md-correct, mixtures are not.
    if outcome["requests"] == ["GET /: 200"]:
        assert task_outcome(outcome, "send")["exception"] == "TypeError"
        assert task_outcome(outcome, "audit")["status"] == "succeeded"
    else:
        assert outcome["requests"] == ["GET /: raised TypeError"]
        assert "send" not in outcome["tasks"]
        assert task_outcome(outcome, "audit")["status"] == "discarded"


# --- tasks that schedule tasks -------------------------------------------------------------------


def refused_schedule(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def child() -> str:
        return "child ran"

    async def notify_later(tasks: TasksScheduler) -> None:
        try:
            probe.keep(tasks.after_response.schedule(child))
        except BatchClosedError:
            probe.see("notify_later", refused="BatchClosedError")

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_response.schedule(notify_later, tasks))

    return app


def _refused(outcome: Outcome) -> None:
    assert outcome["tasks"] == {
        "notify_later": {
            **task_outcome(outcome, "notify_later"),
            "status": "succeeded",
            "seen.refused": "BatchClosedError",
        }
    }


def task_schedules_with_request_scheduler(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def child(label: str) -> str:
        await anyio.lowlevel.checkpoint()
        return label

    async def fan_out(tasks: TasksScheduler) -> None:
        probe.keep(tasks.task(name="child-of-after-route").schedule(child, "from after_route"))

    async def fan_out_later(tasks: TasksScheduler) -> None:
        probe.keep(tasks.task(name="child-of-after-response").schedule(child, "from after_response"))

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_route.schedule(fan_out, tasks))
        probe.keep(tasks.after_response.schedule(fan_out_later, tasks))

    return app


def task_builds_scheduler(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def child(label: str) -> str:
        # Far more awaits than a request takes to return to its client: a task that is not run
        # mode's own is still running when the client's call returns, whatever the event loop's order.
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        return label

    async def spawner() -> None:
        # A task that needs a scheduler of its own builds one, as the 0.1.0 API allows.
        tasks = TasksScheduler()
        probe.keep(tasks.task(name="child-immediate").schedule(child, "immediate"))

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_response.schedule(spawner))

    return app


def tasks_build_schedulers(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def child(label: str) -> str:
        await anyio.lowlevel.checkpoint()
        return label

    async def spawn_now(label: str) -> None:
        probe.keep(TasksScheduler().task(name=f"child-of-{label}").schedule(child, label))

    def spawn_from_a_thread(label: str) -> None:
        # A sync task builds its scheduler in its worker thread.
        probe.keep(TasksScheduler().task(name=f"child-of-{label}").schedule(child, label))

    async def spawn_a_batch(label: str) -> None:
        # A scheduler built in a task is bound to no request: its batches start when the task says so.
        tasks = TasksScheduler()
        probe.keep(tasks.after_response.task(name=f"batched-child-of-{label}").schedule(child, label))
        probe.keep(tasks.task(name=f"child-of-{label}").schedule(child, label))
        tasks.after_response.__start__(tasks)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="immediate").schedule(spawn_now, "immediate"))
        probe.keep(tasks.after_route.task(name="after_route").schedule(spawn_from_a_thread, "after_route"))
        probe.keep(tasks.after_response.task(name="after_response").schedule(spawn_a_batch, "after_response"))

    return app


def immediate_task_schedules_after_route(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def follow_up() -> str:
        return "followed up"

    async def enqueue_follow_up(tasks: TasksScheduler) -> None:
        probe.keep(tasks.after_route.schedule(follow_up))

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        await probe.keep(tasks.schedule(enqueue_follow_up, tasks)).wait()

    return app


# --- order and concurrency -----------------------------------------------------------------------


def immediate_order(probe: Probe) -> FastAPI:
    app = new_app(probe)
    started: dict[int, list[str]] = {}

    async def mark(label: str, request: int) -> None:
        started.setdefault(request, []).append(label)
        probe.note("start_orders", sorted({",".join(labels) for labels in started.values()}))

    @app.get("/{request}")
    async def endpoint(request: int, tasks: Tasks) -> None:
        probe.keep(tasks.task(name=f"first-{request}").schedule(mark, "first", request))
        probe.keep(tasks.task(name=f"second-{request}").schedule(mark, "second", request))

    return app


async def _many_requests(client: Client) -> None:
    for request in range(ORDER_REQUESTS):
        await client.get(f"/{request}")


def concurrent_immediate_tasks(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def step(label: str) -> str:
        with probe.running_task():
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
        return label

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        first = probe.keep(tasks.task(name="first").schedule(step, "first"))
        second = probe.keep(tasks.task(name="second").schedule(step, "second"))
        await first.wait()
        await second.wait()

    return app


def eager_start(probe: Probe) -> FastAPI:
    """add_tasks(app, eager_start=True): each task runs its first stretch inside the call that starts it."""
    app = new_app(probe, eager_start=True)
    began: list[str] = []

    async def first_stretch(phase: str) -> str:
        # Before the first await: eagerly, inside the call that started the task.
        began.append(phase)
        probe.see(phase, response_sent_when_it_began=probe.responses_sent > 0)
        await anyio.lowlevel.checkpoint()
        return phase

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="immediate").schedule(first_stretch, "immediate"))
        probe.note("eager: immediate began before schedule() returned", "immediate" in began)
        probe.keep(tasks.after_route.task(name="after_route").schedule(first_stretch, "after_route"))

    return app


def _eager_in_production(outcome: Outcome) -> None:
    assert statuses(outcome) == {"immediate": "succeeded", "after_route": "succeeded"}
    assert outcome["notes"] == {"eager: immediate began before schedule() returned": True}
    # Started at the end of its phase, inside the exit of the endpoint's function stack.
    assert task_outcome(outcome, "after_route")["seen.response_sent_when_it_began"] is False


# --- cancellation and shielding ------------------------------------------------------------------


def cancel_running_task(probe: Probe, *, shield: bool) -> FastAPI:
    app = new_app(probe)

    async def wait_for_release() -> str:
        await probe.signal("release").wait()
        return "released"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> dict[str, str]:
        task = probe.keep(tasks.task(name="long-running", shield=shield).schedule(wait_for_release))
        await task.started.wait()
        task.cancel()
        probe.signal("release").set()
        await task.wait()
        return {"status": task.status.value}

    return app


def _long_running_ended(status: str) -> Callable[[Outcome], None]:
    def expect(outcome: Outcome) -> None:
        assert outcome["requests"] == ["GET /: 200", f'GET /: body \'{{"status":"{status}"}}\'']
        assert task_outcome(outcome, "long-running")["status"] == status

    return expect


async def _get_root_text(client: Client) -> None:
    await client.get_text("/")


def cancel_pending_deferred_task(probe: Probe) -> FastAPI:
    app = new_app(probe)

    async def later(label: str) -> str:
        probe.see(label, started=True)
        return "ran anyway"

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.after_route.task(name="cancelled-after-route").schedule(later, "cancelled-after-route"))
        probe.keep(tasks.after_route.task(name="after_route").schedule(later, "after_route"))
        probe.keep(
            tasks.after_response.task(name="cancelled-after-response").schedule(later, "cancelled-after-response")
        )
        probe.tasks["cancelled-after-route"].cancel()
        probe.tasks["cancelled-after-response"].cancel()

    return app


def _cancelled_before_it_started(outcome: Outcome) -> None:
    assert statuses(outcome) == {
        "cancelled-after-route": "cancelled",
        "after_route": "succeeded",
        "cancelled-after-response": "cancelled",
    }
    assert task_outcome(outcome, "after_route")["seen.started"] is True
    assert "seen.started" not in task_outcome(outcome, "cancelled-after-route")
    assert "seen.started" not in task_outcome(outcome, "cancelled-after-response")
    assert outcome["logs"] == {
        f"INFO Background task '{name}' was cancelled before it started": 1
        for name in ("cancelled-after-route", "cancelled-after-response")
    }


def shielded_in_every_phase(probe: Probe) -> FastAPI:
    app = new_app(probe)

    def sync_work(label: str) -> str:
        return label

    async def async_work(label: str) -> str:
        await anyio.lowlevel.checkpoint()
        return label

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        probe.keep(tasks.task(name="shielded-immediate", shield=True).schedule(sync_work, "a"))
        probe.keep(tasks.after_route.task(name="shielded-after-route", shield=True).schedule(async_work, "b"))
        probe.keep(tasks.after_response.task(name="shielded-after-response", shield=True).schedule(sync_work, "c"))

    return app


SCENARIOS = [
    Scenario(
        "task-raises-in-each-phase",
        "A task fails in each phase; the response and a later request are unaffected.",
        task_raises_in_each_phase,
        script=_get_root_then_later,
        expect=_failures_contained,
    ),
    Scenario(
        "task-raises-base-exception",
        "An after_response task raises a BaseException subclass of the app's own, next to another task.",
        lambda probe: base_exception_app(probe, _abort, Phase.AFTER_RESPONSE),
        script=_get_root_then_later,
        expect=_base_exception_contained("Abort", "Abort: a BaseException of the app's own"),
    ),
    Scenario(
        "sync-task-raises-base-exception",
        "A sync immediate task (in a worker thread) raises a BaseException subclass, next to another task.",
        lambda probe: base_exception_app(probe, _abort, Phase.IMMEDIATE, sync=True),
        script=_get_root_then_later,
        expect=_base_exception_contained("Abort", "Abort: a BaseException of the app's own"),
    ),
    Scenario(
        "task-raises-generator-exit",
        "An immediate task raises GeneratorExit, next to another task.",
        lambda probe: base_exception_app(probe, _generator_exit, Phase.IMMEDIATE),
        script=_get_root_then_later,
        expect=_base_exception_contained("GeneratorExit", "GeneratorExit"),
    ),
    Scenario(
        "task-raises-base-exception-group",
        "An after_route task raises a BaseExceptionGroup, next to another task.",
        lambda probe: base_exception_app(probe, _exception_group, Phase.AFTER_ROUTE),
        script=_get_root_then_later,
        expect=_base_exception_contained(
            "BaseExceptionGroup[Abort, ValueError]", "BaseExceptionGroup: two things broke (2 sub-exceptions)"
        ),
    ),
    Scenario(
        "on-error-raises-base-exception",
        "A task fails and its on_error handler raises a BaseException subclass, next to another task.",
        lambda probe: base_exception_app(probe, _abort, Phase.AFTER_RESPONSE, in_handler=True),
        script=_get_root_then_later,
        expect=_base_exception_contained("Abort", "Abort: a BaseException of the app's own", in_handler=True),
    ),
    Scenario(
        "foreign-cancellation",
        "asyncio: a task awaits a future that something else cancels (a CancelledError not ours), next to another.",
        foreign_cancellation,
        script=_get_root_then_later,
        backends=("asyncio",),
        expect=_base_exception_contained("CancelledError", "CancelledError"),
    ),
    Scenario(
        "on-error-async",
        "Async tasks fail; an async on_error handler is called.",
        lambda probe: on_error_app(probe, sync=False),
        script=_get_root_then_later,
        expect=_handled_by("async_handler"),
    ),
    Scenario(
        "on-error-sync",
        "Sync tasks fail; a sync on_error handler is called (in a worker thread).",
        lambda probe: on_error_app(probe, sync=True),
        script=_get_root_then_later,
        expect=_handled_by("sync_handler"),
    ),
    Scenario(
        "on-error-raises",
        "Issue 11 #9: the on_error handler itself raises; it is contained.",
        lambda probe: on_error_app(probe, sync=False, handler_raises=True),
        script=_get_root_then_later,
        expect=_handled_by("async_handler"),
    ),
    Scenario(
        "on-error-app-config-and-override",
        "add_tasks(config=...) gives on_error and shield; a task overrides both.",
        on_error_app_config_and_override,
        expect=_config_merged,
    ),
    Scenario(
        "wrong-arguments-immediate",
        'Issue 11 #8: schedule(send, "a@b.c") for send(to, subject), next to a good after_response task.',
        lambda probe: wrong_arguments(probe, deferred=False),
        expect=_wrong_arguments_fail_one_way,
    ),
    Scenario(
        "wrong-arguments-after-response",
        'after_response.schedule(send, "a@b.c") for send(to, subject), next to a good task.',
        lambda probe: wrong_arguments(probe, deferred=True),
        expect=_wrong_arguments_fail_one_way,
    ),
    Scenario(
        "refused-schedule",
        "Issue 11 #3: an after_response task schedules into its own, started batch: BatchClosedError.",
        refused_schedule,
        expect=_refused,
    ),
    Scenario(
        "task-schedules-with-request-scheduler",
        "Deferred tasks are handed the request's Tasks and schedule immediate tasks with it.",
        task_schedules_with_request_scheduler,
        expect=_all_succeeded,
    ),
    Scenario(
        "task-builds-scheduler",
        "A task builds TasksScheduler() itself and schedules with it.",
        task_builds_scheduler,
        expect=_all_succeeded,
    ),
    Scenario(
        "tasks-build-schedulers",
        "A task in each phase builds TasksScheduler() (a sync one in its thread) and schedules with it.",
        tasks_build_schedulers,
        expect=_all_succeeded,
    ),
    Scenario(
        "immediate-task-schedules-after-route",
        "An immediate task, awaited by its endpoint, adds an after_route task to the request's batch.",
        immediate_task_schedules_after_route,
        expect=_all_succeeded,
    ),
    Scenario(
        "immediate-order",
        f"Issue 11 #5: {ORDER_REQUESTS} requests each schedule two immediate tasks; which begins first?",
        immediate_order,
        script=_many_requests,
        accepted=("concurrent-start-order",),
    ),
    Scenario(
        "concurrent-immediate-tasks",
        "Two immediate tasks with awaits in them, both awaited by the endpoint: they run at the same time.",
        concurrent_immediate_tasks,
        expect=_all_succeeded,
    ),
    Scenario(
        "eager-start",
        "add_tasks(app, eager_start=True): a task runs up to its first await inside schedule() (Python 3.12+).",
        eager_start,
        backends=("asyncio",),
        python=(3, 12),
        expect=_eager_in_production,
    ),
    Scenario(
        "cancel-running-task",
        "The endpoint cancels its running immediate task with task.cancel().",
        lambda probe: cancel_running_task(probe, shield=False),
        script=_get_root_text,
        expect=_long_running_ended("cancelled"),
    ),
    Scenario(
        "cancel-shielded-task",
        "The endpoint calls task.cancel() on a running shielded task: it runs on.",
        lambda probe: cancel_running_task(probe, shield=True),
        script=_get_root_text,
        expect=_long_running_ended("succeeded"),
    ),
    Scenario(
        "cancel-pending-deferred-task",
        "The endpoint cancels an after_route and an after_response task before they were started.",
        cancel_pending_deferred_task,
        expect=_cancelled_before_it_started,
    ),
    Scenario(
        "shielded-in-every-phase",
        "Shielded sync and async tasks in each phase.",
        shielded_in_every_phase,
        expect=_all_succeeded,
    ),
]
