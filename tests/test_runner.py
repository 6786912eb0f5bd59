"""Running one task: loop or worker thread, failure logging, `on_error` and its containment."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from fastapi_tasks import Task, TaskConfig, Tasks, TaskStatus, add_tasks

Backend = Literal["asyncio", "trio"]
Kind = Literal["sync", "async"]

TIMEOUT = 10.0
SECRET = "hunter2-correct-horse-battery-staple"


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield a client for it; leaving the block shuts the app down."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def wait_for(task: Task[..., Any]) -> None:
    with anyio.fail_after(TIMEOUT):
        await task.wait()


def records_of(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "fastapi_tasks" and record.levelno == level]


def log_in(password: str, *, token: str) -> None:
    raise PermissionError("login refused")


async def async_log_in(password: str, *, token: str) -> None:
    raise PermissionError("login refused")


# --- a task that raises -------------------------------------------------------------------------


@pytest.mark.anyio
# Not named `func`: anyio's pytest plugin before 4.1 passes the test function on as `func` too.
@pytest.mark.parametrize("function", [log_in, async_log_in], ids=["sync", "async"])
async def test_a_failed_task_is_logged_by_name_without_its_arguments(
    caplog: pytest.LogCaptureFixture, function: Callable[..., Any]
) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> str:
        handles.append(tasks.task(name="login").schedule(function, SECRET, token=SECRET))
        return "ok"

    async with serve(app) as client:
        assert (await client.get("/")).json() == "ok"
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    [record] = records_of(caplog, logging.ERROR)
    assert record.getMessage() == "Background task 'login' failed: PermissionError: login refused"
    assert record.exc_info is not None
    assert record.exc_info[1] is handles[0].exception
    assert isinstance(handles[0].exception, PermissionError)
    assert SECRET not in record.getMessage()
    assert SECRET not in caplog.text  # the formatted traceback included
    assert SECRET not in repr(handles[0])


@pytest.mark.anyio
async def test_an_exception_without_a_message_is_logged_by_its_type(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    async def fail() -> None:
        raise KeyboardInterruptLike

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.task(name="bare").schedule(fail))

    async with serve(app) as client:
        await client.get("/")
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert [record.getMessage() for record in records_of(caplog, logging.ERROR)] == [
        "Background task 'bare' failed: KeyboardInterruptLike"
    ]


class KeyboardInterruptLike(Exception):
    """An exception type raised without a message."""


# --- on_error -----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("handler_kind", ["sync", "async"])
async def test_on_error_receives_the_task_and_the_exception(
    caplog: pytest.LogCaptureFixture, handler_kind: Kind
) -> None:
    app = FastAPI()
    add_tasks(app)
    calls: list[tuple[Task[..., Any], Exception, int]] = []
    handles: list[Task[..., Any]] = []
    error = ValueError("bad value")

    def sync_handler(task: Task[..., Any], exc: Exception) -> None:
        calls.append((task, exc, threading.get_ident()))

    async def async_handler(task: Task[..., Any], exc: Exception) -> None:
        calls.append((task, exc, threading.get_ident()))

    def fail() -> None:
        raise error

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handler = sync_handler if handler_kind == "sync" else async_handler
        handles.append(tasks.after_route.task(name="flaky", on_error=handler).schedule(fail))

    async with serve(app) as client:
        await client.get("/")
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()
        # The handle only reports the end once the handler has returned.
        assert len(calls) == 1

    [(task, exc, thread)] = calls
    assert task is handles[0]
    assert exc is error
    assert task.status is TaskStatus.FAILED
    assert task.exception is error
    # Sync handlers run in a worker thread, async ones on the event loop.
    assert (thread == threading.get_ident()) is (handler_kind == "async")
    # The failure is logged even though a handler took it.
    assert [record.getMessage() for record in records_of(caplog, logging.ERROR)] == [
        "Background task 'flaky' failed: ValueError: bad value"
    ]


@pytest.mark.anyio
async def test_the_app_wide_on_error_handles_every_phase() -> None:
    caught: list[tuple[str, str]] = []

    async def on_error(task: Task[..., Any], exc: Exception) -> None:
        caught.append((task.phase.value, str(exc)))

    app = FastAPI()
    add_tasks(app, config=TaskConfig(on_error=on_error))
    handles: list[Task[..., Any]] = []

    def fail(message: str) -> None:
        raise RuntimeError(message)

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.schedule(fail, "now"))
        handles.append(tasks.after_route.schedule(fail, "after route"))
        handles.append(tasks.after_response.schedule(fail, "after response"))

    async with serve(app) as client:
        await client.get("/")
        with anyio.fail_after(TIMEOUT):
            for handle in handles:
                await handle.wait()

    assert sorted(caught) == [
        ("after_response", "after response"),
        ("after_route", "after route"),
        ("immediate", "now"),
    ]


@pytest.mark.anyio
async def test_a_per_task_on_error_replaces_the_app_wide_one() -> None:
    caught: list[str] = []

    def app_handler(task: Task[..., Any], exc: Exception) -> None:
        caught.append("app")

    def task_handler(task: Task[..., Any], exc: Exception) -> None:
        caught.append("task")

    app = FastAPI()
    add_tasks(app, config=TaskConfig(on_error=app_handler))
    handles: list[Task[..., Any]] = []

    def fail() -> None:
        raise RuntimeError("boom")

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.task(on_error=task_handler).schedule(fail))

    async with serve(app) as client:
        await client.get("/")
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert caught == ["task"]


@pytest.mark.parametrize("handler_kind", ["sync", "async"])
def test_an_on_error_handler_that_raises_is_logged_and_contained(
    anyio_backend: Backend, caplog: pytest.LogCaptureFixture, handler_kind: Kind
) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: dict[str, Task[..., Any]] = {}
    neighbour_may_finish = threading.Event()

    def broken_handler(task: Task[..., Any], exc: Exception) -> None:
        raise RuntimeError("the handler broke too")

    async def async_broken_handler(task: Task[..., Any], exc: Exception) -> None:
        raise RuntimeError("the handler broke too")

    def fail() -> None:
        raise ValueError("the task broke")

    def neighbour() -> str:
        # Still running while the failing task and its handler fail.
        assert neighbour_may_finish.wait(TIMEOUT)
        return "unaffected"

    def later() -> str:
        return "still scheduled"

    @app.get("/first")
    def first(tasks: Tasks) -> str:
        handles["neighbour"] = tasks.schedule(neighbour)
        handler = broken_handler if handler_kind == "sync" else async_broken_handler
        handles["failing"] = tasks.after_response.task(name="flaky", on_error=handler).schedule(fail)
        return "first"

    @app.get("/second")
    async def second(tasks: Tasks) -> str:
        handles["later"] = tasks.after_route.schedule(later)
        return "second"

    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/first").json() == "first"
        assert client.portal is not None
        client.portal.call(wait_for, handles["failing"])
        assert handles["neighbour"].status is TaskStatus.RUNNING

        neighbour_may_finish.set()
        client.portal.call(wait_for, handles["neighbour"])
        assert client.get("/second").json() == "second"
        client.portal.call(wait_for, handles["later"])

    assert handles["failing"].status is TaskStatus.FAILED
    assert isinstance(handles["failing"].exception, ValueError)
    assert handles["neighbour"].result == "unaffected"
    assert handles["later"].result == "still scheduled"
    handler_name = "test_an_on_error_handler_that_raises_is_logged_and_contained.<locals>." + (
        "broken_handler" if handler_kind == "sync" else "async_broken_handler"
    )
    errors = records_of(caplog, logging.ERROR)
    assert [record.getMessage() for record in errors] == [
        "Background task 'flaky' failed: ValueError: the task broke",
        f"The on_error handler {handler_name} of background task 'flaky' raised: RuntimeError: the handler broke too",
    ]
    assert errors[1].exc_info is not None
    assert isinstance(errors[1].exc_info[1], RuntimeError)


# --- what counts as sync or async ---------------------------------------------------------------


async def add(a: int, b: int) -> int:
    return a + b


class AsyncCallable:
    async def __call__(self, value: int) -> int:
        return value * 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("function", "args", "name", "result"),
    [
        (functools.partial(add, 1), (2,), "add", 3),
        (functools.partial(functools.partial(add, 1), 2), (), "add", 3),
        (AsyncCallable(), (21,), "AsyncCallable", 42),
        (lambda: add(2, 2), (), "<lambda>", 4),
    ],
    ids=["partial", "nested-partial", "async-__call__", "sync-returning-awaitable"],
)
async def test_callables_are_awaited_and_named_sensibly(
    function: Callable[..., Awaitable[int]], args: tuple[int, ...], name: str, result: int
) -> None:
    app = FastAPI()
    add_tasks(app)
    handles: list[Task[..., Any]] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        handles.append(tasks.schedule(function, *args))

    async with serve(app) as client:
        await client.get("/")
        with anyio.fail_after(TIMEOUT):
            await handles[0].wait()

    assert handles[0].name.rpartition(".")[2] == name
    assert handles[0].result == result
