"""Background tasks for FastAPI with precise timing, shielding and error handling, built on anyio.

The errors live in `fastapi_tasks.errors`; the two that fastapi-tasks 0.1.0's documentation
imports from the package root are importable from here too.
"""

from __future__ import annotations

from . import errors
from ._dispatch import Dispatcher, DispatchTask
from ._phases import Phase, TaskStatus
from .batch import TasksBatch
from .config import TaskConfig, TaskErrorHandler
from .definition import TaskDefinition
from .dependencies import Tasks, add_tasks, get_tasks_scheduler
from .dispatchers._registry import register_dispatcher
from .errors import FastAPITasksError, FastAPITasksUninitializedAppError
from .scheduler import TasksScheduler
from .task import Task

__all__ = [
    "DispatchTask",
    "Dispatcher",
    "FastAPITasksError",
    "FastAPITasksUninitializedAppError",
    "Phase",
    "Task",
    "TaskConfig",
    "TaskDefinition",
    "TaskErrorHandler",
    "TaskStatus",
    "Tasks",
    "TasksBatch",
    "TasksScheduler",
    "add_tasks",
    "errors",
    "get_tasks_scheduler",
    "register_dispatcher",
]
