"""`enqueue()` in production: phases, job ids, discarding, timeouts, `DispatchError`, adapter lookup.

A fake queue stands in for the broker here; the taskiq and Celery adapters against a real Redis
are in tests/integration.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import re
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, HTTPException
from taskiq import InMemoryBroker

from fastapi_tasks import (
    DispatchTask,
    Phase,
    Task,
    TaskConfig,
    Tasks,
    TasksScheduler,
    TaskStatus,
    add_tasks,
    register_dispatcher,
)
from fastapi_tasks._dispatch import DEFAULT_DISPATCH_TIMEOUT
from fastapi_tasks.dispatchers._registry import find_dispatcher
from fastapi_tasks.errors import DispatchBackendError, DispatchError, TaskNotFinishedError

Backend = Literal["asyncio", "trio"]
TIMEOUT = 10.0


class Job:
    """A job of the fake queue: a name and a body, and how the fake broker treats it."""

    def __init__(self, name: str, *, broker_error: Exception | None = None, silent: bool = False) -> None:
        self.name = name
        self.broker_error = broker_error
        self.silent = silent
        self.sent: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.arrived = threading.Event()

    def __repr__(self) -> str:
        return f"<Job {self.name}>"

    def __call__(self, order_id: int, *, note: str = "") -> str:
        return f"{self.name} {order_id} {note}".strip()


class FakeQueue:
    """A `Dispatcher` for `Job`s whose broker records what it was sent, or fails, or never answers."""

    backend = "fakeq"
    async_libraries = ("asyncio", "trio")

    def __init__(self) -> None:
        self.ids = 0

    def accepts(self, job: object) -> bool:
        return isinstance(job, Job)

    def job_name(self, job: Job) -> str:
        return f"jobs.{job.name}"

    def job_signature(self, job: Job) -> inspect.Signature:
        return inspect.signature(job.__call__)

    def new_job_id(self, job: Job) -> str:
        self.ids += 1
        return f"{job.name}-{self.ids}"

    async def dispatch(self, job: Job, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if job.silent:
            await anyio.sleep_forever()
        if job.broker_error is not None:
            raise job.broker_error
        job.sent.append((job_id, args, kwargs))
        job.arrived.set()
        return f"handle {job_id}"

    def round_trip(self, job: Job, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return list(args), dict(kwargs)  # like JSON: a tuple comes back as a list

    async def run_as_worker(self, job: Job, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return job(*args, **kwargs)


QUEUE = FakeQueue()
register_dispatcher(QUEUE)


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def ended(*handles: Task[..., Any]) -> None:
    with anyio.fail_after(TIMEOUT):
        for handle in handles:
            await handle.wait()


# --- the three phases --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.anyio
async def test_enqueue_dispatches_in_each_phase_with_the_job_id_known_at_once(kind: str) -> None:
    jobs = {phase: Job(f"{phase.value}-{kind}") for phase in Phase}
    handles: list[DispatchTask] = []
    ids_in_endpoint: list[str] = []
    app = FastAPI()
    add_tasks(app)

    def enqueue_all(tasks: TasksScheduler) -> None:
        handles.append(tasks.enqueue(jobs[Phase.IMMEDIATE], 1))
        handles.append(tasks.after_route.enqueue(jobs[Phase.AFTER_ROUTE], 2, note="x"))
        handles.append(tasks.after_response.enqueue(jobs[Phase.AFTER_RESPONSE], 3))
        ids_in_endpoint.extend(handle.job_id for handle in handles)

    if kind == "sync":

        @app.post("/orders")
        def sync_order(tasks: Tasks) -> dict[str, str]:
            enqueue_all(tasks)
            return {"receipt": handles[-1].job_id}

    else:

        @app.post("/orders")
        async def async_order(tasks: Tasks) -> dict[str, str]:
            enqueue_all(tasks)
            return {"receipt": handles[-1].job_id}

    async with serve(app) as client:
        response = await client.post("/orders")
        await ended(*handles)

    assert response.status_code == 200
    assert response.json() == {"receipt": handles[-1].job_id}
    assert [handle.job_id for handle in handles] == ids_in_endpoint
    assert [handle.phase for handle in handles] == list(Phase)
    assert [handle.status for handle in handles] == [TaskStatus.DISPATCHED] * 3
    assert [handle.result for handle in handles] == [f"handle {handle.job_id}" for handle in handles]
    assert jobs[Phase.IMMEDIATE].sent == [(handles[0].job_id, (1,), {})]
    assert jobs[Phase.AFTER_ROUTE].sent == [(handles[1].job_id, (2,), {"note": "x"})]
    assert jobs[Phase.AFTER_RESPONSE].sent == [(handles[2].job_id, (3,), {})]


@pytest.mark.anyio
async def test_deferred_dispatches_are_discarded_when_the_endpoint_raises() -> None:
    immediate, after_route, after_response = Job("now"), Job("route"), Job("response")
    handles: list[DispatchTask] = []
    app = FastAPI()
    add_tasks(app)

    @app.post("/orders")
    async def failed_order(tasks: Tasks) -> None:
        handles.append(tasks.enqueue(immediate, 1))
        handles.append(tasks.after_route.enqueue(after_route, 1))
        handles.append(tasks.after_response.enqueue(after_response, 1))
        raise HTTPException(status_code=409, detail="out of stock")

    async with serve(app) as client:
        response = await client.post("/orders")
        await ended(*handles)

    assert response.status_code == 409
    assert [handle.status for handle in handles] == [TaskStatus.DISPATCHED, TaskStatus.DISCARDED, TaskStatus.DISCARDED]
    assert after_route.sent == after_response.sent == []
    with pytest.raises(
        TaskNotFinishedError, match=r"^Job 'jobs\.route' has no queue handle: its dispatch is discarded\."
    ):
        _ = handles[1].result


@pytest.mark.anyio
async def test_a_definition_names_shields_and_times_out_its_dispatches() -> None:
    job = Job("receipt")
    handles: list[DispatchTask] = []
    app = FastAPI()
    add_tasks(app, config=TaskConfig(dispatch_timeout=2.5))

    @app.post("/orders")
    async def order(tasks: Tasks) -> None:
        handles.append(tasks.after_response.task(name="receipt", shield=True).enqueue(job, 7))
        handles.append(tasks.task(dispatch_timeout=0.5).enqueue(job, 8))
        handles.append(tasks.enqueue(job, 9))

    async with serve(app) as client:
        await client.post("/orders")
        await ended(*handles)

    named, quick, inherited = handles
    assert (named.name, named.config.shield, named.timeout) == ("receipt", True, 2.5)
    assert (quick.name, quick.timeout) == ("jobs.receipt", 0.5)
    assert inherited.timeout == 2.5
    assert re.fullmatch(
        r"<DispatchTask 'receipt' job_id='receipt-\d+' phase=after_response status=dispatched>", repr(named)
    )
    assert (named.job, named.backend, named.job_name) == (job, "fakeq", "jobs.receipt")


def test_the_default_dispatch_timeout_is_five_seconds() -> None:
    assert DEFAULT_DISPATCH_TIMEOUT == 5.0
    assert TaskConfig().merge(TaskConfig(dispatch_timeout=1.0)).dispatch_timeout == 1.0
    assert TaskConfig(dispatch_timeout=3.0).merge(TaskConfig(name="x")).dispatch_timeout == 3.0


@pytest.mark.parametrize("bad", [0, -1, True, "5"])
@pytest.mark.anyio
async def test_a_bad_dispatch_timeout_is_refused(bad: object) -> None:
    app = FastAPI()
    add_tasks(app)
    errors: list[str] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        with pytest.raises(
            ValueError, match=r"^dispatch_timeout must be a positive number of seconds or None, not "
        ) as info:
            tasks.task(dispatch_timeout=bad)  # type: ignore[arg-type]
        errors.append(str(info.value))

    async with serve(app) as client:
        assert (await client.get("/")).status_code == 200
    assert errors == [f"dispatch_timeout must be a positive number of seconds or None, not {bad!r}"]


# --- failures --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_broker_error_becomes_one_logged_dispatch_error_passed_to_on_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Not a connection error: the broker refused the message itself, so it is not retried.
    refused = ValueError("message refused: card 4111-1111")
    job = Job("charge", broker_error=refused)
    handled: list[tuple[Task[..., Any], Exception]] = []
    handles: list[DispatchTask] = []
    app = FastAPI()
    add_tasks(app)

    @app.post("/orders")
    async def order(tasks: Tasks) -> dict[str, str]:
        handles.append(tasks.after_response.task(on_error=lambda t, e: handled.append((t, e))).enqueue(job, 4111))
        return {"job": handles[0].job_id}

    with caplog.at_level(logging.ERROR, logger="fastapi_tasks"):
        async with serve(app) as client:
            response = await client.post("/orders")
            await ended(*handles)

    assert response.status_code == 200
    [handle] = handles
    assert handle.status is TaskStatus.FAILED
    exc = handle.exception
    assert isinstance(exc, DispatchError)
    assert str(exc) == (
        f"Could not dispatch 'jobs.charge' (job id {handle.job_id!r}, phase after_response) to fakeq: ValueError."
    )
    assert (exc.job_name, exc.job_id, exc.phase, exc.backend, exc.timed_out) == (
        "jobs.charge",
        handle.job_id,
        "after_response",
        "fakeq",
        False,
    )
    assert exc.__cause__ is refused
    assert "4111" not in str(exc)
    assert handled == [(handle, exc)]
    records = [r for r in caplog.records if r.name == "fastapi_tasks"]
    assert [r.getMessage() for r in records] == [f"Background task 'jobs.charge' failed: DispatchError: {exc}"]


@pytest.mark.anyio
async def test_a_broker_that_never_answers_is_retried_until_the_deadline_and_the_outcome_is_unknown() -> None:
    job = Job("stuck", silent=True)
    handles: list[DispatchTask] = []
    app = FastAPI()
    add_tasks(app)

    @app.post("/orders")
    async def order(tasks: Tasks) -> None:
        handles.append(tasks.task(dispatch_timeout=0.05, dispatch_deadline=0.2).enqueue(job, 1))

    async with serve(app) as client:
        assert (await client.post("/orders")).status_code == 200
        await ended(*handles)

    exc = handles[0].exception
    assert isinstance(exc, DispatchError)
    assert exc.timed_out  # the job may have reached the queue
    assert exc.__cause__ is None
    assert re.fullmatch(
        rf"Could not dispatch 'jobs.stuck' \(job id {re.escape(repr(handles[0].job_id))}, phase immediate\) to fakeq: "
        r"the broker could not be reached within the dispatch deadline of 0.2 s \(\d+ attempts?, the last (got no "
        r"answer within 0.05 s|attempt got no answer in the (\d+|less than 1) ms the deadline left it)\); outcome "
        r"unknown: an attempt that got no answer may have reached the queue.",
        str(exc),
    ), str(exc)


def test_a_dispatch_error_survives_pickling() -> None:
    exc = DispatchError("boom", job_name="j", job_id="1", phase="immediate", backend="taskiq", timed_out=True)
    copy = pickle.loads(pickle.dumps(exc))
    assert (str(copy), copy.job_name, copy.job_id, copy.phase, copy.backend, copy.timed_out) == (
        "boom",
        "j",
        "1",
        "immediate",
        "taskiq",
        True,
    )


def test_the_cause_chain_names_the_broker_error_types() -> None:
    from fastapi_tasks._dispatch_error import _cause_chain

    outer = RuntimeError("send failed")
    outer.__cause__ = ConnectionError("refused")
    assert _cause_chain(outer) == "RuntimeError caused by ConnectionError"


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_enqueueing_something_that_is_not_a_job_fails_at_the_call_site() -> None:
    messages: list[str] = []
    app = FastAPI()
    add_tasks(app)

    def plain(order_id: int) -> None: ...

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        for not_a_job in (plain, 42):
            with pytest.raises(TypeError) as info:
                tasks.after_response.enqueue(not_a_job, 1)  # type: ignore[arg-type]
            messages.append(str(info.value))

    async with serve(app) as client:
        assert (await client.get("/")).status_code == 200
    common = (
        "it is not a job of a supported queue "
        "(a taskiq task made with @broker.task, or a Celery task made with @app.task)."
    )
    assert messages == [
        f"Cannot enqueue {plain!r}: {common} To run a plain function in this process, use schedule() instead.",
        f"Cannot enqueue 42: {common} Pass the job itself and its arguments separately: enqueue(job, *args, **kwargs).",
    ]


def test_register_dispatcher_refuses_what_is_not_a_dispatcher() -> None:
    with pytest.raises(
        TypeError, match=r"^register_dispatcher\(\) needs a Dispatcher \(see fastapi_tasks\.Dispatcher\), not 1$"
    ):
        register_dispatcher(1)  # type: ignore[arg-type]


def test_adapters_are_found_by_the_job_type() -> None:
    job = Job("x")
    assert find_dispatcher(job) is QUEUE
    assert find_dispatcher(job) is QUEUE  # from the cache


# --- taskiq and trio ---------------------------------------------------------------------------

broker = InMemoryBroker()


@broker.task
async def send_receipt(order_id: int) -> str:
    return f"receipt {order_id}"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_enqueueing_to_taskiq_under_trio_fails_at_the_call_site(kind: str) -> None:
    app = FastAPI()
    add_tasks(app)
    messages: list[str] = []

    def enqueue(tasks: TasksScheduler) -> None:
        with pytest.raises(DispatchBackendError) as info:
            tasks.after_response.enqueue(send_receipt, 42)
        messages.append(str(info.value))

    if kind == "sync":

        @app.get("/")
        def sync_endpoint(tasks: Tasks) -> None:
            enqueue(tasks)

    else:

        @app.get("/")
        async def async_endpoint(tasks: Tasks) -> None:
            enqueue(tasks)

    async def main() -> None:
        async with serve(app) as client:
            assert (await client.get("/")).status_code == 200

    anyio.run(main, backend="trio")
    assert messages == [
        f"Cannot enqueue {send_receipt.task_name!r} to taskiq: taskiq dispatches only under asyncio, "
        "and this app runs on trio. Run the app on asyncio, or use a queue that supports trio "
        "(Celery jobs can be enqueued from any backend)."
    ]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_taskiq_adapter_sends_with_the_job_id_fixed_before_dispatch(anyio_backend: Backend) -> None:
    handles: list[DispatchTask] = []
    app = FastAPI()
    add_tasks(app)

    @app.post("/orders")
    async def order(tasks: Tasks) -> None:
        handles.append(tasks.after_response.enqueue(send_receipt, 42))

    await broker.startup()
    try:
        async with serve(app) as client:
            await client.post("/orders")
            await ended(*handles)
        [handle] = handles
        assert handle.status is TaskStatus.DISPATCHED
        assert handle.result.task_id == handle.job_id
        with anyio.fail_after(TIMEOUT):
            result = await handle.result.wait_result(timeout=TIMEOUT)
        assert result.return_value == "receipt 42"
    finally:
        await broker.shutdown()


def test_the_builtin_adapters_are_offered_only_once_their_library_was_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi_tasks.dispatchers._registry import _builtin_dispatchers

    assert [dispatcher.backend for dispatcher in _builtin_dispatchers()] == ["taskiq", "celery"]
    assert [repr(dispatcher) for dispatcher in _builtin_dispatchers()] == ["<TaskiqDispatcher>", "<CeleryDispatcher>"]
    monkeypatch.delitem(sys.modules, "taskiq")
    monkeypatch.delitem(sys.modules, "celery")
    assert _builtin_dispatchers() == []


def test_celery_dispatch_threads_are_reused_and_end_when_idle() -> None:
    from fastapi_tasks.dispatchers.celery import _DaemonWorkers

    workers = _DaemonWorkers(idle_timeout=0.01)
    ran: list[str] = []
    before = set(threading.enumerate())
    workers.submit(lambda: ran.append(threading.current_thread().name))
    assert workers.wait_idle(TIMEOUT)
    workers.submit(lambda: ran.append(threading.current_thread().name))
    assert workers.wait_idle(TIMEOUT)
    assert ran == ["fastapi-tasks celery dispatch"] * 2
    for thread in set(threading.enumerate()) - before:
        thread.join(TIMEOUT)  # ends once idle for idle_timeout
        assert not thread.is_alive()
