"""The seam between production and the testing toolkit: the one internal module `fastapi_tasks_testing` imports.

This module is a contract. The recorder substitutes for production, and reads it, only through the
names below; everything else private to `fastapi_tasks` may change without the toolkit noticing.
Public names (`fastapi_tasks`, `fastapi_tasks.errors`, `fastapi_tasks.dispatchers.*`) are imported
from where they are public. `tests/test_layout.py` keeps the toolkit to this rule.

What crosses the seam:

- the app's runtime (`Runtime`): how an app spawns, supervises and shuts down its tasks, which the
  recorder wraps to record them;
- running one task (`run_task`), containing what it raises, as production does;
- the hooks at the bottom of FastAPI's per-request exit stacks (`push_at_bottom`);
- the serving context (`serving`, `Serving`) and the lifespan state keys, by which a scheduler
  finds its request and its app, and how `add_tasks` builds an app's runtime (`NEW_RUNTIME_KEY`),
  which the recorder uses for a test client's call served without the lifespan;
- how the `Tasks` dependency resolves a request's runtime (`resolve_runtime`, `tasks_added`,
  `resolution_watchers`);
- the dispatch core that `enqueue()` uses (`prepare_dispatch`, `find_dispatcher`, `dispatch_error`);
- how tasks and failures are named in logs (`callable_name`, `describe_exception`, `logger`);
- what differs between the FastAPI and anyio versions supported (`_compat.py`): where a request's
  stack closed once the response was sent lives (`REQUEST_STACK_KEY`), calls into the event loop from
  another thread (`current_token`, `run_on_loop`) and the errors anyio raises there (`NoEventLoopError`,
  `RunFinishedError`).
"""

from __future__ import annotations

from ._callables import callable_name, is_async_callable
from ._compat import REQUEST_STACK_KEY, NoEventLoopError, RunFinishedError, current_token, run_on_loop
from ._context import CONFIG_KEY, NEW_RUNTIME_KEY, RUNTIME_KEY, TG_KEY, Serving, serving
from ._dispatch_error import dispatch_error
from ._log import describe_exception, logger
from ._runner import run_task
from ._runtime import Runtime
from .dependencies import resolution_watchers, resolve_runtime, tasks_added
from .dispatchers._registry import find_dispatcher, prepare_dispatch
from .scheduler import push_at_bottom

__all__ = [
    "CONFIG_KEY",
    "NEW_RUNTIME_KEY",
    "REQUEST_STACK_KEY",
    "RUNTIME_KEY",
    "TG_KEY",
    "NoEventLoopError",
    "RunFinishedError",
    "Runtime",
    "Serving",
    "callable_name",
    "current_token",
    "describe_exception",
    "dispatch_error",
    "find_dispatcher",
    "is_async_callable",
    "logger",
    "prepare_dispatch",
    "push_at_bottom",
    "resolution_watchers",
    "resolve_runtime",
    "run_on_loop",
    "run_task",
    "serving",
    "tasks_added",
]
