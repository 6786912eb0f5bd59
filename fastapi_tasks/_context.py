"""The request being served, as the `add_tasks` middleware sees it, and the lifespan state keys."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["CONFIG_KEY", "NEW_RUNTIME_KEY", "RUNTIME_KEY", "TG_KEY", "Serving", "serving"]

TG_KEY = "fastapi_tasks_tg"
"""Lifespan state key of the task group: `request.state.fastapi_tasks_tg`."""
CONFIG_KEY = "fastapi_tasks_config"
"""`app.state` key of the app-wide `TaskConfig` given to `add_tasks`."""
RUNTIME_KEY = "fastapi_tasks_runtime"
"""Lifespan state key of the app-wide runtime (config, shutdown bookkeeping)."""
NEW_RUNTIME_KEY = "fastapi_tasks_new_runtime"
"""`app.state` key of how `add_tasks` builds the app's runtime in a task group: `new_runtime(tg)`."""


class Serving:
    """What a context is serving: an HTTP request or WebSocket, or the tasks of an app's runtime.

    A task copies the context it was started from, and may outlive its request: the middleware lets
    go of the request's scope here once the request has ended, so that the task does not keep it.
    `new_runtime`, set by the `add_tasks` middleware of the app serving the request, is how that app
    builds its runtime (what the testing toolkit uses for a call served without the lifespan).
    """

    __slots__ = ("new_runtime", "scope")

    def __init__(self, scope: Scope, new_runtime: Callable[[TaskGroup], Any] | None = None) -> None:
        # The runtime is `Any` here: this module sits below the runtime's, which imports it.
        self.scope: Scope | None = scope
        self.new_runtime = new_runtime


serving: ContextVar[Serving | None] = ContextVar("fastapi_tasks_serving", default=None)
"""What the code running in this context is serving; `None` outside every app with `add_tasks`."""
