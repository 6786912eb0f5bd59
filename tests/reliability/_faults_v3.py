"""Issue 21's faults, for the fault matrix: failures that cannot be logged, cancels that hit shields and
threads, schedulers built in helper tasks of a background task, and a flood against `max_pending`.

Each scenario drives an `Env` (uvicorn, or in-process on either anyio backend) through the endpoints of
`make_v3_app` and accounts for every task with `account()`, as the scenarios of `_scenarios` do.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import sniffio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_tasks import Task, TaskConfig, Tasks, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks._compat import NATIVE_TASKS
from fastapi_tasks.errors import BacklogFullError

from ._apps import PHASES, Accounting, Ledger, ServerHooks, _schedule_fault, account
from ._scenarios import Env, FaultResult, Records, asgi_env, live_env, probe

__all__ = [
    "HELD_BY",
    "UNLOGGABLE",
    "FloodResult",
    "flood",
    "held_cancels",
    "helper_schedulers",
    "make_v3_app",
    "unloggable_failures",
    "v3_matrix",
]

UNLOGGABLE = ("str-raises", "filter-raises", "recursion-while-logging")
"""Failures that cannot be logged as they are: an exception whose `str()` raises, a filter on the
`fastapi_tasks` logger that raises on the record, a `RecursionError` while the traceback is logged."""
HELD_BY = ("shielded-section", "to-thread", "sync-on-error")
"""What a cancelled task is in: an `anyio.CancelScope(shield=True)` section, a pending
`anyio.to_thread.run_sync()`, a sync `on_error` handler (in one of the app's threads)."""
HELPER_TIMINGS = ("while-streaming", "after-the-request")
_GUARD = 60.0  # a hang guard for the threads that wait on a gate, not a measurement
_RUNS = itertools.count()  # makes each scenario's request keys unique in a process (the logs outlive an app)


class Unprintable(Exception):
    """A library exception whose `__str__` formats a field its `__init__` never set."""

    def __str__(self) -> str:
        return f"code {self.code}"  # type: ignore[attr-defined]


# --- logging that fails ----------------------------------------------------------------------------


class _BrokenFilter(logging.Filter):
    """Raises on the records about the tasks of the requests in `keys`, as an app's broken filter would."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, str] = {}  # request key -> fault kind

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        for key, kind in list(self.keys.items()):
            if any(isinstance(arg, str) and f"'{key}/" in arg for arg in args):
                if kind == "filter-raises":
                    raise ValueError("a broken filter")
                if kind == "recursion-while-logging" and record.exc_info:
                    raise RecursionError("maximum recursion depth exceeded while logging")
        return True


class _LastResort(logging.Handler):
    """Stands in for `logging.lastResort` (stderr): keeps what reaches it past the logger's filters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def broken_logging() -> Iterator[tuple[_BrokenFilter, _LastResort]]:
    """A raising filter on the `fastapi_tasks` logger (for the keys it is given) and a captured last resort."""
    logger = logging.getLogger("fastapi_tasks")
    broken, last_resort = _BrokenFilter(), _LastResort()
    previous = logging.lastResort
    logger.addFilter(broken)
    logging.lastResort = last_resort
    try:
        yield broken, last_resort
    finally:
        logging.lastResort = previous
        logger.removeFilter(broken)


# --- the app -----------------------------------------------------------------------------------------


class _ReturnedMiddleware:
    """Outside `add_tasks`'s middleware: sets the ledger event "<path>:returned" once the app's call is over."""

    def __init__(self, app: ASGIApp, ledger: Ledger) -> None:
        self.app = app
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.ledger.event(f"{scope['path']}:returned").set()


def make_v3_app(
    ledger: Ledger, hooks: ServerHooks, *, shutdown_timeout: float | None = None, max_pending: int | None = None
) -> FastAPI:
    """An app whose endpoints schedule issue 21's faults, all into `ledger`."""
    app = FastAPI()
    add_tasks(
        app, config=TaskConfig(on_error=ledger.on_error), shutdown_timeout=shutdown_timeout, max_pending=max_pending
    )
    app.add_middleware(_ReturnedMiddleware, ledger=ledger)
    hooks.install(app)
    gates: dict[str, threading.Event] = {}
    running = {"now": 0, "most": 0}

    @app.exception_handler(BacklogFullError)
    async def backlog_full(request: Request, exc: BacklogFullError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    # What `probe()` and the settling of a request's tasks use, as in the fault app.
    @app.get("/fault/ok/{key}")
    async def ok_tasks(key: str, tasks: Tasks) -> dict[str, str]:
        _schedule_fault(ledger, tasks, "ok", key)
        return {"scheduled": key}

    @app.get("/settle/{key}")
    async def settle(key: str) -> dict[str, str]:
        result = {}
        for task in ledger.named(key):
            await task.wait()
            result[task.name] = task.status.value
        return result

    # Unloggable failures.
    async def fail_unloggably(name: str, kind: str) -> None:
        ledger.ran(name)
        raise Unprintable() if kind == "str-raises" else ValueError(f"boom in {name}")

    @app.get("/unloggable/{kind}/{key}")
    async def unloggable(kind: str, key: str, tasks: Tasks) -> dict[str, str]:
        for phase, target in zip(PHASES, (tasks, tasks.after_route, tasks.after_response), strict=True):
            name = f"{key}/{phase.value}"
            ledger.add(target.task(name=name).schedule(fail_unloggably, name, kind))
        return {"scheduled": key}

    # Cancels that hit shields and threads.
    async def in_a_shielded_section(name: str, release: anyio.Event) -> None:
        ledger.ran(name)
        with anyio.CancelScope(shield=True):
            ledger.event(f"{name}:entered").set()
            await release.wait()
            await anyio.lowlevel.checkpoint()
            ledger.note(name, "the shielded section ended")
        await anyio.sleep_forever()

    async def waits_for_a_thread(name: str, gate: threading.Event) -> None:
        ledger.ran(name)
        entered = ledger.event(f"{name}:entered")

        def blocking() -> None:
            anyio.from_thread.run_sync(entered.set)
            gate.wait(_GUARD)
            ledger.note(name, "the thread returned")

        await anyio.to_thread.run_sync(blocking)
        await anyio.sleep_forever()

    def on_error_in_a_thread(gate: threading.Event) -> Callable[[Task[..., Any], Exception], None]:
        def handler(task: Task[..., Any], exc: Exception) -> None:
            ledger.sync_on_error(task, exc)
            anyio.from_thread.run_sync(ledger.events[f"{task.name}:entered"].set)
            gate.wait(_GUARD)
            ledger.note(task.name, "on_error returned")

        return handler

    @app.get("/held/{kind}/{key}")
    async def held(kind: str, key: str, tasks: Tasks) -> dict[str, str]:
        gate = gates[key] = threading.Event()
        release = ledger.event(f"{key}:release")
        for phase, target in zip(PHASES, (tasks, tasks.after_route, tasks.after_response), strict=True):
            name = f"{key}/{phase.value}"
            ledger.event(f"{name}:entered")
            if kind == "shielded-section":
                ledger.add(target.task(name=name).schedule(in_a_shielded_section, name, release))
            elif kind == "to-thread":
                ledger.add(target.task(name=name).schedule(waits_for_a_thread, name, gate))
            else:
                definition = target.task(name=name, on_error=on_error_in_a_thread(gate))
                ledger.add(definition.schedule(ledger.fail, name))
        return {"scheduled": key}

    @app.get("/held-entered/{key}")
    async def held_entered(key: str) -> dict[str, str]:
        for task in ledger.named(key):
            await ledger.event(f"{task.name}:entered").wait()
        return {"entered": key}

    @app.get("/release-held/{key}")
    async def release_held(key: str) -> dict[str, str]:
        release_gates(key)
        return {"released": key}

    def release_gates(key: str) -> None:
        gates[key].set()
        ledger.event(f"{key}:release").set()

    app.state.release_gates = release_gates

    @app.get("/cancel-held/{key}")
    async def cancel_held(key: str) -> dict[str, list[str | None]]:
        """Cancel every task of `key` while it is held, then release them; each status and note once it ended."""
        for task in ledger.named(key):
            await ledger.event(f"{task.name}:entered").wait()
            task.cancel()
        release_gates(key)
        result = {}
        for task in ledger.named(key):
            await task.wait()
            result[task.name] = [task.status.value, ledger.notes.get(task.name)]
        return result

    # Schedulers built in helper tasks of a background task.
    def build(key: str, label: str, tg: anyio.abc.TaskGroup) -> None:
        scheduler = TasksScheduler()
        for suffix, target in (("immediate", scheduler), ("after_route", scheduler.after_route)):
            name = f"{key}/{label}-{suffix}"
            ledger.add(target.task(name=name).schedule(ledger.ok, name))
        scheduler.after_route.__start__(scheduler)  # bound to no request: started by hand
        name = f"{key}/{label}-from-tg"
        ledger.add(TasksScheduler(tg).task(name=name).schedule(ledger.fail, name))  # the app's on_error

    async def build_here(key: str, label: str, tg: anyio.abc.TaskGroup) -> None:
        build(key, label, tg)

    async def background(name: str, key: str, when: str, tg: anyio.abc.TaskGroup) -> None:
        ledger.ran(name)
        await ledger.event(f"{key}:streaming" if when == "while-streaming" else f"/helpers/{key}:returned").wait()
        async with anyio.create_task_group() as helpers:
            helpers.start_soon(build_here, key, f"{when}-task-group", tg)
        await anyio.to_thread.run_sync(build, key, f"{when}-to-thread", tg)
        if sniffio.current_async_library() == "asyncio":
            await asyncio.gather(build_here(key, f"{when}-asyncio-gather", tg))
        ledger.event(f"{key}:built {when}").set()

    @app.get("/helpers/{key}")
    async def helpers(key: str, request: Request, tasks: Tasks) -> StreamingResponse:
        tg = request.state.fastapi_tasks_tg
        for when in HELPER_TIMINGS:
            name = f"{key}/{when}"
            ledger.event(f"{key}:built {when}")
            ledger.add(tasks.task(name=name).schedule(background, name, key, when, tg))

        async def stream() -> AsyncIterator[bytes]:
            ledger.event(f"{key}:streaming").set()
            await ledger.event(f"{key}:built while-streaming").wait()
            yield b"streamed"

        return StreamingResponse(stream())

    @app.get("/helpers-settled/{key}")
    async def helpers_settled(key: str) -> dict[str, str]:
        for when in HELPER_TIMINGS:
            await ledger.event(f"{key}:built {when}").wait()
        result = {}
        for task in ledger.named(key):
            await task.wait()
            result[task.name] = task.status.value
        return result

    # A flood against max_pending.
    async def work(name: str, seconds: float) -> None:
        ledger.ran(name)
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        try:
            await anyio.sleep(seconds)  # the task's own work, which takes time
        finally:
            running["now"] -= 1

    @app.post("/flood/{key}/{n}")
    async def flood_one(key: str, n: int, seconds: float, tasks: Tasks) -> dict[str, int]:
        name = f"{key}/{n}"
        ledger.add(tasks.task(name=name).schedule(work, name, seconds))
        return {"accepted": n}

    @app.get("/flood-settled/{key}")
    async def flood_settled(key: str) -> dict[str, int]:
        for task in ledger.named(key):
            await task.wait()
        return {"most_running": running["most"]}

    return app


# --- scenarios ---------------------------------------------------------------------------------------


async def unloggable_failures(env: Env, ledger: Ledger, records: Records) -> FaultResult:
    """Tasks of every phase whose failure cannot be logged as it is: each ends failed, handled and logged."""
    result = FaultResult("unloggable failures")
    with broken_logging() as (broken, last_resort):
        for kind in UNLOGGABLE:
            key = f"unloggable-{kind}-{next(_RUNS)}"
            broken.keys[key] = kind
            with anyio.fail_after(_GUARD):
                response = await env.client.get(f"/unloggable/{kind}/{key}")
                assert response.status_code == 200, response.text
                settled = (await env.client.get(f"/settle/{key}")).json()
            assert set(settled.values()) == {"failed"}, settled
            accounting = account(ledger, [*records(), *last_resort.records], [key])
            assert accounting == {"failed+handled": 3}, accounting
            lines = [r.getMessage() for r in [*records(), *last_resort.records] if f"'{key}/" in r.getMessage()]
            if kind == "str-raises":
                assert all("<str() of the exception raised AttributeError>" in line for line in lines), lines
            elif kind == "recursion-while-logging":
                assert all("logged without its traceback: logging it raised RecursionError" in line for line in lines)
            else:
                assert len(last_resort.records) >= 3, "the lines a raising filter stopped did not reach the last resort"
            result.faults += 3
            result.add(accounting)
            await probe(env, ledger, records, result)
    return result


async def held_cancels(env: Env, ledger: Ledger, records: Records) -> FaultResult:
    """`task.cancel()` on tasks in a shielded section, waiting for a thread, or in a sync `on_error` handler:
    each is cancelled once its section or thread is over (the handler's task ends failed, handled)."""
    result = FaultResult("cancel hits shields and threads")
    for kind in HELD_BY:
        key = f"cancel-{kind}-{next(_RUNS)}"
        with anyio.fail_after(_GUARD):
            await env.client.get(f"/held/{kind}/{key}")
            ended = (await env.client.get(f"/cancel-held/{key}")).json()
        _check_held(kind, ended)
        accounting = account(ledger, records(), [key])
        result.faults += 3
        result.add(accounting)
        await probe(env, ledger, records, result)
    return result


_HELD_ENDS = {
    "shielded-section": ["cancelled", "the shielded section ended"],
    "to-thread": ["cancelled", "the thread returned"],
    "sync-on-error": ["failed", "on_error returned"],
}


def _check_held(kind: str, ended: dict[str, list[str | None]]) -> None:
    __tracebackhide__ = True
    assert ended, kind
    assert all(end == _HELD_ENDS[kind] for end in ended.values()), (kind, ended)


async def held_at_shutdown(env: Env, ledger: Ledger, records: Records) -> FaultResult:
    """The shutdown of an app whose tasks are in shielded sections, thread waits and sync `on_error`
    handlers: the WARNING marks them, and each ends once its section or thread is over."""
    result = FaultResult("shutdown hits shields and threads")
    run = next(_RUNS)
    keys = {kind: f"shutdown-{kind}-{run}" for kind in HELD_BY}
    with anyio.fail_after(_GUARD):
        for kind, key in keys.items():
            await env.client.get(f"/held/{kind}/{key}")
            await env.client.get(f"/held-entered/{key}")
    release = env.app.state.release_gates

    class ReleaseOnSummary(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.getMessage().startswith("Shutting down with"):
                for key in keys.values():
                    release(key)  # logged in the app's event loop, as its shutdown begins
            return True

    logger = logging.getLogger("fastapi_tasks")
    watcher = ReleaseOnSummary()
    logger.addFilter(watcher)
    try:
        # Outside the hang guard: an in-process app's lifespan is entered and left by hand, in the
        # test's own task, and trio wants its cancel scopes left in the order they were entered.
        await env.stop()
    finally:
        logger.removeFilter(watcher)
    result.faults += 1
    for kind, key in keys.items():
        _check_held(kind, {t.name: [t.status.value, ledger.notes.get(t.name)] for t in ledger.named(key)})
        accounting = account(ledger, records(), [key])
        result.add(accounting)
    [summary] = [
        line
        for line in (r.getMessage() for r in records())
        if line.startswith("Shutting down with 9 ") and all(f"'{key}/" in line for key in keys.values())
    ]
    assert summary.count("(in its on_error handler, sync, in a thread)") == 3, summary
    # Only an asyncio task of the app's own is told to be waiting (not on an old anyio: `_compat.NATIVE_TASKS`).
    if NATIVE_TASKS and (env.live or sniffio.current_async_library() == "asyncio"):
        assert summary.count("(in a shielded section or waiting for a thread)") == 6, summary
    await env.start()
    await probe(env, ledger, records, result)
    return result


async def helper_schedulers(env: Env, ledger: Ledger, records: Records) -> FaultResult:
    """Background tasks build `TasksScheduler()` and `TasksScheduler(tg)` in helper tasks (a task group,
    `to_thread`, `asyncio.gather`) while the response streams and after the request returned: every task
    runs on the app's runtime (its on_error handles the failing ones)."""
    result = FaultResult("helper-task schedulers")
    key = f"helpers-{next(_RUNS)}"
    with anyio.fail_after(_GUARD):
        response = await env.client.get(f"/helpers/{key}")
        assert response.text == "streamed", response.text
        settled = (await env.client.get(f"/helpers-settled/{key}")).json()
    helpers = 3 if (env.live or sniffio.current_async_library() == "asyncio") else 2
    built = 2 * helpers
    assert len(settled) == 2 + 3 * built, settled
    accounting = account(ledger, records(), [key])
    assert accounting == {"succeeded": 2 + 2 * built, "failed+handled": built}, accounting
    result.faults += built
    result.add(accounting)
    await probe(env, ledger, records, result)
    return result


@dataclass
class FloodResult:
    """A flood of requests that each schedule a task, against `max_pending`."""

    max_pending: int
    requests: int = 0
    accepted: int = 0
    refused: int = 0
    other: int = 0
    most_running: int = 0
    ran: int = 0
    accounting: Accounting | None = None

    @property
    def lost(self) -> int:
        return self.accepted - self.ran


async def flood(
    env: Env, ledger: Ledger, records: Records, *, requests: int, concurrency: int, max_pending: int, seconds: float
) -> FloodResult:
    """`requests` requests from `concurrency` clients at once, each scheduling a task that takes `seconds`,
    on an app with `max_pending`: the excess is refused with 503, every accepted task runs."""
    key = f"flood-{next(_RUNS)}"
    result = FloodResult(max_pending)
    counter = iter(range(requests))

    async def client() -> None:
        for n in counter:
            response = await env.client.post(f"/flood/{key}/{n}", params={"seconds": seconds})
            if response.status_code == 200:
                result.accepted += 1
            elif response.status_code == 503 and response.headers.get("Retry-After") == "1":
                result.refused += 1
            else:
                result.other += 1

    with anyio.fail_after(_GUARD + requests * seconds):
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(client)
        result.most_running = (await env.client.get(f"/flood-settled/{key}")).json()["most_running"]
    result.requests = requests
    tasks = ledger.named(key)
    result.ran = sum(1 for task in tasks if task.status is TaskStatus.SUCCEEDED and ledger.runs[task.name] == 1)
    result.accounting = account(ledger, records(), [key])
    return result


async def v3_matrix(records: Records, *, live: bool, rounds: int = 1) -> list[FaultResult]:
    """Issue 21's fault scenarios (not the flood), `rounds` times, each on a fresh app."""
    results = []
    make_env = live_env if live else asgi_env
    for _ in range(rounds):
        ledger, hooks = Ledger(), ServerHooks()
        async with make_env(make_v3_app(ledger, hooks), hooks) as env:
            results.append(await unloggable_failures(env, ledger, records))
            results.append(await held_cancels(env, ledger, records))
            results.append(await helper_schedulers(env, ledger, records))
        ledger, hooks = Ledger(), ServerHooks()
        async with make_env(make_v3_app(ledger, hooks), hooks) as env:
            results.append(await held_at_shutdown(env, ledger, records))
    return results


async def run_flood(
    records: Records, *, live: bool, requests: int, concurrency: int = 20, max_pending: int = 20, seconds: float = 0.05
) -> FloodResult:
    """`flood()` on a fresh app with `max_pending`."""
    ledger, hooks = Ledger(), ServerHooks()
    make_env = live_env if live else asgi_env
    async with make_env(make_v3_app(ledger, hooks, max_pending=max_pending), hooks) as env:
        return await flood(
            env, ledger, records, requests=requests, concurrency=concurrency, max_pending=max_pending, seconds=seconds
        )
