"""`TaskDefinition`, what `tasks.task(name=..., shield=..., on_error=...)` returns, and the surface it shares.

The scheduler and its batches share `schedule()`, `enqueue()` and `task()` through `Schedulable`; a
`TaskDefinition`'s own `schedule()` and `enqueue()` use its configuration merged over the app-wide one.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

from ._phases import Phase
from .config import TaskConfig, TaskErrorHandler
from .task import Task

if TYPE_CHECKING:
    from ._dispatch import DispatchTask

__all__ = ["TaskDefinition"]

P = ParamSpec("P")
T = TypeVar("T")
JobP = ParamSpec("JobP")

# `TaskDefinition.schedule` binds these from the function it is given. With the class's own P and T,
# a definition typed `TaskDefinition[..., Any]` (what `task()` returns) took any arguments unchecked.
FuncP = ParamSpec("FuncP")
FuncT = TypeVar("FuncT")


class TaskDefinition(Generic[P, T]):
    """A configured way to schedule: what `tasks.task(name=..., shield=..., on_error=...)` returns.

    Its `schedule(func, *args, **kwargs)` is type-checked against `func`'s signature, as
    `tasks.schedule(...)` is; the class's type parameters only keep `TaskDefinition[..., Any]`
    annotations valid.
    """

    __slots__ = ("_config", "_target")

    def __init__(self, target: Schedulable, config: TaskConfig) -> None:
        self._target = target
        self._config = config

    @overload
    def schedule(
        self, func: Callable[FuncP, Coroutine[Any, Any, FuncT]], /, *args: FuncP.args, **kwargs: FuncP.kwargs
    ) -> Task[FuncP, FuncT]: ...
    @overload
    def schedule(
        self, func: Callable[FuncP, FuncT], /, *args: FuncP.args, **kwargs: FuncP.kwargs
    ) -> Task[FuncP, FuncT]: ...
    def schedule(self, func: Callable[FuncP, Any], /, *args: FuncP.args, **kwargs: FuncP.kwargs) -> Task[FuncP, Any]:
        """Schedule `func(*args, **kwargs)` with this definition's configuration.

        Raises:
            TypeError: `func` is not callable.
        """
        return cast("Task[FuncP, Any]", self._target._add(func, args, kwargs, self._config))

    def enqueue(self, job: Callable[JobP, Any], /, *args: JobP.args, **kwargs: JobP.kwargs) -> DispatchTask:
        """Hand `job(*args, **kwargs)` to its distributed queue, with this definition's configuration.

        See `TasksScheduler.enqueue`.
        """
        return cast("DispatchTask", self._target._add(job, args, kwargs, self._config, dispatch=True))


class Schedulable:
    """What the scheduler and its batches share: `schedule()` and `task()`."""

    __slots__ = ()

    def _base_config(self) -> TaskConfig:
        raise NotImplementedError

    def _new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return Task(func, args, kwargs, config, phase=phase)

    def _new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        from .dispatchers._registry import new_dispatch  # imported here: only apps that dispatch pay for it

        return new_dispatch(job, args, kwargs, config, phase)

    def _add(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        dispatch: bool = False,
    ) -> Task[..., Any]:
        raise NotImplementedError

    # An async function's task holds what the coroutine returns, not the coroutine.
    @overload
    def schedule(
        self, func: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[P, T]: ...
    @overload
    def schedule(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Task[P, T]: ...
    def schedule(self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Task[P, Any]:
        """Schedule `func(*args, **kwargs)`; it inherits the app-wide configuration.

        Returns:
            The task's handle.

        Raises:
            TypeError: `func` is not callable.
        """
        return cast("Task[P, Any]", self._add(func, args, kwargs, self._base_config()))

    def enqueue(self, job: Callable[JobP, Any], /, *args: JobP.args, **kwargs: JobP.kwargs) -> DispatchTask:
        """Hand `job(*args, **kwargs)` to its distributed queue (taskiq or Celery) in this phase.

        The dispatch is a task like any other: it inherits the app-wide configuration, is
        discarded with its batch when the endpoint raises, and never changes the response. A
        dispatch that fails or outlasts `dispatch_timeout` ends with a `DispatchError`, which is
        logged and passed to `on_error`.

        Returns:
            The dispatch's handle; its `job_id` is known at once.

        Raises:
            TypeError: `job` is not a job of a supported queue (a taskiq or Celery task).
            DispatchBackendError: the queue cannot run on the current async library (taskiq under trio).
        """
        return cast("DispatchTask", self._add(job, args, kwargs, self._base_config(), dispatch=True))

    def task(
        self,
        *,
        name: str | None = None,
        shield: bool | None = None,
        on_error: TaskErrorHandler | None = None,
        dispatch_timeout: float | None = None,
        dispatch_deadline: float | None = None,
    ) -> TaskDefinition[..., Any]:
        """Return a definition whose `.schedule(...)` uses this configuration merged over the app-wide one.

        Parameters:
            name: the task's name in logs and test reports.
            shield: whether the task survives the shutdown cancellation.
            on_error: `on_error(task, exc)`, called after the task raised.
            dispatch_timeout: seconds one attempt of an `.enqueue(...)` dispatch may take.
            dispatch_deadline: seconds an `.enqueue(...)` dispatch may keep retrying while its broker
                is unreachable before it fails.

        Raises:
            TypeError: `name` is not a str, `shield` not a bool, or `on_error` not callable (checked by `TaskConfig`).
            ValueError: `dispatch_timeout` or `dispatch_deadline` is not a positive number of seconds.
        """
        config = TaskConfig(
            name=name,
            shield=shield,
            on_error=on_error,
            dispatch_timeout=dispatch_timeout,
            dispatch_deadline=dispatch_deadline,
        )
        return TaskDefinition(self, self._base_config().merge(config))
