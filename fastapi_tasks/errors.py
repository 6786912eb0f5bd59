"""Errors raised by fastapi-tasks.

The exception tree::

    FastAPITasksError
     ├── FastAPITasksUninitializedAppError   Tasks used without add_tasks(app) or without the lifespan
     ├── FastAPITasksAlreadyInstalledError   add_tasks(app) called twice on one app
     ├── FastAPITasksShutdownError           a task scheduled after shutdown cancelled the task group
     ├── BacklogFullError                    a task scheduled while max_pending tasks are pending or running
     ├── BatchClosedError                    a task added to an after_route/after_response batch that already ran
     ├── TaskNotFinishedError                a task's result read before the task ended
     ├── DispatchError                       a job could not be handed to its queue (refused, failed, timed out)
     └── DispatchBackendError                a job enqueued under an async library its queue cannot run on
"""

from __future__ import annotations

__all__ = [
    "BacklogFullError",
    "BatchClosedError",
    "DispatchBackendError",
    "DispatchError",
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


class BacklogFullError(FastAPITasksError):
    """A task was scheduled while the app already had `max_pending` tasks pending or running.

    Raised by `schedule()` (and `enqueue()`) at the call site, before the task exists, when the app
    was set up with `add_tasks(app, max_pending=...)`. Answer it with 503 Service Unavailable (and a
    `Retry-After`) from an exception handler: the client may retry once the backlog has drained.
    """


class BatchClosedError(FastAPITasksError):
    """A task was added to an `after_route` / `after_response` batch that has already been started or discarded."""


class TaskNotFinishedError(FastAPITasksError):
    """A task's outcome was read before the task ended."""


class DispatchError(FastAPITasksError):
    """A job could not be handed to its distributed queue: the broker refused it, failed, or did not answer in time.

    The broker's own error is chained as `__cause__`. The message never holds the job's argument
    values (they can be secrets, and megabytes long).

    Parameters:
        message: the explanation.
        job_name: the job's name in its queue.
        job_id: the id the job was (or would have been) enqueued with; use it as the idempotency key.
        phase: the phase the job was enqueued in.
        backend: the queue's name, "taskiq" or "celery".
        timed_out: whether the dispatch was abandoned because the broker did not answer in time;
            then the job may or may not have reached the queue.
    """

    def __init__(
        self, message: str, *, job_name: str, job_id: str, phase: str, backend: str, timed_out: bool = False
    ) -> None:
        super().__init__(message)
        self.job_name = job_name
        self.job_id = job_id
        self.phase = phase
        self.backend = backend
        self.timed_out = timed_out

    def __reduce__(self) -> tuple[object, ...]:
        # The keyword-only fields would be lost by the default pickling of exceptions.
        return (
            _rebuild_dispatch_error,
            (str(self), self.job_name, self.job_id, self.phase, self.backend, self.timed_out),
        )


def _rebuild_dispatch_error(
    message: str, job_name: str, job_id: str, phase: str, backend: str, timed_out: bool
) -> DispatchError:
    return DispatchError(message, job_name=job_name, job_id=job_id, phase=phase, backend=backend, timed_out=timed_out)


class DispatchBackendError(FastAPITasksError):
    """A job was enqueued while running on an async library its queue does not support (taskiq under trio)."""
