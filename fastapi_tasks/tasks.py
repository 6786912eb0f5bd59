"""fastapi-tasks 0.1.0's import paths, kept working: `from fastapi_tasks.tasks import Task, TasksScheduler, ...`.

Nothing is defined here; each name lives in the module of its concept (`task`, `config`,
`batch`, `scheduler`, `_runtime`) and is importable from `fastapi_tasks` itself.
"""

from __future__ import annotations

from ._runtime import DEFAULT_MAX_THREADS as DEFAULT_MAX_THREADS
from .batch import TasksBatch
from .config import TaskConfig, TaskErrorHandler
from .definition import TaskDefinition
from .scheduler import TasksScheduler
from .task import Task

__all__ = [
    "Task",
    "TaskConfig",
    "TaskDefinition",
    "TaskErrorHandler",
    "TasksBatch",
    "TasksScheduler",
]
