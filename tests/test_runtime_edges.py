"""The app's runtime at its edges: the backlog bound on enqueue, batches whose tasks all ended already,
tasks cancelled by something other than the runtime, and logging that fails all the way down."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import anyio
import httpx
import pytest
from _versions import needs_native_tasks
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Scope

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from fastapi_tasks import Phase, Task, TaskConfig, Tasks, TasksBatch, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks._log import log
from fastapi_tasks._runner import handle_error
from fastapi_tasks._runtime import Runtime
from fastapi_tasks.batch import _after_the_endpoint
from fastapi_tasks.errors import BacklogFullError

Backend = Literal["asyncio", "trio"]

TIMEOUT = 10.0

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield a client for it; leaving the block shuts the app down."""
    with anyio.fail_after(2 * TIMEOUT):
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fastapi_tasks" and r.levelno == level]


async def receipt(order: int) -> None:
    pass  # pragma: no cover - never started


# --- refusals -----------------------------------------------------------------------------------


async def test_past_max_pending_enqueue_refuses_before_it_looks_for_a_queue() -> None:
    release = anyio.Event()
    app = FastAPI()
    add_tasks(app, max_pending=1)
    refused: list[BaseException] = []

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.task(name="slow").schedule(release.wait)
        try:
            # Not a queue's job: past the bound, the refusal comes first, whatever the job.
            tasks.task(name="receipt").enqueue(receipt, 1)
        except BacklogFullError as exc:
            refused.append(exc)

    async with serve(app) as client:
        assert (await client.post("/")).status_code == 200
        release.set()

    [error] = refused
    assert re.fullmatch(
        r"Cannot schedule 'receipt': the app already has 1 background tasks pending or running, its limit "
        r"\(add_tasks\(app, max_pending=1\)\)\. Answer 503 Service Unavailable: handle BacklogFullError with an "
        r"exception handler, and let the client retry later\.",
        str(error),
    ), str(error)


# --- batches whose tasks all ended before the batch did ------------------------------------------


async def test_a_hand_built_batch_started_after_the_shutdown_with_only_cancelled_tasks_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    add_tasks(app)
    kept: list[TasksScheduler] = []

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        kept.append(tasks)

    batch = TasksBatch(phase=Phase.AFTER_RESPONSE)
    task = batch.task(name="withdrawn").schedule(receipt, 1)  # a batch of its own: Task made by the batch
    before = task.status
    task.cancel()
    with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            await client.post("/")
        batch.__start__(kept[0])

    # Its own cancellation ended it while it waited in the batch; the late start leaves it so, and says nothing.
    assert (before, task.status) == (TaskStatus.PENDING, TaskStatus.CANCELLED)
    assert [m for m in messages(caplog, logging.WARNING) if m.startswith("Cancelled")] == []


async def test_a_hand_built_batch_enqueues_through_the_queue_registry() -> None:
    with pytest.raises(
        TypeError,
        match=r"^Cannot enqueue <function receipt at 0x[0-9a-f]+>: it is not a job of a supported queue "
        r"\(a taskiq task made with @broker\.task, or a Celery task made with @app\.task\)\. "
        r"To run a plain function in this process, use schedule\(\) instead\.$",
    ):
        TasksBatch().enqueue(receipt, 1)


async def test_an_unbound_batch_whose_tasks_were_all_cancelled_is_not_named_at_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    async def parent() -> None:
        scheduler = TasksScheduler()  # in a task: unbound, its code starts its batches by hand
        withdrawn = scheduler.after_response.task(name="withdrawn").schedule(receipt, 1)
        withdrawn.cancel()
        handles.append(withdrawn)

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.schedule(parent))

    with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            await client.post("/")
            with anyio.fail_after(TIMEOUT):
                await handles[0].wait()

    assert [handle.status for handle in handles] == [TaskStatus.SUCCEEDED, TaskStatus.CANCELLED]
    assert messages(caplog, logging.WARNING) == []


async def test_a_task_that_starts_its_batches_by_hand_keeps_no_started_batch_and_loses_no_unstarted_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A runtime holds the batches of schedulers built in its tasks until they are started (a dropped
    # scheduler's batch must not be lost to the garbage collector); started ones are let go as the set
    # grows, so a long-lived task that defers and starts by hand does not grow it without bound.
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []
    held: list[int] = []

    async def worker(runtime: Runtime) -> None:
        for order in range(500):
            scheduler = TasksScheduler()
            batch = scheduler.after_response
            handle = batch.task(name=f"receipt {order}").schedule(receipt, order)
            if order == 7:
                handles.append(handle)  # never started: cancelled and named at shutdown
                continue
            handle.cancel()  # started by hand, cancelled first so that it does not run
            batch.__start__(scheduler)
            held.append(len(runtime.unbound))

    @app.post("/")
    async def endpoint(request: Request, tasks: Tasks) -> None:
        handles.append(tasks.schedule(worker, request.state.fastapi_tasks_runtime))

    with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            await client.post("/")
            with anyio.fail_after(TIMEOUT):
                await handles[0].wait()
            gc.collect()

    assert handles[0].status is TaskStatus.SUCCEEDED, handles[0].exception
    assert max(held) <= 128, max(held)
    assert handles[1].status is TaskStatus.CANCELLED
    assert messages(caplog, logging.WARNING) == [
        "Cancelled 1 after_response task(s) whose batch was never started: 'receipt 7'. A TasksScheduler built "
        "outside a request (in a task, or in the lifespan) starts its batches by hand: batch.__start__(scheduler)"
    ]


async def test_a_discarded_batch_whose_tasks_were_all_cancelled_logs_no_discard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handle = tasks.after_response.task(name="withdrawn").schedule(receipt, 1)
        handle.cancel()
        handles.append(handle)
        raise LookupError("no such order")

    with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with serve(app) as client:
            with pytest.raises(LookupError, match=r"^no such order$"):
                await client.post("/")

    assert handles[0].status is TaskStatus.CANCELLED  # not discarded: it had ended already
    assert [m for m in messages(caplog, logging.INFO) if m.startswith("Discarded")] == []


# --- cancelled by something other than the runtime ------------------------------------------------


@needs_native_tasks
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_whose_asyncio_task_something_else_cancels_ends_cancelled_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, release = anyio.Event(), anyio.Event()
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    async def body() -> None:
        started.set()
        await release.wait()

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.task(name="watched").schedule(body))

    async with serve(app) as client:
        await client.post("/")
        with anyio.fail_after(TIMEOUT):
            await started.wait()
            native = handles[0]._handle
            assert isinstance(native, asyncio.Task)
            native.cancel()  # as the event loop does to its tasks when it closes
            await handles[0].wait()

    assert handles[0].status is TaskStatus.CANCELLED
    assert messages(caplog, logging.WARNING) == [
        "Background task 'watched' was cancelled from outside the app before it finished (the server or the event "
        "loop shutting down cancelled it)"
    ]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancel_reaches_a_task_inside_nested_cancel_scopes_of_its_own() -> None:
    inside, cut_short = anyio.Event(), []
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    async def body() -> None:
        with anyio.move_on_after(TIMEOUT) as outer:
            with anyio.CancelScope():
                inside.set()
                await anyio.sleep_forever()
        cut_short.append(outer.cancel_called)  # pragma: no cover - it must not get here

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.task(name="nested").schedule(body))

    async with serve(app) as client:
        await client.post("/")
        with anyio.fail_after(TIMEOUT):
            await inside.wait()
            handles[0].cancel()
            await handles[0].wait()

    # Cancelled as a whole: not merely out of its innermost scope, on to the rest of its body.
    assert (handles[0].status, cut_short) == (TaskStatus.CANCELLED, [])


async def test_a_task_that_raises_cancelled_error_itself_fails(caplog: pytest.LogCaptureFixture) -> None:
    # Not the task's cancellation (on asyncio nothing is cancelling its task; trio has no such error of its own).
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    async def body() -> None:
        raise asyncio.CancelledError("a future it awaited was cancelled")

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.task(name="awaits a future").schedule(body))

    async with serve(app) as client:
        await client.post("/")
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert handles[0].status is TaskStatus.FAILED
    assert isinstance(handles[0].exception, asyncio.CancelledError)
    assert messages(caplog, logging.ERROR) == [
        "Background task 'awaits a future' failed: CancelledError: a future it awaited was cancelled"
    ]


@needs_native_tasks
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_cancelled_before_its_first_step_is_ended_by_its_done_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with anyio.create_task_group() as tg:
        runtime = Runtime(tg, TaskConfig(), None, native=True)
        task = runtime.new_task(receipt, (1,), {}, TaskConfig(name="unstepped", shield=True), Phase.IMMEDIATE)
        runtime.spawn(task)
        runtime._watch_ends()  # what the shutdown does to the live tasks
        native = task._handle
        assert isinstance(native, asyncio.Task)
        native.cancel()  # before the loop ever stepped it: its runner never runs, nor its `finally`
        with anyio.fail_after(TIMEOUT):
            await task.wait()

    assert task.status is TaskStatus.CANCELLED
    assert runtime.live == set()
    assert messages(caplog, logging.WARNING) == ["Background task 'unstepped' was cancelled before it started"]


# --- on_error handlers that end the process, or are cancelled ------------------------------------


async def test_an_on_error_handler_that_raises_system_exit_is_logged_and_raises_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def stop(task: Task[..., Any], exc: Exception) -> None:
        raise SystemExit(3)

    task = TasksBatch().task(name="charge", on_error=stop).schedule(receipt, 1)
    with pytest.raises(SystemExit) as excinfo:
        await handle_error(task, ValueError("card declined"))

    assert excinfo.value.code == 3
    assert messages(caplog, logging.ERROR) == [
        "The on_error handler test_an_on_error_handler_that_raises_system_exit_is_logged_and_raises_it.<locals>.stop "
        "of background task 'charge' raised: SystemExit: 3"
    ]


async def test_an_on_error_handler_cancelled_with_its_task_is_not_logged_as_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    in_handler = anyio.Event()
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    async def on_error(task: Task[..., Any], exc: Exception) -> None:
        in_handler.set()
        await anyio.sleep_forever()

    async def body() -> None:
        raise ValueError("card declined")

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.task(name="charge", on_error=on_error).schedule(body))

    async with serve(app) as client:
        await client.post("/")
        with anyio.fail_after(TIMEOUT):
            await in_handler.wait()
            handles[0].cancel()
            await handles[0].wait()

    assert handles[0].status is TaskStatus.FAILED  # it had failed; its handler was cut short
    assert [m for m in messages(caplog, logging.ERROR) if m.startswith("The on_error handler")] == []


# --- logging that fails all the way down -----------------------------------------------------------


@contextmanager
def failing_logging(last_resort: logging.Handler | None) -> Iterator[None]:
    """A filter on the `fastapi_tasks` logger that raises whatever the record, and `last_resort` as stderr's."""

    class Broken(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise RuntimeError("broken filter")

    logger = logging.getLogger("fastapi_tasks")
    broken, previous = Broken(), logging.lastResort
    logger.addFilter(broken)
    logging.lastResort = last_resort
    try:
        yield
    finally:
        logger.removeFilter(broken)
        logging.lastResort = previous


async def test_log_never_raises_when_no_last_resort_handler_is_left() -> None:
    with failing_logging(None):
        log(logging.ERROR, "Background task %s failed: %s", "'charge'", "ValueError: card declined")


async def test_log_never_raises_when_the_last_resort_handler_raises_too() -> None:
    seen: list[str] = []

    class Raising(logging.Handler):
        def handle(self, record: logging.LogRecord) -> bool:
            seen.append(record.getMessage())
            raise OSError("stderr is closed")

    with failing_logging(Raising()):
        log(logging.ERROR, "Background task %s failed: %s", "'charge'", "ValueError: card declined")

    assert seen == ["Background task 'charge' failed: ValueError: card declined"]


async def test_a_lifespan_without_state_that_starts_with_another_message_is_sent_nothing() -> None:
    app = FastAPI()
    add_tasks(app)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        sent.append(message)  # pragma: no cover - it must send nothing

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
    with pytest.raises(RuntimeError, match=r"^add_tasks\(\) needs an ASGI server that supports lifespan state "):
        await app(scope, receive, send)
    assert sent == []


# --- why an after_response batch was discarded ----------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "went_away"),
    [
        (OSError("broken pipe"), True),
        (BaseExceptionGroup("send", [OSError("broken pipe")]), True),  # Starlette < 0.38's streaming response
        (BaseExceptionGroup("send", [ConnectionResetError(), BaseExceptionGroup("inner", [OSError()])]), True),
        (BaseExceptionGroup("send", [OSError(), ValueError()]), False),
        (ValueError("teardown"), False),
    ],
)
async def test_a_discard_after_the_endpoint_blames_the_client_only_when_every_error_is_the_clients_leaving(
    exc: BaseException, went_away: bool
) -> None:
    why = _after_the_endpoint(exc)
    assert why.startswith("the client went away before the response was sent") is went_away, why
