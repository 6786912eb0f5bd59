"""Simulating the app's shutdown as production does it: `shutdown()` and `shutdown_sync()`."""

from __future__ import annotations

from fastapi_tasks import TaskStatus
from fastapi_tasks._seam import Runtime, logger

from ._assertions import RecordQueries
from ._engine import run_recorded
from ._sync import check_no_running_loop, on_the_apps_loop

__all__ = ["Shutdown"]


class Shutdown(RecordQueries):
    """The part of `RecordingScheduler` that cancels or finishes its tasks as the app's shutdown would."""

    # The recorder's state this part reads (set in `RecordingScheduler.__init__`).
    _real_runtime: Runtime | None

    async def shutdown(self) -> None:
        """Simulate the app's shutdown as production does it.

        Unshielded tasks, pending or running, are cancelled (and logged); shielded ones finish:
        pending shielded tasks are run now, running ones are awaited.
        """
        for record in self.records:
            if record.status is TaskStatus.PENDING:
                if record.config.shield:
                    await run_recorded(record)
                else:
                    record._set_ended(TaskStatus.CANCELLED)
                    logger.warning("Background task %r was cancelled before it finished", record.name)
            elif record.status is TaskStatus.RUNNING:
                if not record.config.shield:
                    record.cancel()
                await record.wait()

    def shutdown_sync(self) -> None:
        """`shutdown()` for a sync test, on the app's event loop while its lifespan runs (see `run_pending_sync`)."""
        check_no_running_loop("shutdown_sync", "shutdown")
        on_the_apps_loop(self._real_runtime, self.shutdown)
