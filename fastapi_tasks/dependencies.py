"""`add_tasks(app)` and the `Tasks` dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ._context import CONFIG_KEY, RUNTIME_KEY, TG_KEY, current_scope
from .errors import FastAPITasksAlreadyInstalledError, FastAPITasksUninitializedAppError
from .tasks import TaskConfig, TasksScheduler, _Runtime

__all__ = ["Tasks", "add_tasks", "get_tasks_scheduler"]


class _RequestScopeMiddleware:
    """Makes the request being served known to the schedulers created while serving it."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        token = current_scope.set(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            current_scope.reset(token)


def add_tasks(app: FastAPI, *, config: TaskConfig | None = None, shutdown_timeout: float | None = None) -> None:
    """Give `app` background tasks: a task group for its lifespan and the wiring behind `Tasks`.

    Call it once, before the app starts serving.

    Parameters:
        app: the FastAPI application.
        config: the configuration every task inherits; per-task options are merged over it.
        shutdown_timeout: seconds that running tasks get to finish at shutdown before the
            unshielded ones are cancelled; `None` cancels them at once. Shielded tasks always finish.

    Raises:
        TypeError: `app` is not a FastAPI app, or an option has the wrong type.
        ValueError: `shutdown_timeout` is negative.
        FastAPITasksAlreadyInstalledError: `add_tasks` was already called on `app`.
    """
    if not isinstance(app, FastAPI):
        raise TypeError(f"add_tasks() needs a FastAPI app, not {app!r}")
    if config is not None and not isinstance(config, TaskConfig):
        raise TypeError(f"config must be a TaskConfig, not {config!r}")
    if shutdown_timeout is not None:
        if isinstance(shutdown_timeout, bool) or not isinstance(shutdown_timeout, int | float):
            raise TypeError(f"shutdown_timeout must be a number of seconds or None, not {shutdown_timeout!r}")
        if shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, not {shutdown_timeout!r}")
    if hasattr(app.state, CONFIG_KEY):
        raise FastAPITasksAlreadyInstalledError(
            f"add_tasks() was already called on {app!r}; call it once per app "
            "(a second call would stack a second task group and lifespan)."
        )
    config = config or TaskConfig()
    # Kept on the app so that the testing toolkit can apply the app-wide config without a lifespan.
    setattr(app.state, CONFIG_KEY, config)

    app.add_middleware(_RequestScopeMiddleware)
    app.router.lifespan_context = _with_tasks_lifespan(app.router.lifespan_context, config, shutdown_timeout)


def _with_tasks_lifespan(
    user_lifespan: Callable[[Any], AbstractAsyncContextManager[Any]],
    config: TaskConfig,
    shutdown_timeout: float | None,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        # The app's own lifespan stays outermost: our tasks are finished (or cancelled) before
        # the app tears down what they may use (connection pools, clients).
        async with user_lifespan(app) as user_state, anyio.create_task_group() as tg:
            runtime = _Runtime(tg, config, shutdown_timeout)
            try:
                yield {**(user_state or {}), TG_KEY: tg, RUNTIME_KEY: runtime}
            finally:
                await runtime.shutdown()

    return lifespan


async def get_tasks_scheduler() -> TasksScheduler:
    """The dependency behind `Tasks`: a scheduler bound to the current request.

    Raises:
        FastAPITasksUninitializedAppError: `add_tasks(app)` was not called, or the lifespan is not running.
    """
    scope = current_scope.get()
    if scope is None:
        raise FastAPITasksUninitializedAppError(
            "The Tasks dependency is used, but add_tasks(app) was not called on this app. "
            "Call add_tasks(app) right after creating it."
        )
    state = scope.get("state")
    runtime = None if state is None else state.get(RUNTIME_KEY)
    if runtime is None:
        raise FastAPITasksUninitializedAppError(
            "The Tasks dependency is used, but the app's lifespan is not running, so there is no task group. "
            "Run the lifespan: use `with TestClient(app) as client:` (not a bare TestClient(app)), "
            "or asgi_lifespan.LifespanManager(app) with httpx.AsyncClient."
        )
    return TasksScheduler(_runtime=runtime)


Tasks = Annotated[TasksScheduler, Depends(get_tasks_scheduler)]
"""Annotate an endpoint parameter with `Tasks` to receive the request's `TasksScheduler`."""
