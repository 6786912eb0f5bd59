"""Phase and status names, shared by the production scheduler and the testing toolkit."""

from __future__ import annotations

from enum import Enum

__all__ = ["Phase", "TaskStatus"]


class Phase(str, Enum):
    """When a task is started, relative to the request that scheduled it."""

    IMMEDIATE = "immediate"
    """At once, concurrently with the endpoint (`tasks.schedule`)."""
    AFTER_ROUTE = "after_route"
    """When the endpoint returns, before the response is sent (`tasks.after_route.schedule`)."""
    AFTER_RESPONSE = "after_response"
    """After the response has been sent (`tasks.after_response.schedule`)."""

    def __str__(self) -> str:
        return self.value


class TaskStatus(str, Enum):
    """Where a task is in its life."""

    PENDING = "pending"
    """Scheduled, not started yet."""
    RUNNING = "running"
    """Its body is running."""
    SUCCEEDED = "succeeded"
    """Its body returned."""
    FAILED = "failed"
    """Its body raised an exception."""
    CANCELLED = "cancelled"
    """It was cancelled (at shutdown, for an unshielded task) before it could end."""
    DISCARDED = "discarded"
    """It was never started because the endpoint that collected it raised."""
    DISPATCHED = "dispatched"
    """A job enqueued with `enqueue()`: it was handed to its distributed queue."""

    def __str__(self) -> str:
        return self.value

    @property
    def ended(self) -> bool:
        """Whether the task will not change status any more."""
        # Asked several times per task: module-level names, not two lookups on the Enum class each time.
        return self is not _PENDING and self is not _RUNNING


_PENDING, _RUNNING = TaskStatus.PENDING, TaskStatus.RUNNING
