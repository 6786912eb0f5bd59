"""The dispatch core: the `Dispatcher` protocol that adapters implement, and `DispatchTask`, a dispatch's handle.

An `enqueue()` is a scheduled task whose body is the dispatch, so names, shielding, `on_error`,
the app-wide config, discarding and the shutdown grace period apply to it unchanged. The
adapters for taskiq and Celery (`fastapi_tasks.dispatchers`) build on this module, and
`fastapi_tasks.dispatchers._registry` finds the adapter of a job.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.from_thread

from ._phases import TaskStatus
from .errors import DispatchBackendError, DispatchError, TaskNotFinishedError
from .task import Task

__all__ = [
    "DEFAULT_DISPATCH_TIMEOUT",
    "DispatchTask",
    "Dispatcher",
    "check_async_library",
    "dispatch_error",
    "dispatch_waiting_for",
]

DEFAULT_DISPATCH_TIMEOUT = 5.0
"""Seconds a dispatch may take when neither the task nor the app sets `dispatch_timeout`."""


@runtime_checkable
class Dispatcher(Protocol):
    """What `enqueue()` needs from a distributed queue; one adapter per queue library.

    A class with `backend` and `async_libraries` as class attributes satisfies it.
    """

    @property
    def backend(self) -> str:
        """The queue's name in messages, like "taskiq"."""
        ...

    @property
    def async_libraries(self) -> Collection[str]:
        """The async libraries it can dispatch from, like `("asyncio",)`."""
        ...

    def accepts(self, job: object) -> bool:
        """Whether `job` is a job of this queue."""
        ...

    def job_name(self, job: Any) -> str:
        """The job's name in its queue."""
        ...

    def job_signature(self, job: Any) -> inspect.Signature | None:
        """The parameters an enqueueing of `job` passes, to check its arguments against (`None`: unknown).

        Those of the function a worker runs, less the ones the worker fills in itself.
        """
        ...

    def new_job_id(self, job: Any) -> str:
        """A fresh id for one enqueueing of `job`, fixed before it is sent."""
        ...

    async def dispatch(self, job: Any, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Send `job(*args, **kwargs)` to the broker under `job_id`; return the queue's own handle."""
        ...

    def round_trip(
        self, job: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments as a worker receives them: serialized and parsed back as the queue does it.

        Raises whatever the queue's serializer raises for arguments it cannot send.
        """
        ...

    async def run_as_worker(self, job: Any, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run `job` in this process as one of the queue's workers runs the job `job_id`; for tests.

        `args` and `kwargs` are as a worker receives them (see `round_trip`). The job gets what a
        worker gives it (its dependencies, its request, `job_id` as its own id), and no broker is
        contacted. A blocking job runs in a worker thread.

        Returns:
            What the job returned.

        Raises:
            Exception: whatever the job raised.
        """
        ...


def _running_library() -> str | None:
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio depends on sniffio, so without it only asyncio runs
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        pass
    try:
        # A sync endpoint runs in a worker thread: ask its event loop.
        return anyio.from_thread.run_sync(sniffio.current_async_library)
    except (RuntimeError, sniffio.AsyncLibraryNotFoundError):
        return None  # no event loop at all (a recorder used on its own in a sync unit test)


_ALL_LIBRARIES = frozenset({"asyncio", "trio"})


def check_async_library(dispatcher: Dispatcher, job_name: str) -> None:
    """Fail at the call site when the current async library cannot dispatch to `dispatcher`'s queue.

    Raises:
        DispatchBackendError: it cannot.
    """
    if _ALL_LIBRARIES.issubset(dispatcher.async_libraries):
        return  # nothing to check, and no thread hop from a sync endpoint to find out
    library = _running_library()
    if library is None or library in dispatcher.async_libraries:
        return
    supported = " or ".join(dispatcher.async_libraries)
    raise DispatchBackendError(
        f"Cannot enqueue {job_name!r} to {dispatcher.backend}: {dispatcher.backend} dispatches only under "
        f"{supported}, and this app runs on {library}. Run the app on {supported}, or use a queue that supports "
        f"{library} (Celery jobs can be enqueued from any backend)."
    )


def _cause_chain(exc: BaseException) -> str:
    names = [type(exc).__name__]
    seen = {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen and len(names) < 4:
        seen.add(id(cause))
        names.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    return " caused by ".join(names)


class _Progress:
    """What the dispatch of the running task waits for, if not for the broker, and why."""

    __slots__ = ("waiting_for",)

    def __init__(self) -> None:
        self.waiting_for: tuple[str, str] | None = None


_progress: ContextVar[_Progress | None] = ContextVar("fastapi_tasks_dispatch_progress", default=None)


def dispatch_waiting_for(what: str | None, *, why: str = "") -> None:
    """Say what the dispatch running in this task now waits for; `None`: the broker's answer.

    An adapter calls it around a wait of its own (for a free thread, say): when the dispatch
    timeout strikes during that wait, the `DispatchError` says "no {what} within {timeout} s:
    {why}" instead of blaming the broker. Outside a dispatch it does nothing.
    """
    progress = _progress.get()
    if progress is not None:
        progress.waiting_for = None if what is None else (what, why)


def dispatch_error(
    task: DispatchTask,
    cause: BaseException | None,
    *,
    timeout: float | None = None,
    waiting_for: tuple[str, str] | None = None,
) -> DispatchError:
    """The `DispatchError` for `task`: a timeout (`cause` is `None`) or the broker's error `cause`.

    A timeout is blamed on the broker, or on what the dispatch was still waiting for (`waiting_for`,
    a (what, why) pair, see `dispatch_waiting_for`). Only exception type names go into the
    message: a broker's or serializer's message can quote the argument values, and it stays
    readable on the chained cause.
    """
    if cause is not None:
        reason = _cause_chain(cause)
    elif waiting_for is not None:
        what, why = waiting_for
        reason = f"no {what} within {timeout:g} s" + (f": {why}" if why else "")
    else:
        reason = f"no answer from the broker within {timeout:g} s"
    return DispatchError(
        f"Could not dispatch {task.job_name!r} (job id {task.job_id!r}, phase {task.phase.value}) "
        f"to {task.backend}: {reason}.",
        job_name=task.job_name,
        job_id=task.job_id,
        phase=task.phase.value,
        backend=task.backend,
        timed_out=cause is None,
    )


class DispatchTask(Task[..., Any]):
    """The handle of one `enqueue()`: a task whose body hands a job to its distributed queue.

    Besides a `Task`'s attributes it has `job` (what was enqueued, also `func`), `job_name`,
    `job_id` (fixed at once, before the dispatch: use it as the idempotency key) and `backend`.
    Its status ends "dispatched" when the broker took the job; its `result` is then the queue's own
    handle (a taskiq `AsyncTaskiqTask`, a Celery `AsyncResult`). A dispatch that fails ends
    "failed" with a `DispatchError`.
    """

    # No __slots__: the testing toolkit's record type combines this class with its own slotted
    # Task subclass, which only works when one of the two adds a __dict__ rather than slots.

    dispatcher: Dispatcher
    job_id: str
    job_name: str

    def _bind(self, dispatcher: Dispatcher, job_id: str, job_name: str) -> None:
        self.dispatcher = dispatcher
        self.job_id = job_id
        self.job_name = job_name

    def __repr__(self) -> str:
        return (
            f"<DispatchTask {self.name!r} job_id={self.job_id!r} phase={self.phase.value} status={self.status.value}>"
        )

    @property
    def job(self) -> Any:
        """The job that was enqueued."""
        return self.func

    @property
    def backend(self) -> str:
        """The queue's name: "taskiq", "celery", ..."""
        return self.dispatcher.backend

    @property
    def name(self) -> str:
        """The configured name, else the job's name in its queue."""
        return self.config.name or self.job_name

    @property
    def timeout(self) -> float:
        """Seconds the dispatch may take."""
        timeout = self.config.dispatch_timeout
        return DEFAULT_DISPATCH_TIMEOUT if timeout is None else timeout

    @property
    def result(self) -> Any:
        """The queue's handle on the enqueued job.

        Raises:
            TaskNotFinishedError: the job has not been dispatched (yet).
        """
        if self.status is not TaskStatus.DISPATCHED:
            raise TaskNotFinishedError(
                f"Job {self.name!r} has no queue handle: its dispatch is {self.status.value}. "
                "Await task.wait() first, and check task.status or task.exception."
            )
        return self._result

    def _target(self) -> Callable[..., Any]:
        return self._send

    def _set_ended(self, status: TaskStatus) -> None:
        super()._set_ended(TaskStatus.DISPATCHED if status is TaskStatus.SUCCEEDED else status)

    async def _send(self, *args: Any, **kwargs: Any) -> Any:
        timeout = self.timeout
        progress = _Progress()
        # Reset at the end: the testing toolkit runs tasks in its caller's context.
        reset = _progress.set(progress)
        try:
            with anyio.move_on_after(timeout) as scope:
                try:
                    return await self.dispatcher.dispatch(self.func, self.job_id, args, kwargs)
                except Exception as exc:
                    # A client library may turn our timeout's cancellation into an error of its own.
                    cause = None if scope.cancel_called else exc
                    raise dispatch_error(self, cause, timeout=timeout, waiting_for=progress.waiting_for) from exc
        finally:
            _progress.reset(reset)
        # Reached only when the timeout cancelled the dispatch.
        raise dispatch_error(self, None, timeout=timeout, waiting_for=progress.waiting_for)
