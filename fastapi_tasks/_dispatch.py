"""The dispatch core: the `Dispatcher` protocol that adapters implement, and `DispatchTask`, a dispatch's handle.

An `enqueue()` is a scheduled task whose body is the dispatch, so names, shielding, `on_error`,
the app-wide config, discarding and the shutdown grace period apply to it unchanged. Its attempts
go through the gated retry (`fastapi_tasks.dispatchers._retry`): an unreachable broker is retried
until the job's `dispatch_deadline`. The adapters for taskiq and Celery (`fastapi_tasks.dispatchers`)
build on this module, and `fastapi_tasks.dispatchers._registry` finds the adapter of a job. The text
of the `DispatchError` a failed dispatch raises is written by `fastapi_tasks._dispatch_error`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection, Hashable
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

import anyio

from ._dispatch_error import dispatch_error
from ._log import logger
from ._phases import TaskStatus
from .dispatchers._retry import Attempts, GaveUp, gate_for, max_waiting_of, retry
from .dispatchers._spool import Spool, SpoolEntry, sender
from .errors import TaskNotFinishedError
from .task import Task

__all__ = [
    "DEFAULT_DISPATCH_DEADLINE",
    "DEFAULT_DISPATCH_TIMEOUT",
    "DispatchTask",
    "Dispatcher",
    "dispatch_waiting_for",
]

DEFAULT_DISPATCH_TIMEOUT = 5.0
"""Seconds one dispatch attempt may take when neither the task nor the app sets `dispatch_timeout`."""

DEFAULT_DISPATCH_DEADLINE = 60.0
"""Seconds a dispatch may retry an unreachable broker when neither the task nor the app sets `dispatch_deadline`."""


@runtime_checkable
class Dispatcher(Protocol):
    """What `enqueue()` needs from a distributed queue; one adapter per queue library.

    A class with `backend` and `async_libraries` as class attributes satisfies it. Two optional
    attributes tune the retry of an unreachable broker: `max_waiting` (an int, how many dispatches may
    wait for one broker; 10,000 by default) and `broker_of(job)`, the broker object a job is sent to,
    so that one broker down does not hold up the jobs of another (by default, one broker per adapter).
    Two more make a durable spool: `spool` (what `open_spool()` of `fastapi_tasks.dispatchers._spool`
    returns for the adapter's `spool=` argument) and `find_job(name, like)`, the job called `name` in
    the queue of the job `like`, or `None`, to send what the spool kept.
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


def _gate_key(dispatcher: Dispatcher, job: Any) -> Hashable:
    broker_of = getattr(dispatcher, "broker_of", None)
    broker = None if broker_of is None else broker_of(job)
    return (id(dispatcher), id(broker))


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
    def deadline(self) -> float:
        """Seconds the dispatch may retry an unreachable broker before it fails."""
        deadline = self.config.dispatch_deadline
        return DEFAULT_DISPATCH_DEADLINE if deadline is None else deadline

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
        job, job_id, dispatcher = self.func, self.job_id, self.dispatcher
        spool = getattr(dispatcher, "spool", None)
        spool = spool if isinstance(spool, Spool) else None
        return await self._deliver(lambda: dispatcher.dispatch(job, job_id, args, kwargs), spool)

    async def _deliver(self, attempt: Callable[[], Awaitable[Any]], spool: Spool | None = None) -> Any:
        """Send the job with `attempt()`, retried behind its broker's gate while the broker is unreachable.

        Each attempt is bounded by the task's `timeout`, the whole by its `deadline`. With a `spool`,
        a job that cannot be sent at once is written to it before it waits, and the dispatch that
        reaches the broker sends what the spool keeps. The testing toolkit's recorder sends through
        here too, with an attempt of its own.

        Raises:
            DispatchError: the dispatch failed for good, or gave up (deadline, too many waiting).
        """
        timeout = self.timeout
        progress = _Progress()
        attempts = Attempts()
        entry = None if spool is None else SpoolEntry(spool, self.job_id, self.job_name, self.args, self.kwargs)
        # Reset at the end: the testing toolkit runs tasks in its caller's context.
        reset = _progress.set(progress)

        async def one_attempt() -> Any:
            progress.waiting_for = None
            return await attempt()

        try:
            result = await retry(
                gate_for(_gate_key(self.dispatcher, self.func)),
                one_attempt,
                attempts,
                attempt_timeout=timeout,
                deadline=anyio.current_time() + self.deadline,
                max_waiting=max_waiting_of(self.dispatcher),
                unsent=lambda: progress.waiting_for is not None,
                waiting=None if entry is None else entry.keep,
            )
        except (GaveUp, anyio.get_cancelled_exc_class()) as exc:
            # Cancelled: shutdown after the grace period (or Task.cancel()). The runner logs the task as
            # cancelled, by name; this says which job, in which phase, and whether it may have been sent.
            gave_up = exc.reason if isinstance(exc, GaveUp) else "cancelled"
            if entry is not None:
                entry.gave_up()
            error = dispatch_error(
                self,
                None,
                timeout=timeout,
                waiting_for=progress.waiting_for,
                attempts=attempts,
                gave_up=gave_up,
                spooled=entry is not None and entry.kept,
            )
            if isinstance(exc, GaveUp):
                raise error from attempts.error
            self._exception = error
            logger.error("%s", error)
            raise
        except Exception as exc:
            if entry is not None:
                await entry.sent()  # refused for good: the spool could not send it either
            raise dispatch_error(self, exc) from exc
        finally:
            _progress.reset(reset)
        if spool is not None:
            await _after_sent(spool, entry, sender(self.dispatcher, self.func, timeout))
        return result


async def _after_sent(spool: Spool, entry: SpoolEntry | None, send: Callable[..., Awaitable[Any]]) -> None:
    """The broker took a job: its row leaves the spool, and what the spool still keeps goes too."""
    if entry is not None:
        await entry.sent()
    if spool.maybe_pending:
        # The handle of the dispatch that found the broker back ends once the backlog is sent.
        await spool.drain(send)
