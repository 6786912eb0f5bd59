"""A test suite as a user of fastapi-tasks 0.1.0 wrote it; it must keep passing unchanged.

Only the 0.1.0 API is used here, spelled the way 0.1.0's documentation spells it.
"""

import functools
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, HTTPException, Request, status
from fastapi.testclient import TestClient
from httpx import ASGITransport, AsyncClient

import fastapi_tasks
import fastapi_tasks.errors
from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks.errors import FastAPITasksError, FastAPITasksUninitializedAppError
from fastapi_tasks.tasks import Task, TaskConfig, TasksBatch, TasksScheduler
from fastapi_tasks.utils import always_async_call


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    manager = LifespanManager(app)
    async with manager, AsyncClient(base_url="http://testserver", transport=ASGITransport(app=manager.app)) as ac:
        yield ac


def test_smoke() -> None:
    app = FastAPI()
    add_tasks(app)

    immediate_test = threading.Event()
    after_route_test = threading.Event()
    after_response_test = threading.Event()

    def task(_event: threading.Event) -> None:
        _event.set()

    @app.get("/")
    def endpoint(tasks: Tasks) -> dict[Any, Any]:
        tasks.schedule(task, immediate_test)
        tasks.after_route.schedule(task, after_route_test)
        tasks.after_response.schedule(task, after_response_test)
        return {}

    with TestClient(app) as client:
        response = client.get("/")

        assert response.status_code == status.HTTP_200_OK
        assert response.json() == {}

        assert immediate_test.wait(3)
        assert after_route_test.wait(3)
        assert after_response_test.wait(3)


@pytest.mark.anyio
async def test_immediate_task_is_started() -> None:
    app = FastAPI()
    add_tasks(app)
    task_ran = anyio.Event()

    async def immediate_task() -> None:
        task_ran.set()

    @app.get("/")
    async def route(tasks: Tasks) -> dict[str, bool]:
        task = tasks.schedule(immediate_task)
        with anyio.fail_after(3):
            await task_ran.wait()
        return {"started": task.started.is_set()}

    async with app_client(app) as client:
        response = await client.get("/")

    assert response.status_code == status.HTTP_200_OK
    assert response.json() == {"started": True}


@pytest.mark.anyio
async def test_tasks_order() -> None:
    app = FastAPI()
    add_tasks(app)
    execution_order: list[str] = []
    a_done = anyio.Event()
    b_done = anyio.Event()
    c_done = anyio.Event()

    async def task_a() -> None:
        execution_order.append("A")
        a_done.set()

    async def task_b() -> None:
        execution_order.append("B")
        b_done.set()

    async def task_c() -> None:
        execution_order.append("C")
        c_done.set()

    @app.get("/")
    async def route(tasks: Tasks) -> dict[str, str]:
        tasks.schedule(task_a)
        tasks.after_route.schedule(task_b)
        tasks.after_response.schedule(task_c)
        with anyio.fail_after(3):
            await a_done.wait()
        return {}

    async with app_client(app) as client:
        response = await client.get("/")
        assert response.status_code == status.HTTP_200_OK

        with anyio.fail_after(3):
            await b_done.wait()
            await c_done.wait()

    assert execution_order[0] == "A"
    assert sorted(execution_order) == ["A", "B", "C"]


@pytest.mark.anyio
async def test_on_error() -> None:
    app = FastAPI()
    add_tasks(app)
    error_triggered = anyio.Event()
    seen: list[Any] = []

    async def error_handler(*args: Any) -> None:
        seen.extend(args)
        error_triggered.set()

    async def faulty_task() -> None:
        raise ValueError

    @app.get("/")
    async def route(tasks: Tasks) -> dict[str, str]:
        tasks.task(on_error=error_handler).schedule(faulty_task)
        return {}

    async with app_client(app) as client:
        response = await client.get("/")
        assert response.status_code == status.HTTP_200_OK

        with anyio.fail_after(3):
            await error_triggered.wait()

    task, exc = seen
    assert isinstance(task, Task)
    assert isinstance(exc, ValueError)


def test_merge_empty_configs() -> None:
    merged = TaskConfig().merge(TaskConfig())

    assert merged.name is None
    assert merged.shield is None
    assert merged.on_error is None
    assert not merged.shielded


def test_merge_override() -> None:
    async def handler1(*_: Any) -> None:
        pass

    async def handler2(*_: Any) -> None:
        pass

    merged = TaskConfig(name="task1", shield=True, on_error=handler1).merge(TaskConfig(shield=False, on_error=handler2))

    assert merged.name == "task1"
    assert merged.shield is False
    assert merged.on_error is handler2
    assert not merged.shielded


def test_merge_does_not_change_the_original() -> None:
    config1 = TaskConfig(name="task1", shield=True)
    merged = config1.merge(TaskConfig(name="task2"))

    assert config1.name == "task1"
    assert merged.name == "task2"
    assert merged.shielded


@pytest.mark.anyio
async def test_global_config_merged_with_task_config() -> None:
    app = FastAPI()
    error_triggered = anyio.Event()

    async def global_error_handler(*_: Any) -> None:
        error_triggered.set()

    add_tasks(app, config=TaskConfig(name="global", shield=False, on_error=global_error_handler))
    scheduled: list[Task[..., Any]] = []

    async def faulty_task() -> None:
        raise ValueError

    @app.get("/")
    async def route(tasks: Tasks) -> dict[str, str]:
        scheduled.append(tasks.task(name="custom", shield=True).schedule(faulty_task))
        scheduled.append(tasks.after_response.schedule(faulty_task))
        return {}

    async with app_client(app) as client:
        response = await client.get("/")
        assert response.status_code == status.HTTP_200_OK

        with anyio.fail_after(3):
            await error_triggered.wait()

    custom, inherited = scheduled
    assert custom.config.name == "custom"
    assert custom.config.shielded
    assert custom.config.on_error is global_error_handler
    assert inherited.config.name == "global"
    assert not inherited.config.shielded


@pytest.mark.anyio
async def test_scheduler_from_request_state() -> None:
    app = FastAPI()
    add_tasks(app)
    task_done = anyio.Event()
    another_task_done = anyio.Event()

    async def my_task() -> None:
        task_done.set()

    async def another_task() -> None:
        another_task_done.set()

    @app.post("/advanced")
    async def advanced_endpoint(request: Request) -> dict[str, str]:
        tg = request.state.fastapi_tasks_tg
        scheduler = TasksScheduler(tg)
        scheduler.schedule(my_task)
        scheduler.after_response.schedule(another_task)
        return {"status": "ok"}

    async with app_client(app) as client:
        response = await client.post("/advanced")
        assert response.json() == {"status": "ok"}

        with anyio.fail_after(3):
            await task_done.wait()
            await another_task_done.wait()


@pytest.mark.anyio
async def test_task_started_by_hand() -> None:
    app = FastAPI()
    add_tasks(app)
    task_done = anyio.Event()

    async def my_task(value: int, *, key: str) -> None:
        assert (value, key) == (1, "a")
        task_done.set()

    @app.get("/")
    async def route(tasks: Tasks) -> dict[str, bool]:
        task = Task(func=my_task, args=(1,), kwargs={"key": "a"})
        started_before = task.started.is_set()
        task.__start__(tasks)
        assert isinstance(tasks.after_route, TasksBatch)
        assert isinstance(tasks.after_response, TasksBatch)
        return {"started_before": started_before}

    async with app_client(app) as client:
        response = await client.get("/")
        assert response.json() == {"started_before": False}

        with anyio.fail_after(3):
            await task_done.wait()


@pytest.mark.anyio
async def test_uninitialized_app() -> None:
    app = FastAPI()

    @app.get("/")
    async def route(tasks: Tasks) -> dict[str, str]:
        return {}  # pragma: no cover

    async with app_client(app) as client:
        with pytest.raises(FastAPITasksUninitializedAppError) as exc_info:
            await client.get("/")

    assert isinstance(exc_info.value, FastAPITasksError)
    assert "add_tasks(app)" in str(exc_info.value)


# --- what 0.1.0's API reference documents besides the above -------------------------------------


async def add_one(x: int) -> int:
    return x + 1


def add_two(x: int) -> int:
    return x + 2


@pytest.mark.anyio
# Not named `func`: anyio's pytest plugin before 4.1 passes the test function on as `func` too.
@pytest.mark.parametrize(("function", "expected"), [(add_one, 2), (add_two, 3)], ids=["async", "sync"])
async def test_always_async_call(function: Callable[[int], Any], expected: int) -> None:
    assert await always_async_call(function, 1) == expected


@pytest.mark.anyio
async def test_always_async_call_runs_a_sync_function_in_a_worker_thread_and_an_async_one_on_the_loop() -> None:
    loop_thread = threading.get_ident()

    def sync_thread() -> int:
        return threading.get_ident()

    async def async_thread() -> int:
        return threading.get_ident()

    assert await always_async_call(sync_thread) != loop_thread
    assert await always_async_call(async_thread) == loop_thread


@pytest.mark.anyio
async def test_always_async_call_passes_arguments_and_exceptions_through() -> None:
    def describe(func: str, /, *values: int, sep: str = ",") -> str:
        # `func` is positional-only in always_async_call, so it reaches the callable as a keyword too.
        return func + ":" + sep.join(map(str, values))

    async def fail(message: str) -> None:
        raise ValueError(message)

    def sync_fail(message: str) -> None:
        raise KeyError(message)

    assert await always_async_call(describe, "f", 1, 2, sep=";") == "f:1;2"
    assert await always_async_call(functools.partial(add_one, 41)) == 42
    assert await always_async_call(lambda **kwargs: sorted(kwargs), func=1, args=2) == ["args", "func"]
    with pytest.raises(ValueError, match=r"^async boom$"):
        await always_async_call(fail, "async boom")
    with pytest.raises(KeyError, match=r"^'sync boom'$"):
        await always_async_call(sync_fail, "sync boom")


def test_the_errors_are_importable_from_the_package_root() -> None:
    from fastapi_tasks import FastAPITasksError as RootError
    from fastapi_tasks import FastAPITasksUninitializedAppError as RootUninitializedError

    assert RootError is FastAPITasksError is fastapi_tasks.errors.FastAPITasksError
    assert RootUninitializedError is FastAPITasksUninitializedAppError
    assert issubclass(RootUninitializedError, RootError)


def test_the_complete_setup_example() -> None:
    # 0.1.0's "Complete Setup Example": a global on_error, the root import of FastAPITasksError.
    failures: list[str] = []
    handled = threading.Event()

    async def global_error_handler(task: fastapi_tasks.Task[..., Any], error: Exception) -> None:
        failures.append(f"{task.config.name}: {error}")
        handled.set()

    app = FastAPI()
    add_tasks(app, config=fastapi_tasks.TaskConfig(shield=False, on_error=global_error_handler))

    async def my_background_task(data: str) -> None:
        if data == "bad":
            raise ValueError(f"cannot process {data!r}")

    @app.post("/process")
    async def process_data(data: str, tasks: fastapi_tasks.Tasks) -> dict[str, str]:
        try:
            tasks.task(name="process").schedule(my_background_task, data)
            return {"status": "processing", "data": data}
        except fastapi_tasks.FastAPITasksError as e:
            raise HTTPException(status_code=500, detail=str(e)) from e

    with TestClient(app) as client:
        assert client.post("/process", params={"data": "good"}).json() == {"status": "processing", "data": "good"}
        assert client.post("/process", params={"data": "bad"}).status_code == status.HTTP_200_OK
        assert handled.wait(3)

    assert failures == ["process: cannot process 'bad'"]


def test_the_uninitialized_app_error_caught_by_its_root_import() -> None:
    app = FastAPI()  # add_tasks(app) forgotten

    @app.post("/task")
    async def endpoint(tasks: Tasks) -> dict[str, str]:
        return {"status": "ok"}

    with TestClient(app) as client, pytest.raises(fastapi_tasks.FastAPITasksUninitializedAppError) as exc_info:
        client.post("/task")

    assert isinstance(exc_info.value, fastapi_tasks.FastAPITasksError)
