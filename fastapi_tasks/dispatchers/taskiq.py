"""The taskiq adapter: jobs are tasks made with `@broker.task`, sent with `kicker().with_task_id(...).kiq()`.

taskiq is asyncio-native, so dispatching is a plain await on the event loop; it does not run
under trio. Install with `pip install "fastapi-tasks[taskiq]"`.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any, get_type_hints

import anyio.to_thread
from taskiq import AsyncTaskiqDecoratedTask, Context, TaskiqMessage, TaskiqState
from taskiq.receiver.params_parser import parse_params
from taskiq_dependencies import DependencyGraph

from ._retry import DEFAULT_MAX_WAITING
from ._spool import Spool, open_spool

__all__ = ["TaskiqDispatcher"]


class TaskiqDispatcher:
    """Dispatches taskiq tasks; the job id is fixed with `with_task_id` before the message is sent.

    Parameters:
        max_waiting: how many dispatches may wait at once for a broker that is unreachable; past
            it a dispatch fails at once with a `DispatchError`.
        spool: a directory for the durable spool (off by default): a job that cannot be sent at
            once is written to a SQLite file there, and sent from it once the broker answers, also
            by the next process after this one died. See docs/scaling-out.md.

    Raises:
        ValueError: `max_waiting` is not a positive int, or `spool` is not an existing directory.
        TypeError: `spool` is neither a path nor `None`.
    """

    backend: str = "taskiq"
    async_libraries: tuple[str, ...] = ("asyncio",)

    def __init__(self, *, max_waiting: int = DEFAULT_MAX_WAITING, spool: str | os.PathLike[str] | None = None) -> None:
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 1:
            raise ValueError(f"TaskiqDispatcher(max_waiting=...) must be a positive int, not {max_waiting!r}")
        self.max_waiting = max_waiting
        self.spool: Spool | None = open_spool(spool, "TaskiqDispatcher")

    def __repr__(self) -> str:
        options = [] if self.max_waiting == DEFAULT_MAX_WAITING else [f"max_waiting={self.max_waiting}"]
        if self.spool is not None:
            options.append(f"spool={str(self.spool.directory)!r}")
        return f"<TaskiqDispatcher {' '.join(options)}>" if options else "<TaskiqDispatcher>"

    def broker_of(self, job: AsyncTaskiqDecoratedTask[..., Any]) -> Any:
        """The task's broker: one gate per broker."""
        return job.broker

    def find_job(self, name: str, like: AsyncTaskiqDecoratedTask[..., Any]) -> Any:
        """The task called `name` on the broker of `like` (or any broker of the process); `None`: no such task."""
        return like.broker.find_task(name)

    def accepts(self, job: object) -> bool:
        """Whether `job` is a taskiq task (`@broker.task`)."""
        return isinstance(job, AsyncTaskiqDecoratedTask)

    def job_name(self, job: AsyncTaskiqDecoratedTask[..., Any]) -> str:
        """The task's name in taskiq: `module:function` unless given to `@broker.task`."""
        return job.task_name

    def job_signature(self, job: AsyncTaskiqDecoratedTask[..., Any]) -> inspect.Signature:
        """The decorated function's parameters, less the dependencies the worker injects (`TaskiqDepends`)."""
        return _caller_signature(job.original_func)

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
        received = _received_message(job, job.broker.id_generator(), args, kwargs)
        return tuple(received.args), dict(received.kwargs)

    async def run_as_worker(
        self, job: AsyncTaskiqDecoratedTask[..., Any], job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run the task as taskiq's worker does, without its middlewares; no broker is contacted.

        The message the worker would receive is built with `job_id` as its `task_id`, and the
        task's dependencies are resolved as the worker resolves them: `Context` (whose `message`
        is that message), `TaskiqState`, the broker's custom dependency context and dependency
        overrides, and `TaskiqDepends(...)` of your own, closed once the task ended. A sync
        task runs in a worker thread.
        """
        broker = job.broker
        function = job.original_func
        message = _received_message(job, job_id, args, kwargs)
        # What taskiq's Receiver.run_task does, short of calling the middlewares' on_error hooks:
        # a retry middleware would send the failed job to the broker again.
        initial = {**broker.custom_dependency_context, Context: Context(message, broker), TaskiqState: broker.state}
        async with DependencyGraph(function).async_ctx(initial, broker.dependency_overrides or None) as resolver:
            resolved = await resolver.resolve_kwargs()
            resolved.update(message.kwargs)
            if inspect.iscoroutinefunction(function):
                return await function(*message.args, **resolved)
            return await anyio.to_thread.run_sync(functools.partial(function, *message.args, **resolved))


@functools.lru_cache(maxsize=256)
def _caller_signature(function: Callable[..., Any]) -> inspect.Signature:
    # The worker's own dependency graph tells which parameters it fills in: `TaskiqDepends()` as a
    # default or in `Annotated[...]`, under string annotations too.
    graph = DependencyGraph(function)
    injected = {
        dependency.param_name
        for target, dependencies in graph.dependencies.items()
        if target.dependency is function
        for dependency in dependencies
    }
    signature = inspect.signature(function)
    return signature.replace(parameters=[p for p in signature.parameters.values() if p.name not in injected])


def _received_message(
    job: AsyncTaskiqDecoratedTask[..., Any], job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TaskiqMessage:
    """The message of `job(*args, **kwargs)` as a worker has it once parsed, its arguments in their annotated types."""
    formatter = job.broker.formatter
    # taskiq has no public way to build a message without sending it; `_prepare_message` is
    # what `kiq` itself calls, so arguments it cannot convert fail here as they would there.
    message = job.kicker().with_task_id(job_id)._prepare_message(*args, **kwargs)
    received = formatter.loads(formatter.dumps(message).message)
    received.parse_labels()
    function = job.original_func
    # The worker parses arguments back into their annotated types (pydantic models, dates).
    parse_params(inspect.signature(function), get_type_hints(function), received)
    return received
