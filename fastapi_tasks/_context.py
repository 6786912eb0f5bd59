"""The request being served, as the `add_tasks` middleware sees it, and the lifespan state keys."""

from __future__ import annotations

from contextvars import ContextVar

from starlette.types import Scope

__all__ = ["CONFIG_KEY", "RUNTIME_KEY", "TG_KEY", "current_scope"]

TG_KEY = "fastapi_tasks_tg"
"""Lifespan state key of the task group: `request.state.fastapi_tasks_tg`."""
CONFIG_KEY = "fastapi_tasks_config"
"""`app.state` key of the app-wide `TaskConfig` given to `add_tasks`."""
RUNTIME_KEY = "fastapi_tasks_runtime"
"""Lifespan state key of the app-wide runtime (config, shutdown bookkeeping)."""

current_scope: ContextVar[Scope | None] = ContextVar("fastapi_tasks_current_scope", default=None)
"""The ASGI scope of the HTTP request or WebSocket being handled in this context."""
