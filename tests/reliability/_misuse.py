"""Every misuse we could think of, with the exact error text each must produce.

`CALLS` are misuses made in Python code: `trigger()` must raise `error` with exactly `message`.
`SESSIONS` are misuses of the pytest plugin (marker, ini option, `app` fixture): a pytest run of
`source` (with `ini`) must end in one error whose report has the line `E   <error name>: <message>`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from fastapi_tasks import Task, Tasks, TasksScheduler, add_tasks
from fastapi_tasks.errors import (
    BatchClosedError,
    FastAPITasksAlreadyInstalledError,
    FastAPITasksError,
    FastAPITasksShutdownError,
    FastAPITasksUninitializedAppError,
    TaskNotFinishedError,
)
from fastapi_tasks_testing import RecordingScheduler

__all__ = ["CALLS", "SESSIONS", "Misuse", "SessionMisuse"]


@dataclass(frozen=True)
class Misuse:
    """One misuse in code. `case()` builds fresh objects and returns the trigger and the exact message."""

    id: str
    error: type[BaseException]
    case: Callable[[], tuple[Callable[[], object], str]]


@dataclass(frozen=True)
class SessionMisuse:
    """One misuse of the pytest plugin: the test file, the ini lines, and the error (`Type: message`) it must report."""

    id: str
    source: str
    line: str
    ini: str = ""


def send_email(to: str, *, subject: str = "") -> None:
    """A task function with a signature to get wrong."""


async def async_job() -> None:
    """A task function for cases where what matters is not the function."""


_NOT_CALLABLE = (
    ": it is not callable. Pass the function and its arguments separately: schedule(func, *args, **kwargs), "
    "not schedule(func(*args, **kwargs))."
)
_NO_ADD_TASKS = (
    "The Tasks dependency is used, but add_tasks(app) was not called on this app. "
    "Call add_tasks(app) right after creating it."
)
_NO_LIFESPAN = (
    "The Tasks dependency is used, but the app's lifespan is not running, so there is no task group. "
    "Run the lifespan: use `with TestClient(app) as client:` (not a bare TestClient(app)), "
    "or asgi_lifespan.LifespanManager(app) with httpx.AsyncClient. Under a server, the lifespan of an app "
    "mounted in another (app.mount(...)) never runs: call add_tasks() on the outermost app instead."
)


def _with_scheduler(action: Callable[[TasksScheduler], object]) -> Callable[[], object]:
    """Run `action` with a production scheduler of a finished task group (the misuse fails before starting)."""

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            scheduler = TasksScheduler(tg)
        action(scheduler)

    return lambda: anyio.run(main)


def _app_with_endpoint(*, tasks_installed: bool = True, endpoint_raises: bool = False) -> tuple[FastAPI, list[Any]]:
    app = FastAPI()
    if tasks_installed:
        add_tasks(app)
    kept: list[Any] = []

    @app.get("/")
    async def endpoint(tasks: Tasks) -> None:
        kept.append(tasks)
        if endpoint_raises:
            raise RuntimeError("the endpoint broke")

    return app, kept


async def _request(app: FastAPI, *, lifespan: bool = True) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=not lifespan)
    if lifespan:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                await client.get("/")
        return
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/")


def _request_without(*, tasks_installed: bool) -> Callable[[], object]:
    app, _ = _app_with_endpoint(tasks_installed=tasks_installed)
    return lambda: anyio.run(lambda: _request(app, lifespan=False))


def _after_the_request(
    action: Callable[[TasksScheduler], object], *, endpoint_raises: bool = False
) -> Callable[[], object]:
    """Serve one request (lifespan and all), then `action` on the scheduler that request was given."""
    app, kept = _app_with_endpoint(endpoint_raises=endpoint_raises)

    async def main() -> None:
        await _request(app)
        action(kept[0])

    return lambda: anyio.run(main)


def _add_tasks_twice() -> tuple[Callable[[], object], str]:
    app = FastAPI()
    add_tasks(app)
    return lambda: add_tasks(app), (
        f"add_tasks() was already called on {app!r}; call it once per app "
        "(a second call would stack a second task group and lifespan)."
    )


def _add_tasks_on_router() -> tuple[Callable[[], object], str]:
    router = FastAPI().router
    return lambda: add_tasks(router), f"add_tasks() needs a FastAPI app, not {router!r}"  # type: ignore[arg-type]


def _install_on_router() -> tuple[Callable[[], object], str]:
    router = FastAPI().router
    recorder = RecordingScheduler()
    return lambda: recorder.install(router), f"tasks_recorder.install() needs a FastAPI app, not {router!r}"  # type: ignore[arg-type]


def _install_twice() -> tuple[Callable[[], object], str]:
    app, recorder = FastAPI(), RecordingScheduler()
    line = sys._getframe().f_lineno + 1
    recorder.install(app)
    return lambda: recorder.install(FastAPI()), (
        f"The recorder is already installed, by tasks_recorder.install(app) at _misuse.py:{line}; "
        "call tasks_recorder.uninstall() before installing it on another app."
    )


def _spy_without_lifespan() -> tuple[Callable[[], object], str]:
    app, _ = _app_with_endpoint()
    RecordingScheduler(mode="spy").install(app)
    return lambda: anyio.run(lambda: _request(app, lifespan=False)), (
        "tasks_recorder in spy mode runs tasks on the app's real scheduler, so the lifespan must run: "
        "use `with TestClient(app) as client:` or asgi_lifespan.LifespanManager(app)."
    )


def _inside_a_loop(call: Callable[[RecordingScheduler], object]) -> Callable[[], object]:
    async def main() -> None:
        call(RecordingScheduler())

    return lambda: anyio.run(main)


def _rescheduling_for_ever() -> tuple[Callable[[], object], str]:
    recorder = RecordingScheduler()

    def poll() -> None:
        recorder.schedule(poll)

    recorder.schedule(poll)
    return recorder.run_pending_sync, (
        "run_pending() gave up after 1,000 passes: the tasks it runs keep scheduling more (still pending: "
        "'_rescheduling_for_ever.<locals>.poll'). Stand in for the task that reschedules itself with "
        "tasks_recorder.replace(task, fake)."
    )


def _numbers() -> Iterator[int]:
    yield 1


async def _async_numbers() -> AsyncIterator[int]:
    yield 1


_GENERATOR = (
    ": it is a generator function, and calling it would only create a generator without running its body. "
    "Schedule a function that returns (or an async function that awaits) instead, e.g. one that iterates over "
    "the generator."
)


def _fixed(trigger: Callable[[], object], message: str) -> Callable[[], tuple[Callable[[], object], str]]:
    return lambda: (trigger, message)


CALLS: list[Misuse] = [
    # --- production: scheduling -------------------------------------------------------------
    Misuse(
        "schedule a non-callable",
        TypeError,
        _fixed(_with_scheduler(lambda s: s.schedule(42)), f"Cannot schedule 42{_NOT_CALLABLE}"),  # type: ignore[call-overload]
    ),
    Misuse(
        "schedule a function's name",
        TypeError,
        _fixed(
            _with_scheduler(lambda s: s.after_route.schedule("send_email")),  # type: ignore[call-overload]
            f"Cannot schedule 'send_email'{_NOT_CALLABLE}",
        ),
    ),
    Misuse(
        "schedule None after the response",
        TypeError,
        _fixed(
            _with_scheduler(lambda s: s.after_response.task(name="x").schedule(None)),  # type: ignore[call-overload]
            f"Cannot schedule None{_NOT_CALLABLE}",
        ),
    ),
    Misuse(
        "schedule a generator function",
        TypeError,
        _fixed(
            _with_scheduler(lambda s: s.schedule(_numbers)),
            f"Cannot schedule {_numbers!r}{_GENERATOR}",
        ),
    ),
    Misuse(
        "schedule an async generator function after the response",
        TypeError,
        _fixed(
            _with_scheduler(lambda s: s.after_response.schedule(_async_numbers)),
            f"Cannot schedule {_async_numbers!r}{_GENERATOR}",
        ),
    ),
    Misuse(
        "a Task handle of a non-callable",
        TypeError,
        _fixed(lambda: Task(3.5), f"Cannot schedule 3.5{_NOT_CALLABLE}"),  # type: ignore[arg-type]
    ),
    Misuse(
        "task(name=) not a str",
        TypeError,
        _fixed(_with_scheduler(lambda s: s.task(name=1)), "name must be a str or None, not 1"),  # type: ignore[arg-type]
    ),
    Misuse(
        "task(on_error=) not callable",
        TypeError,
        _fixed(
            _with_scheduler(lambda s: s.after_route.task(on_error="log")),  # type: ignore[arg-type]
            "on_error must be a callable taking (task, exc), not 'log'",
        ),
    ),
    Misuse(
        "TasksScheduler() outside a request, without a task group",
        TypeError,
        _fixed(
            lambda: anyio.run(lambda: _call_async(TasksScheduler)),
            "TasksScheduler needs a task group: TasksScheduler(request.state.fastapi_tasks_tg)",
        ),
    ),
    Misuse(
        "a result read before the task ended",
        TaskNotFinishedError,
        _fixed(
            lambda: Task(async_job).result,
            "Task 'async_job' has no result: it is pending. Await task.wait() first, and check task.status or "
            "task.exception.",
        ),
    ),
    # --- production: wiring -----------------------------------------------------------------
    Misuse(
        "Tasks without add_tasks(app)",
        FastAPITasksUninitializedAppError,
        lambda: (_request_without(tasks_installed=False), _NO_ADD_TASKS),
    ),
    Misuse(
        "Tasks without the lifespan",
        FastAPITasksUninitializedAppError,
        lambda: (_request_without(tasks_installed=True), _NO_LIFESPAN),
    ),
    Misuse("add_tasks twice", FastAPITasksAlreadyInstalledError, _add_tasks_twice),
    Misuse("add_tasks on a router", TypeError, _add_tasks_on_router),
    Misuse(
        "shutdown_timeout negative",
        ValueError,
        _fixed(lambda: add_tasks(FastAPI(), shutdown_timeout=-1), "shutdown_timeout must be >= 0 seconds, not -1"),
    ),
    Misuse(
        "shutdown_timeout a string",
        TypeError,
        _fixed(
            lambda: add_tasks(FastAPI(), shutdown_timeout="5"),  # type: ignore[arg-type]
            "shutdown_timeout must be a number of seconds or None, not '5'",
        ),
    ),
    Misuse(
        "shutdown_timeout a bool",
        TypeError,
        _fixed(
            lambda: add_tasks(FastAPI(), shutdown_timeout=True),
            "shutdown_timeout must be a number of seconds or None, not True",
        ),
    ),
    Misuse(
        "add_tasks max_threads zero",
        ValueError,
        _fixed(lambda: add_tasks(FastAPI(), max_threads=0), "max_threads must be at least 1, not 0"),
    ),
    Misuse(
        "add_tasks max_threads a float",
        TypeError,
        _fixed(
            lambda: add_tasks(FastAPI(), max_threads=2.5),  # type: ignore[arg-type]
            "max_threads must be a whole number of threads, not 2.5",
        ),
    ),
    Misuse(
        "add_tasks config a dict",
        TypeError,
        _fixed(
            lambda: add_tasks(FastAPI(), config={"shield": True}),  # type: ignore[arg-type]
            "config must be a TaskConfig, not {'shield': True}",
        ),
    ),
    # --- production: after the fact ---------------------------------------------------------
    Misuse(
        "schedule after shutdown",
        FastAPITasksShutdownError,
        lambda: (
            _after_the_request(lambda s: s.schedule(async_job)),
            "Cannot start 'async_job': the app is shutting down and its tasks were cancelled.",
        ),
    ),
    Misuse(
        "add to an after_route batch that already ran",
        BatchClosedError,
        lambda: (
            _after_the_request(lambda s: s.after_route.schedule(async_job)),
            "Cannot add 'async_job' to the after_route batch: it was already started. "
            "Schedule it with tasks.schedule(...) to start it now.",
        ),
    ),
    Misuse(
        "add to an after_response batch that was discarded",
        BatchClosedError,
        lambda: (
            _after_the_request(lambda s: s.after_response.task(name="late").schedule(async_job), endpoint_raises=True),
            "Cannot add 'late' to the after_response batch: it was already discarded. "
            "Schedule it with tasks.schedule(...) to start it now.",
        ),
    ),
    Misuse(
        "start an after_route batch that already ran",
        BatchClosedError,
        lambda: (
            _after_the_request(lambda s: s.after_route.__start__(s)),
            "The after_route batch was already started: its tasks start once.",
        ),
    ),
    # --- testing toolkit --------------------------------------------------------------------
    Misuse(
        "recorder: a non-callable",
        TypeError,
        _fixed(lambda: RecordingScheduler().schedule(42), f"Cannot schedule 42{_NOT_CALLABLE}"),  # type: ignore[call-overload]
    ),
    Misuse(
        "recorder: an unknown mode",
        ValueError,
        _fixed(
            lambda: RecordingScheduler(mode="replay"),  # type: ignore[arg-type]
            "Unknown tasks_recorder mode 'replay'; use one of 'run', 'record', 'spy'.",
        ),
    ),
    Misuse(
        "recorder: config a dict",
        TypeError,
        _fixed(
            lambda: RecordingScheduler(config={}),  # type: ignore[arg-type]
            "config must be a TaskConfig, not {}",
        ),
    ),
    Misuse("recorder installed on a router, not an app", TypeError, _install_on_router),
    Misuse("recorder installed twice", FastAPITasksError, _install_twice),
    Misuse(
        "recorder on no app: its task group",
        FastAPITasksError,
        _fixed(lambda: RecordingScheduler().tg, "A RecordingScheduler used outside a request has no task group."),
    ),
    Misuse("recorder in spy mode without the lifespan", FastAPITasksUninitializedAppError, _spy_without_lifespan),
    Misuse(
        "run_pending_sync inside an event loop",
        RuntimeError,
        _fixed(
            _inside_a_loop(lambda r: r.run_pending_sync()),
            "run_pending_sync() was called inside an event loop; in an async test use `await run_pending()` instead.",
        ),
    ),
    Misuse("run_pending with a task that reschedules itself for ever", RuntimeError, _rescheduling_for_ever),
    Misuse(
        "shutdown_sync inside an event loop",
        RuntimeError,
        _fixed(
            _inside_a_loop(lambda r: r.shutdown_sync()),
            "shutdown_sync() was called inside an event loop; in an async test use `await shutdown()` instead.",
        ),
    ),
    Misuse(
        "recorder: fail() with a non-exception",
        TypeError,
        _fixed(
            lambda: RecordingScheduler().fail(send_email, 42),  # type: ignore[arg-type]
            "fail() needs an exception instance or class to raise, not 42",
        ),
    ),
    Misuse(
        "recorder: replace() with a non-callable",
        TypeError,
        _fixed(
            lambda: RecordingScheduler().replace(send_email, "fake"),  # type: ignore[arg-type]
            "replace() needs a callable to run instead, not 'fake'",
        ),
    ),
]


async def _call_async(func: Callable[[], object]) -> None:
    func()


_PLAIN_TEST = """
import pytest

{marker}
def test_it(tasks_recorder):
    pass
"""

SESSIONS: list[SessionMisuse] = [
    SessionMisuse(
        "marker: an unknown mode",
        _PLAIN_TEST.format(marker="@pytest.mark.tasks_recorder(mode='replay')"),
        "ValueError: Unknown tasks_recorder mode 'replay'; use one of 'run', 'record', 'spy'.",
    ),
    SessionMisuse(
        "marker: an unknown option",
        _PLAIN_TEST.format(marker="@pytest.mark.tasks_recorder(mode='record', retries=3)"),
        "TypeError: @pytest.mark.tasks_recorder got unknown option 'retries'; "
        "its options are mode, expect_failures, config, strict, wait_timeout.",
    ),
    SessionMisuse(
        "marker: a positional option",
        _PLAIN_TEST.format(marker="@pytest.mark.tasks_recorder('record')"),
        "TypeError: @pytest.mark.tasks_recorder takes keyword options only, not ('record',): "
        "write @pytest.mark.tasks_recorder(mode='record').",
    ),
    SessionMisuse(
        "app fixture: not an app",
        _PLAIN_TEST.format(marker="@pytest.fixture\ndef app():\n    return 'main:app'\n\n"),
        "TypeError: The `app` fixture is 'main:app', not a FastAPI app, and no FastAPI app was found inside it "
        "(through its `.app` attributes and the functions it wraps); tasks_recorder installs itself on a FastAPI "
        "app. Install it in the test with tasks_recorder.install(app), given the FastAPI app, or name the app with "
        'the ini option fastapi_tasks_app = "package.module:app".',
    ),
    SessionMisuse(
        "ini fastapi_tasks_app: no attribute",
        _PLAIN_TEST.format(marker=""),
        "pytest.UsageError: fastapi_tasks_app must be 'module:attribute', like 'myapp.main:app', not 'myapp'.",
        ini="fastapi_tasks_app = myapp",
    ),
    SessionMisuse(
        "ini fastapi_tasks_app: a missing attribute",
        _PLAIN_TEST.format(marker=""),
        "pytest.UsageError: fastapi_tasks_app = 'json:app': 'json' has no attribute 'app'.",
        ini="fastapi_tasks_app = json:app",
    ),
    SessionMisuse(
        "ini fastapi_tasks_app: not an app",
        _PLAIN_TEST.format(marker=""),
        "TypeError: fastapi_tasks_app = 'json:__name__' is 'json', not a FastAPI app, and no FastAPI app was found "
        "inside it (through its `.app` attributes and the functions it wraps); tasks_recorder installs itself on a "
        "FastAPI app. Install it in the test with tasks_recorder.install(app), given the FastAPI app, or name the "
        'app with the ini option fastapi_tasks_app = "package.module:app".',
        ini="fastapi_tasks_app = json:__name__",
    ),
]
