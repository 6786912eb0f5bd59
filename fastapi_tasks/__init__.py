"""Background tasks for FastAPI with precise timing, shielding and error handling, built on anyio."""

from __future__ import annotations

from . import errors
from ._dispatch import Dispatcher, DispatchTask, register_dispatcher
from ._phases import Phase, TaskStatus
from .dependencies import Tasks, add_tasks, get_tasks_scheduler
from .tasks import Task, TaskConfig, TaskDefinition, TaskErrorHandler, TasksBatch, TasksScheduler

__all__ = [
    "DispatchTask",
    "Dispatcher",
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
