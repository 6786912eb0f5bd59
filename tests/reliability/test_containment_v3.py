"""Issue 21, containment v3: every task accounted for, even when its failure cannot be logged, its
cancel hits a shield, or clients flood the app.

One regression test (or a few) per defect of the issue, in-process on asyncio and trio; the ones that
stop a process run it in a subprocess. Every wait is on an event, with `anyio.fail_after` as a hang guard.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from starlette.types import Message

from fastapi_tasks import Task, TaskConfig, Tasks, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks._compat import NATIVE_TASKS
from fastapi_tasks.errors import BacklogFullError
from fastapi_tasks_testing import RecordingScheduler

from .test_containment import TIMEOUT, messages, serve

Backend = Literal["asyncio", "trio"]
EAGER_START = sys.version_info >= (3, 12)
needs_eager_start = pytest.mark.skipif(not EAGER_START, reason="eager_start needs Python 3.12 or later")

pytestmark = pytest.mark.anyio


@contextmanager
def logger_filter(check: Any) -> Iterator[None]:
    """A filter on the `fastapi_tasks` logger, as an app may add one."""

    class Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return bool(check(record))

    installed = Filter()
    logger = logging.getLogger("fastapi_tasks")
    logger.addFilter(installed)
    try:
        yield
    finally:
        logger.removeFilter(installed)


# --- 1. a failure that cannot be logged ----------------------------------------------------------


class Unprintable(Exception):
    """A library exception whose `__str__` formats a field its `__init__` never set."""

    def __str__(self) -> str:
        return f"code {self.code}"  # type: ignore[attr-defined]


def _raise_with_exc_info(record: logging.LogRecord) -> bool:
    if record.exc_info:
        raise RecursionError("maximum recursion depth exceeded while logging")
    return True


def _always_raise(record: logging.LogRecord) -> bool:
    raise ValueError("a broken filter")


@pytest.mark.parametrize("fault", ["str-raises", "recursion-while-logging", "filter-always-raises"])
async def test_a_failure_that_cannot_be_logged_still_ends_failed_and_runs_on_error(
    fault: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    handled: list[Exception] = []
    handles: dict[str, Task[..., Any]] = {}

    async def on_error(task: Task[..., Any], exc: Exception) -> None:
        handled.append(exc)

    async def fail() -> None:
        raise Unprintable() if fault == "str-raises" else ValueError("boom")

    async def later() -> str:
        return "later"

    app = FastAPI()
    add_tasks(app, config=TaskConfig(on_error=on_error))

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["fault"] = tasks.task(name="fault").schedule(fail)

    @app.post("/later")
    async def start_later(tasks: Tasks) -> None:
        handles["later"] = tasks.schedule(later)

    check = {"recursion-while-logging": _raise_with_exc_info, "filter-always-raises": _always_raise}.get(
        fault, lambda record: True
    )
    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"), logger_filter(check):
        async with serve(app) as client:
            await client.post("/")
            await handles["fault"].wait()
            # The app goes on: its task group was not torn down by the failure.
            assert (await client.post("/later")).status_code == 200
            await handles["later"].wait()

    assert handles["fault"].status is TaskStatus.FAILED
    assert handled == [handles["fault"].exception]
    assert handles["later"].result == "later"
    if fault == "str-raises":
        assert messages(caplog, logging.ERROR) == [
            "Background task 'fault' failed: Unprintable: <str() of the exception raised AttributeError>"
        ]
    elif fault == "recursion-while-logging":
        assert messages(caplog, logging.ERROR) == [
            "Background task 'fault' failed: ValueError: boom (logged without its traceback: logging it raised "
            "RecursionError)"
        ]
    else:
        assert "Background task 'fault' failed: ValueError: boom" in capsys.readouterr().err


@needs_eager_start
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_eager_chain_of_tasks_does_not_overflow_the_stack(caplog: pytest.LogCaptureFixture) -> None:
    # Each task schedules the next before its first await: started eagerly inside one another, the chain
    # overflowed the stack at about 137 levels and ended silently.
    length = 500
    ran: list[int] = []
    done = anyio.Event()
    app = FastAPI()
    add_tasks(app, eager_start=True)

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        async def link(n: int) -> None:
            ran.append(n)
            if n < length:
                tasks.schedule(link, n + 1)
            else:
                done.set()
            await anyio.lowlevel.checkpoint()

        tasks.schedule(link, 1)

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, logger="fastapi_tasks"):
        async with serve(app) as client:
            await client.post("/")
            await done.wait()

    assert ran == list(range(1, length + 1))
    assert messages(caplog, logging.ERROR) == []


# --- 2. cancelling honours anyio's shields and thread waits ---------------------------------------


@pytest.mark.parametrize("where", ["shielded-section", "to-thread", "sync-on-error-in-a-thread"])
async def test_cancel_waits_for_shielded_sections_and_threads(where: str) -> None:
    entered = anyio.Event()
    release = threading.Event()
    steps: list[str] = []
    handles: dict[str, Task[..., Any]] = {}

    def blocking() -> str:
        anyio.from_thread.run_sync(entered.set)
        assert release.wait(TIMEOUT)
        return "the thread ran to its end"

    def on_error(task: Task[..., Any], exc: Exception) -> None:
        blocking()
        steps.append("on_error returned")

    async def body() -> None:
        if where == "shielded-section":
            with anyio.CancelScope(shield=True):
                entered.set()
                await anyio.to_thread.run_sync(release.wait, TIMEOUT)
                await anyio.lowlevel.checkpoint()
                steps.append("the shielded section ended")
        elif where == "to-thread":
            steps.append(await anyio.to_thread.run_sync(blocking))
        else:
            raise ValueError("boom")
        await anyio.sleep_forever()

    app = FastAPI()
    add_tasks(app, max_threads=1)  # one thread: a handler abandoned by a cancel would let a second one run

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["task"] = tasks.task(name="task", on_error=on_error).schedule(body)

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            await client.post("/")
            await entered.wait()
            handles["task"].cancel()
            release.set()
            await handles["task"].wait()

    expected = {
        "shielded-section": (["the shielded section ended"], TaskStatus.CANCELLED),
        "to-thread": (["the thread ran to its end"], TaskStatus.CANCELLED),
        "sync-on-error-in-a-thread": (["on_error returned"], TaskStatus.FAILED),
    }
    assert (steps, handles["task"].status) == expected[where]


async def test_the_shutdown_warning_marks_tasks_in_a_thread(
    anyio_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    entered = {"body": anyio.Event(), "handler": anyio.Event(), "to_thread": anyio.Event()}
    release = threading.Event()
    handles: dict[str, Task[..., Any]] = {}

    def blocking(which: str) -> None:
        anyio.from_thread.run_sync(entered[which].set)
        assert release.wait(TIMEOUT)

    def on_error(task: Task[..., Any], exc: Exception) -> None:
        blocking("handler")

    async def fail() -> None:
        raise ValueError("boom")

    async def waits_for_a_thread() -> None:
        await anyio.to_thread.run_sync(blocking, "to_thread")

    app = FastAPI()
    add_tasks(app)

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["body"] = tasks.task(name="sync body").schedule(blocking, "body")
        handles["handler"] = tasks.task(name="failing", on_error=on_error).schedule(fail)
        handles["to_thread"] = tasks.task(name="async body").schedule(waits_for_a_thread)

    def release_on_summary(record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Shutting down"):
            release.set()
        return True

    with (
        anyio.fail_after(TIMEOUT),
        caplog.at_level(logging.INFO, logger="fastapi_tasks"),
        logger_filter(release_on_summary),
    ):
        async with serve(app) as client:
            await client.post("/")
            for event in entered.values():
                await event.wait()

    [summary] = [m for m in messages(caplog, logging.WARNING) if m.startswith("Shutting down")]
    # Only an asyncio task of its own (`_compat.NATIVE_TASKS`) is told to be waiting for a thread.
    native = anyio_backend == "asyncio" and NATIVE_TASKS
    in_thread = "'async body' (in a shielded section or waiting for a thread), " if native else ""
    assert summary.startswith(
        f"Shutting down with 3 background task(s) unfinished: {in_thread or chr(39) + 'async body' + chr(39) + ', '}"
        "'failing' (in its on_error handler, sync, in a thread), 'sync body' (sync, in a thread). "
    ), summary
    assert handles["body"].status is TaskStatus.SUCCEEDED
    assert handles["handler"].status is TaskStatus.FAILED


# --- 3. a scheduler built in a helper task of a background task ----------------------------------


@pytest.mark.parametrize("helper", ["task-group", "to-thread", "asyncio-gather"])
@pytest.mark.parametrize("when", ["while-streaming", "after-the-request"])
async def test_a_scheduler_built_in_a_helper_task_binds_to_the_apps_runtime(
    anyio_backend: Backend, helper: str, when: str, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    if helper == "asyncio-gather" and anyio_backend == "trio":
        pytest.skip("asyncio.gather needs asyncio")
    handled: list[str] = []
    request_ended, stream_started, helper_done = anyio.Event(), anyio.Event(), anyio.Event()
    results: dict[str, Any] = {}

    async def on_error(task: Task[..., Any], exc: Exception) -> None:
        handled.append(task.name)

    async def fail() -> None:
        raise ValueError("boom")

    async def never_started() -> None:
        pass

    def build(tg: Any) -> None:
        # Built in the helper: with no argument, and from the app's task group.
        results["immediate"] = TasksScheduler().task(name="immediate").schedule(fail)
        results["deferred"] = TasksScheduler().after_route.task(name="deferred").schedule(never_started)
        results["from-tg"] = TasksScheduler(tg).task(name="from-tg").schedule(fail)

    async def build_async(tg: Any) -> None:
        build(tg)

    async def background(tg: Any) -> None:
        await (request_ended if when == "after-the-request" else stream_started).wait()
        try:
            if helper == "task-group":
                async with anyio.create_task_group() as helpers:
                    helpers.start_soon(build_async, tg)
            elif helper == "to-thread":
                await anyio.to_thread.run_sync(build, tg)
            else:
                await asyncio.gather(build_async(tg))
        except Exception as exc:
            results["error"] = exc
        helper_done.set()

    async def stream() -> Any:
        stream_started.set()
        await helper_done.wait()
        yield b"done"

    app = FastAPI()
    add_tasks(app, config=TaskConfig(on_error=on_error))

    @app.get("/")
    async def endpoint(request: Request, tasks: Tasks) -> StreamingResponse:
        tasks.schedule(background, request.state.fastapi_tasks_tg)
        if when == "after-the-request":
            return StreamingResponse(iter([b"done"]))
        return StreamingResponse(stream())

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            assert (await client.get("/")).text == "done"
            request_ended.set()
            await helper_done.wait()
            assert "error" not in results, results
            # The helper dropped its schedulers: the garbage collector may free them (and their batches,
            # a reference cycle) at any time; that must not lose the never-started batch.
            gc.collect()
            await results["immediate"].wait()
            await results["from-tg"].wait()

    # Both immediate tasks ran under the app's runtime (its on_error); the deferred one, whose batch
    # nobody started, was cancelled and named at shutdown instead of staying pending.
    assert sorted(handled) == ["from-tg", "immediate"]
    assert results["deferred"].status is TaskStatus.CANCELLED
    assert any("'deferred'" in m for m in messages(caplog, logging.WARNING))


# --- 4. and 5. SystemExit stops the process (subprocesses) ---------------------------------------

_EXITING_APP = """
import sys, anyio, httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

handles = {{}}
app = FastAPI()
add_tasks(app, eager_start={eager}, shutdown_timeout=30)

async def exits():
    sys.exit(3)

async def sibling():
    await anyio.sleep(0)
    return "sibling ran"

@app.post("/")
async def endpoint(tasks: Tasks) -> None:
    batch = tasks.after_route if {deferred} else tasks
    handles["exits"] = batch.task(name="exits").schedule(exits)
    handles["sibling"] = batch.task(name="sibling").schedule(sibling)

async def main():
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            print("status", (await client.post("/")).status_code, flush=True)
            await anyio.sleep_forever()

try:
    anyio.run(main, backend={backend!r})
finally:
    print("ended", {{name: task.status.value for name, task in handles.items()}}, flush=True)
"""


def _run_exiting_app(backend: str, *, eager: bool, deferred: bool) -> subprocess.CompletedProcess[str]:
    source = _EXITING_APP.format(backend=backend, eager=eager, deferred=deferred)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("phase", ["immediate", "after_route"])
def test_system_exit_in_a_task_stops_the_process_though_a_sibling_had_not_started(
    anyio_backend: Backend, phase: str
) -> None:
    run = _run_exiting_app(anyio_backend, eager=False, deferred=phase == "after_route")
    assert run.returncode != 0, run.stdout + run.stderr
    assert "ended {'exits': 'failed', 'sibling': " in run.stdout, run.stdout + run.stderr
    assert "'sibling': 'pending'" not in run.stdout, run.stdout


@needs_eager_start
@pytest.mark.parametrize("phase", ["immediate", "after_route"])
def test_system_exit_in_an_eager_first_stretch_stops_the_process_and_keeps_the_batch(phase: str) -> None:
    run = _run_exiting_app("asyncio", eager=True, deferred=phase == "after_route")
    assert run.returncode != 0, run.stdout + run.stderr
    # The request got its response; the rest of the batch ran or was cancelled, never lost pending.
    assert "status 200" in run.stdout, run.stdout + run.stderr
    assert "ended {'exits': 'failed', 'sibling': " in run.stdout, run.stdout + run.stderr
    assert "'sibling': 'pending'" not in run.stdout, run.stdout


@needs_eager_start
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancel_in_the_eager_first_stretch_is_honoured() -> None:
    handles: dict[str, Task[..., Any]] = {}
    app = FastAPI()
    add_tasks(app, eager_start=True)

    @app.post("/")
    async def endpoint(request: Request, tasks: Tasks) -> None:
        runtime = request.state.fastapi_tasks_runtime

        async def cancels_itself() -> str:
            [me] = [task for task in runtime.live if task.name == "self-cancelling"]
            me.cancel()
            await anyio.lowlevel.checkpoint()
            return "it went on"

        handles["task"] = tasks.task(name="self-cancelling").schedule(cancels_itself)

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            await client.post("/")
            await handles["task"].wait()

    assert handles["task"].status is TaskStatus.CANCELLED


# --- 6. max_pending bounds the backlog; the shutdown WARNING is capped ------------------------------


async def test_past_max_pending_schedule_refuses_at_the_call_site_with_503() -> None:
    release = anyio.Event()
    app = FastAPI()
    add_tasks(app, max_pending=2)

    @app.exception_handler(BacklogFullError)
    async def backlog_full(request: Request, exc: BacklogFullError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.task(name="slow").schedule(release.wait)

    with anyio.fail_after(TIMEOUT):
        async with serve(app) as client:
            assert [(await client.post("/")).status_code for _ in range(3)] == [200, 200, 503]
            refused = await client.post("/")
            release.set()
    assert refused.json()["detail"] == (
        "Cannot schedule 'slow': the app already has 2 background tasks pending or running, its limit "
        "(add_tasks(app, max_pending=2)). Answer 503 Service Unavailable: handle BacklogFullError with an "
        "exception handler, and let the client retry later."
    )


def test_max_pending_is_checked_where_it_is_set() -> None:
    with pytest.raises(ValueError, match=r"^max_pending must be at least 1, not 0$"):
        add_tasks(FastAPI(), max_pending=0)
    with pytest.raises(TypeError, match=r"^max_pending must be a whole number of tasks or None, not '10'$"):
        add_tasks(FastAPI(), max_pending="10")  # type: ignore[arg-type]


async def test_the_shutdown_warning_names_the_first_tasks_then_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    add_tasks(app)

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        for n in range(25):
            tasks.task(name=f"t{n:02d}").schedule(anyio.sleep_forever)

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            await client.post("/")
            await anyio.wait_all_tasks_blocked()

    [summary] = [m for m in messages(caplog, logging.WARNING) if m.startswith("Shutting down")]
    names = ", ".join(f"'t{n:02d}'" for n in range(20))
    assert summary.startswith(f"Shutting down with 25 background task(s) unfinished: {names} and 5 more. "), summary


# --- 7. the server stops waiting before the grace period ends -------------------------------------


@pytest.mark.parametrize("recorded", [False, True], ids=["production", "recorder"])
async def test_a_server_that_stops_waiting_gets_the_unfinished_named_and_the_tasks_cancelled(
    anyio_backend: Backend, caplog: pytest.LogCaptureFixture, recorded: bool
) -> None:
    app = FastAPI()
    add_tasks(app, shutdown_timeout=60)
    if recorded:  # run mode: the same tasks, started by production's spawn, and the same shutdown
        recorder = RecordingScheduler()
        recorder.detach("plain", "shielded")  # they outlive the request, as in production
        recorder.install(app)
    handles: dict[str, Task[..., Any]] = {}
    release_shielded = anyio.Event()
    # Tasks of their own on asyncio (an anyio too old for that starts them in the task group, as on trio).
    native = anyio_backend == "asyncio" and NATIVE_TASKS

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["plain"] = tasks.task(name="plain").schedule(anyio.sleep_forever)
        handles["shielded"] = tasks.task(name="shielded", shield=True).schedule(release_shielded.wait)

    sent: list[Message] = []
    from_test, to_app = anyio.create_memory_object_stream[Message](10)
    state: dict[str, Any] = {}

    async def receive() -> Message:
        return await to_app.receive()

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with from_test, to_app, anyio.create_task_group() as server:
            lifespan = anyio.CancelScope()

            async def run_lifespan() -> None:
                with lifespan:
                    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, receive, send)

            server.start_soon(run_lifespan)
            await from_test.send({"type": "lifespan.startup"})
            await anyio.wait_all_tasks_blocked()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                client_app = app

                async def with_state(scope: Any, receive: Any, send: Any) -> None:
                    await client_app(dict(scope, state=dict(state)), receive, send)

                transport.app = with_state
                await client.post("/")
            await anyio.wait_all_tasks_blocked()
            await from_test.send({"type": "lifespan.shutdown"})
            await anyio.wait_all_tasks_blocked()  # the shutdown waits in its grace period
            lifespan.cancel()  # the server's own timeout is shorter: it stops waiting
            await handles["plain"].wait()
            if native:
                # As the event loop's teardown does once the server returns: it cancels every task left.
                handles["shielded"]._handle.cancel()
            # On trio (a task of the lifespan's task group) its shield was cancelled: the lifespan, and the
            # process, would otherwise wait for it for ever.
            await handles["shielded"].wait()

    warnings = messages(caplog, logging.WARNING)
    # On trio (and wherever tasks run in the lifespan's task group) the server's cancel reaches the tasks in
    # the same step as the shutdown, in no set order: whichever sees it first logs the summary, once.
    assert warnings[0] == (
        "The server stopped waiting for the app's shutdown (grace period: shutdown_timeout=60 s) with 2 "
        "background task(s) unfinished: 'plain', 'shielded' (shielded). Cancelling them: the unshielded ones "
        "now, the shielded ones as the server exits. Give the server a shutdown timeout longer than "
        "add_tasks(app, shutdown_timeout=...): see docs/shutdown.md"
    ), warnings
    assert sum(w.startswith("The server stopped waiting") for w in warnings) == 1, warnings
    assert handles["plain"].status is TaskStatus.CANCELLED
    assert handles["shielded"].status is TaskStatus.CANCELLED
    assert not release_shielded.is_set()  # it never finished: it was cancelled
    assert messages(caplog, logging.ERROR) == []


# --- 8. failure log lines: one line, escaped, capped; messages can be left out ---------------------


@pytest.mark.parametrize("log_exception_messages", [True, False])
async def test_failure_log_lines_are_one_escaped_capped_line(
    log_exception_messages: bool, caplog: pytest.LogCaptureFixture
) -> None:
    handles: dict[str, Task[..., Any]] = {}

    async def forged() -> None:
        raise ValueError("card 4111111111111111\r\nERROR forged line" + "x" * 200_000)

    app = FastAPI()
    add_tasks(app, log_exception_messages=log_exception_messages)

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles["task"] = tasks.task(name="leaky").schedule(forged)

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            await client.post("/")
            await handles["task"].wait()

    [line] = messages(caplog, logging.ERROR)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "\n" not in line
    assert "\r" not in line
    if log_exception_messages:
        assert line[:200].startswith(
            "Background task 'leaky' failed: ValueError: card 4111111111111111\\r\\nERROR forged linexxx"
        ), line[:200]
        assert re.search(r"xxx\.\.\. \[[\d,]+ more characters\]$", line), line[-100:]
        assert len(line) < 2200
        assert record.exc_info is not None
    else:
        assert line.startswith("Background task 'leaky' failed: ValueError (raised at "), line
        assert "4111" not in line
        assert record.exc_info is None


# --- 9. small ones ---------------------------------------------------------------------------------


def test_cancel_on_an_ended_task_never_raises_even_after_the_loop_ended(anyio_backend: Backend) -> None:
    handles: list[Task[..., Any]] = []
    app = FastAPI()
    add_tasks(app)

    async def job() -> str:
        return "done"

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.schedule(job))

    with TestClient(app, backend=anyio_backend) as client:
        client.post("/")
        assert client.portal is not None
        client.portal.call(handles[0].wait)
    handles[0].cancel()  # from this thread, which is not the (ended) loop's
    assert handles[0].status is TaskStatus.SUCCEEDED


async def test_a_request_cancelled_at_shutdown_is_not_logged_as_the_client_going_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    streaming = anyio.Event()
    app = FastAPI()
    add_tasks(app)

    async def job() -> None:
        pass

    async def stream() -> Any:
        yield b"first"
        streaming.set()
        await anyio.sleep_forever()

    @app.get("/")
    async def endpoint(tasks: Tasks) -> StreamingResponse:
        tasks.after_response.task(name="after").schedule(job)
        return StreamingResponse(stream())

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client, anyio.create_task_group() as server:
            server.start_soon(client.get, "/")
            await streaming.wait()
            server.cancel_scope.cancel()  # as a server cancels the requests still running at its shutdown

    [discarded] = [m for m in messages(caplog, logging.INFO) if m.startswith("Discarded")]
    assert "the client went away" not in discarded
    assert discarded.startswith("Discarded 1 after_response task(s) because the request was cancelled"), discarded


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"on_error": 1}, TypeError, r"^on_error must be a callable taking \(task, exc\), not 1$"),
        ({"name": 42}, TypeError, r"^name must be a str or None, not 42$"),
        ({"shield": "yes"}, TypeError, r"^shield must be True, False or None, not 'yes'$"),
        (
            {"dispatch_timeout": 0},
            ValueError,
            r"^dispatch_timeout must be a positive number of seconds or None, not 0$",
        ),
    ],
)
def test_task_config_is_checked_where_it_is_built(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        TaskConfig(**options)
