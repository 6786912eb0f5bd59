"""The taskiq adapter: jobs are tasks made with `@broker.task`, sent with `kicker().with_task_id(...).kiq()`.

taskiq is asyncio-native, so dispatching is a plain await on the event loop; it does not run
under trio. Install with `pip install "fastapi-tasks[taskiq]"`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from taskiq import AsyncTaskiqDecoratedTask
from taskiq.receiver.params_parser import parse_params

__all__ = ["TaskiqDispatcher"]


class TaskiqDispatcher:
    """Dispatches taskiq tasks; the job id is fixed with `with_task_id` before the message is sent."""

    backend: str = "taskiq"
    async_libraries: tuple[str, ...] = ("asyncio",)

    def __repr__(self) -> str:
        return "<TaskiqDispatcher>"

    def accepts(self, job: object) -> bool:
        """Whether `job` is a taskiq task (`@broker.task`)."""
        return isinstance(job, AsyncTaskiqDecoratedTask)

    def job_name(self, job: AsyncTaskiqDecoratedTask[..., Any]) -> str:
        """The task's name in taskiq: `module:function` unless given to `@broker.task`."""
        return job.task_name

    def job_function(self, job: AsyncTaskiqDecoratedTask[..., Any]) -> Callable[..., Any]:
        """The decorated function."""
        return job.original_func

    def new_job_id(self, job: AsyncTaskiqDecoratedTask[..., Any]) -> str:
        """An id from the broker's own id generator."""
        return job.broker.id_generator()

    async def dispatch(
        self, job: AsyncTaskiqDecoratedTask[..., Any], job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """`kiq` the task under `job_id`; returns taskiq's `AsyncTaskiqTask`."""
        return await job.kicker().with_task_id(job_id).kiq(*args, **kwargs)

    def round_trip(
        self, job: AsyncTaskiqDecoratedTask[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Build, serialize and parse back the message as `kiq` and the worker do; no broker is contacted."""
        broker = job.broker
        # taskiq has no public way to build a message without sending it; `_prepare_message` is
        # what `kiq` itself calls, so arguments it cannot convert fail here as they would there.
        message = job.kicker()._prepare_message(*args, **kwargs)
        received = broker.formatter.loads(broker.formatter.dumps(message).message)
        function = job.original_func
        # The worker parses arguments back into their annotated types (pydantic models, dates).
        parse_params(inspect.signature(function), get_type_hints(function), received)
        return tuple(received.args), dict(received.kwargs)
