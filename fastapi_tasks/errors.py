"""Errors raised by fastapi-tasks.

The exception tree::

    FastAPITasksError
     ├── FastAPITasksUninitializedAppError   Tasks used without add_tasks(app) or without the lifespan
     ├── FastAPITasksAlreadyInstalledError   add_tasks(app) called twice on one app
     ├── FastAPITasksShutdownError           a task scheduled after shutdown cancelled the task group
     ├── BatchClosedError                    a task added to an after_route/after_response batch that already ran
     └── TaskNotFinishedError                a task's result read before the task ended
"""

from __future__ import annotations

__all__ = [
    "BatchClosedError",
    "FastAPITasksAlreadyInstalledError",
    "FastAPITasksError",
    "FastAPITasksShutdownError",
    "FastAPITasksUninitializedAppError",
    "TaskNotFinishedError",
]


class FastAPITasksError(Exception):
    """Base class of every error raised by fastapi-tasks."""


class FastAPITasksUninitializedAppError(FastAPITasksError):
    """The `Tasks` dependency was used on an app without `add_tasks(app)` or without its lifespan running."""


class FastAPITasksAlreadyInstalledError(FastAPITasksError):
    """`add_tasks(app)` was called a second time on the same app."""


class FastAPITasksShutdownError(FastAPITasksError):
    """A task was scheduled after the app's shutdown cancelled its task group."""


class BatchClosedError(FastAPITasksError):
    """A task was added to an `after_route` / `after_response` batch that has already been started or discarded."""


class TaskNotFinishedError(FastAPITasksError):
    """A task's outcome was read before the task ended."""
