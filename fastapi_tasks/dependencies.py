"""`add_tasks(app)` and the `Tasks` dependency."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from importlib.metadata import version
from typing import TYPE_CHECKING, Annotated, NoReturn

import anyio
from fastapi import Depends, FastAPI
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._compat import HANDLER_FRAME_KEY, LEGACY_STACKS, NATIVE_TASKS, REQUEST_STACK_KEY, check_fastapi
from ._context import CONFIG_KEY, NEW_RUNTIME_KEY, RUNTIME_KEY, TG_KEY, Serving, serving
from ._runtime import DEFAULT_MAX_THREADS, Runtime
from .config import TaskConfig
from .errors import FastAPITasksAlreadyInstalledError, FastAPITasksError, FastAPITasksUninitializedAppError
from .scheduler import TasksScheduler

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["Tasks", "add_tasks", "get_tasks_scheduler"]


class _TasksMiddleware:
    """Runs the app's tasks: a task group for the lifespan, ended before any lifespan of the app tears down.

    It also makes the request being served known to the schedulers created directly while serving it
    (`TasksScheduler(request.state.fastapi_tasks_tg)`).
    """

    __slots__ = ("app", "new_runtime")

    def __init__(self, app: ASGIApp, *, new_runtime: Callable[[TaskGroup], Runtime]) -> None:
        self.app = app
        # How add_tasks builds the app's runtime (the testing toolkit builds one the same way without a lifespan).
        self.new_runtime = new_runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        holder = Serving(scope, self.new_runtime)
        token = serving.set(holder)
        try:
            await self._serve(scope, receive, send)
        finally:
            holder.scope = None  # the request's tasks keep this context, never the request's scope
            serving.reset(token)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # At the ASGI level, outside every lifespan the app composed (its own, and those of routers
        # included after add_tasks): when the server asks for shutdown, the tasks are ended first, and
        # only then is the request passed on to the app's lifespans, which close what tasks may use.
        state = scope.get("state")
        if state is None:
            await _startup_failed(
                receive,
                send,
                RuntimeError(
                    "add_tasks() needs an ASGI server that supports lifespan state (the scope has no 'state'): "
                    "upgrade the server (uvicorn, hypercorn and Starlette's TestClient support it)."
                ),
            )
        async with anyio.create_task_group() as tg:
            try:
                runtime = self.new_runtime(tg)
            except FastAPITasksError as exc:  # pragma: no cover - eager_start on trio: Python 3.12+
                await _startup_failed(receive, send, exc)
            state[TG_KEY] = tg
            state[RUNTIME_KEY] = runtime

            async def receive_after_tasks_ended() -> Message:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    await runtime.shutdown()
                return message

            try:
                await self.app(scope, receive_after_tasks_ended, send)
            finally:
                # The app's lifespan failed, or the server cancelled it without asking for shutdown.
                with anyio.CancelScope(shield=True):
                    await runtime.shutdown()


class _LegacyTasksMiddleware(_TasksMiddleware):  # pragma: no cover - FastAPI < 0.118
    """`_TasksMiddleware` for FastAPI before 0.118, which closes no stack once the response was sent.

    It opens that stack itself, around the app (see `_compat.py`), where `TasksScheduler` finds it.
    """

    __slots__ = ()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with AsyncExitStack() as stack:
                scope[REQUEST_STACK_KEY] = stack
                await self.app(scope, receive, send)
        finally:
            scope.pop(HANDLER_FRAME_KEY, None)  # the request handler's frame, which holds the scope


async def _startup_failed(receive: Receive, send: Send, exc: BaseException) -> NoReturn:
    # Told to the server as the lifespan protocol asks: an app that raises before its first receive()
    # is taken for one without lifespan support, and served without its lifespan (and its tasks).
    message = await receive()
    if message["type"] == "lifespan.startup":
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
    raise exc


def add_tasks(
    app: FastAPI,
    *,
    config: TaskConfig | None = None,
    shutdown_timeout: float | None = None,
    max_threads: int = DEFAULT_MAX_THREADS,
    eager_start: bool = False,
    max_pending: int | None = None,
    log_exception_messages: bool = True,
) -> None:
    """Give `app` background tasks: a task group for its lifespan and the wiring behind `Tasks`.

    Call it once, before the app starts serving.

    Parameters:
        app: the FastAPI application.
        config: the configuration every task inherits; per-task options are merged over it.
        shutdown_timeout: seconds that running tasks get to finish at shutdown before the
            unshielded ones are cancelled; `None` cancels them at once. Shielded tasks always finish.
        max_threads: how many worker threads sync tasks and sync `on_error` handlers may use at once
            (40 by default). They are the tasks' own: FastAPI's sync endpoints and dependencies keep
            anyio's default threads. A sync task waiting for a thread is still `pending`.
        eager_start: Python 3.12+ on asyncio only. When true, an async task starts inside the call
            that starts it (`schedule()`, or the end of its phase) and runs there up to its first
            `await` that suspends, instead of at the event loop's next turn. That saves a trip
            through the loop per task, but the caller waits for that first stretch of every task.
        max_pending: at most this many tasks pending or running at once; past it, `schedule()` (and
            `enqueue()`) raises `BacklogFullError` at the call site, which an app answers with 503.
            `None` (the default) sets no bound: fire-and-forget work is never refused unless the app
            says how much backlog it can hold, which only it knows (see docs/faq.md).
        log_exception_messages: when false, failure log lines name the exception's type and where
            it was raised, without its message or traceback (which may quote secrets).

    Raises:
        TypeError: `app` is not a FastAPI app, or an option has the wrong type.
        ValueError: `shutdown_timeout` is negative, `max_threads` or `max_pending` below 1.
        FastAPITasksError: `eager_start` on a Python older than 3.12 or an anyio older than 4.14 (and, once
            the app starts, on trio).
        FastAPITasksAlreadyInstalledError: `add_tasks` was already called on `app`.
        FastAPITasksError: the installed FastAPI is 0.118 to 0.120, which fastapi-tasks does not support
            (it closes nothing when the endpoint returns: `after_route` cannot work).
    """
    if not isinstance(app, FastAPI):
        raise TypeError(f"add_tasks() needs a FastAPI app, not {app!r}")
    check_fastapi()
    if config is not None and not isinstance(config, TaskConfig):
        raise TypeError(f"config must be a TaskConfig, not {config!r}")
    if shutdown_timeout is not None:
        if isinstance(shutdown_timeout, bool) or not isinstance(shutdown_timeout, int | float):
            raise TypeError(f"shutdown_timeout must be a number of seconds or None, not {shutdown_timeout!r}")
        if shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, not {shutdown_timeout!r}")
    if isinstance(max_threads, bool) or not isinstance(max_threads, int):
        raise TypeError(f"max_threads must be a whole number of threads, not {max_threads!r}")
    if max_threads < 1:
        raise ValueError(f"max_threads must be at least 1, not {max_threads!r}")
    if not isinstance(eager_start, bool):
        raise TypeError(f"eager_start must be True or False, not {eager_start!r}")
    if max_pending is not None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int):
            raise TypeError(f"max_pending must be a whole number of tasks or None, not {max_pending!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending!r}")
    if not isinstance(log_exception_messages, bool):
        raise TypeError(f"log_exception_messages must be True or False, not {log_exception_messages!r}")
    if eager_start and sys.version_info < (3, 12):
        raise FastAPITasksError(
            "add_tasks(app, eager_start=True) needs Python 3.12 or later, where asyncio can start a task eagerly; "
            f"this is Python {sys.version_info.major}.{sys.version_info.minor}. Leave eager_start off."
        )
    if eager_start and not NATIVE_TASKS:  # pragma: no cover - anyio < 4.14
        raise FastAPITasksError(
            "add_tasks(app, eager_start=True) needs anyio 4.14 or later, whose cancel scopes let the app's runtime "
            f"start its tasks on asyncio's own; this is anyio {version('anyio')}. Upgrade anyio, or leave it off."
        )
    if hasattr(app.state, CONFIG_KEY):
        raise FastAPITasksAlreadyInstalledError(
            f"add_tasks() was already called on {app!r}; call it once per app "
            "(a second call would stack a second task group and lifespan)."
        )
    config = config or TaskConfig()
    # Kept on the app so that the testing toolkit can apply the app-wide config without a lifespan.
    setattr(app.state, CONFIG_KEY, config)
    new_runtime = functools.partial(
        Runtime,
        config=config,
        shutdown_timeout=shutdown_timeout,
        max_threads=max_threads,
        native=True,
        eager_start=eager_start,
        max_pending=max_pending,
        log_exception_messages=log_exception_messages,
    )
    setattr(app.state, NEW_RUNTIME_KEY, new_runtime)
    app.add_middleware(_LegacyTasksMiddleware if LEGACY_STACKS else _TasksMiddleware, new_runtime=new_runtime)


def resolve_runtime(scope: Scope) -> Runtime:
    """The app-wide runtime serving the request of `scope`.

    Raises:
        FastAPITasksUninitializedAppError: `add_tasks(app)` was not called, or the lifespan is not running.
    """
    state = scope.get("state")
    runtime = None if state is None else state.get(RUNTIME_KEY)
    if runtime is not None:
        return runtime  # type: ignore[no-any-return]
    if not tasks_added(scope):
        raise FastAPITasksUninitializedAppError(
            "The Tasks dependency is used, but add_tasks(app) was not called on this app. "
            "Call add_tasks(app) right after creating it."
        )
    raise FastAPITasksUninitializedAppError(
        "The Tasks dependency is used, but the app's lifespan is not running, so there is no task group. "
        "Run the lifespan: use `with TestClient(app) as client:` (not a bare TestClient(app)), "
        "or asgi_lifespan.LifespanManager(app) with httpx.AsyncClient. Under a server, the lifespan of an app "
        "mounted in another (app.mount(...)) never runs: call add_tasks() on the outermost app instead."
    )


def tasks_added(scope: Scope) -> bool:
    """Whether `add_tasks` was called on the app serving `scope` (or on an app it is mounted in)."""
    return serving.get() is not None or hasattr(getattr(scope.get("app"), "state", None), CONFIG_KEY)


async def get_tasks_scheduler(connection: HTTPConnection) -> TasksScheduler:
    """The dependency behind `Tasks`: a scheduler bound to the current request.

    It binds to the scope FastAPI serves the endpoint with, which a middleware may have copied.

    Raises:
        FastAPITasksUninitializedAppError: `add_tasks(app)` was not called, or the lifespan is not running.
    """
    scope = connection.scope
    if resolution_watchers:
        for watch in resolution_watchers:
            watch(scope)
    return TasksScheduler(_runtime=resolve_runtime(scope), _scope=scope)


resolution_watchers: list[Callable[[Scope], None]] = []
"""Called with the scope of each request for which this (not an override) resolves `Tasks`.

The testing toolkit's recorder watches here for an app on which its override was meant to be.
"""


Tasks = Annotated[TasksScheduler, Depends(get_tasks_scheduler)]
"""Annotate an endpoint parameter with `Tasks` to receive the request's `TasksScheduler`."""
