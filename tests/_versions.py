"""What the FastAPI and anyio under test can do: tests of a feature that an older one lacks skip there, saying why."""

from __future__ import annotations

import importlib.metadata
import inspect

import anyio.to_thread
import fastapi.routing
import pytest

from fastapi_tasks._compat import FASTAPI_VERSION, NATIVE_TASKS

__all__ = [
    "ABANDON_ON_CANCEL",
    "FASTAPI_VERSION",
    "HAS_DEPENDS_SCOPE",
    "STARLETTE_VERSION",
    "needs_depends_scope",
    "needs_native_tasks",
    "needs_router_lifespans",
]

STARLETTE_VERSION = tuple(int(part) for part in importlib.metadata.version("starlette").split(".")[:2])
"""The installed Starlette's (major, minor)."""

HAS_DEPENDS_SCOPE = FASTAPI_VERSION >= (0, 121)
"""Whether FastAPI has `Depends(scope="function" | "request")` (0.121+)."""

needs_depends_scope = pytest.mark.skipif(
    not HAS_DEPENDS_SCOPE, reason="Depends(scope=...) needs FastAPI 0.121 or later"
)
needs_router_lifespans = pytest.mark.skipif(
    not hasattr(fastapi.routing, "_merge_lifespan_context"),
    reason="FastAPI runs the lifespan of an included router from 0.112.2 on",
)
needs_native_tasks = pytest.mark.skipif(
    not NATIVE_TASKS,
    reason="the app's tasks are asyncio tasks of their own only on an anyio whose cancel scopes can be reparented "
    "(_compat.NATIVE_TASKS); on an older one they are tasks of the app's task group, as on trio",
)

_RUN_SYNC_OPTIONS = inspect.signature(anyio.to_thread.run_sync).parameters
ABANDON_ON_CANCEL = "abandon_on_cancel" if "abandon_on_cancel" in _RUN_SYNC_OPTIONS else "cancellable"
"""The name of `anyio.to_thread.run_sync()`'s option to abandon its thread when cancelled (anyio 4.0: `cancellable`)."""
