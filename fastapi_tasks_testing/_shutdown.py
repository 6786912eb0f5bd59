"""Simulating the app's shutdown as production does it: `shutdown()` and `shutdown_sync()`."""

from __future__ import annotations

import anyio

from fastapi_tasks import TaskStatus
from fastapi_tasks._seam import Runtime, logger

from ._assertions import RecordQueries
from ._engine import run_recorded
from ._records import TaskRecord
from ._sync import check_no_running_loop, on_the_apps_loop

__all__ = ["Shutdown"]


class Shutdown(RecordQueries):
    """The part of `RecordingScheduler` that cancels or finishes its tasks as the app's shutdown would."""

    # The recorder's state this part reads (set in `RecordingScheduler.__init__`, and by each request).
    _real_runtime: Runtime | None

    async def shutdown(self) -> None:
        """Simulate the app's shutdown as production does it.

        The running tasks get the app's grace period (`add_tasks(app, shutdown_timeout=...)`) to
        end; then the unshielded ones, pending or running, are cancelled (and logged), and the
        shielded ones finish: pending shielded tasks are run now, running ones are awaited.
        """
        grace = self._grace_period()
        if grace:
            with anyio.move_on_after(grace):
                while running := self._running():
                    await running[0].wait()
        for record in self.records:
            if record.status is TaskStatus.PENDING and record._handle is None:
                if record.config.shield:
                    await run_recorded(record)
                else:
                    record._set_ended(TaskStatus.CANCELLED)
                    logger.warning("Background task %r was cancelled before it finished", record.name)
        for record in self._running():
            if not record.config.shield:
                record.cancel()
        while running := self._running():
            await running[0].wait()

    def _grace_period(self) -> float | None:
        real = self._real_runtime
        return None if real is None else real.shutdown_timeout

    def _running(self) -> list[TaskRecord]:
        # Started: running, or handed to the runtime and about to begin (a task waiting for a thread).
        return [
            r
            for r in self.records
            if r.status is TaskStatus.RUNNING or (r.status is TaskStatus.PENDING and r._handle is not None)
        ]

    def shutdown_sync(self) -> None:
        """`shutdown()` for a sync test, on the app's event loop while its lifespan runs (see `run_pending_sync`)."""
        check_no_running_loop("shutdown_sync", "shutdown")
        on_the_apps_loop(self._real_runtime, self.shutdown)
