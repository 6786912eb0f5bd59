"""Running and holding: which recorded tasks run, and running the pending ones (`run_pending()`).

In "run" mode a request's tasks run as they are started; in "record" mode only the `allow()`ed
ones do; in every mode `hold()` keeps the matching ones pending. `run_pending()` runs what is
pending, through the same spawn as production (see `_engine.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from fastapi_tasks import Phase, TaskStatus
from fastapi_tasks._seam import Runtime
from fastapi_tasks.errors import FastAPITasksError

from ._assertions import RecordQueries
from ._engine import run_recorded
from ._faults import check_spec
from ._matching import TaskSpec, matches_task
from ._mode import Mode
from ._records import TaskRecord
from ._sync import check_no_running_loop, on_the_apps_loop

__all__ = ["Control"]

_PHASE_ORDER = (Phase.IMMEDIATE, Phase.AFTER_ROUTE, Phase.AFTER_RESPONSE)
_MAX_PASSES = 1000  # run_pending(): a pass runs one phase's pending tasks; three suffice unless tasks schedule more


class Control(RecordQueries):
    """The part of `RecordingScheduler` that decides which tasks run, and runs the pending ones."""

    # The recorder's state this part reads and writes (set in `RecordingScheduler.__init__`).
    mode: Mode
    _allowed: list[TaskSpec]
    _held: list[TaskSpec]
    _detached: list[TaskSpec]
    _real_runtime: Runtime | None

    def allow(self, *tasks: TaskSpec) -> None:
        """In "record" mode, let the matching tasks run as in "run" mode; every other task is only recorded."""
        for task in tasks:
            check_spec("allow()", task)
        self._allowed.extend(tasks)

    def hold(self, *tasks: TaskSpec) -> None:
        """Keep the matching tasks from running: they stay "pending", to test what happens before they run.

        In "run" mode the other tasks run as usual; in "record" mode a held task does not run even
        when `allow()`ed. `run_pending(only=task)` runs a held task later.

        Raises:
            FastAPITasksError: in "spy" mode, where the app's real scheduler runs every task.
        """
        for task in tasks:
            check_spec("hold()", task)
        if self.mode == "spy":
            raise FastAPITasksError(
                "hold() cannot keep tasks pending in spy mode: the app's real scheduler runs them. "
                "Use run mode (the default) or record mode to hold tasks."
            )
        self._held.extend(tasks)

    def detach(self, *tasks: TaskSpec) -> None:
        """Let the matching tasks outlive their request: the client's call does not wait for them.

        For a task that is meant to run on after the response, for as long as the app runs (a
        poller, a subscription): in "run" mode it is started as usual, and the client's call
        returns without waiting for it; at teardown it is not reported if it is still running
        or ended cancelled (the app's shutdown cancels it). Without a lifespan (a bare test
        client) nothing outlives the client's call: the task is cancelled when the call returns.
        """
        for task in tasks:
            check_spec("detach()", task)
        self._detached.extend(tasks)

    def _waits_for(self, record: TaskRecord) -> bool:
        return not (self._detached and any(matches_task(record, spec) for spec in self._detached))

    def _runs(self, record: TaskRecord) -> bool:
        if self._held and any(matches_task(record, spec) for spec in self._held):
            return False
        if self.mode != "record":
            return True
        return any(matches_task(record, spec) for spec in self._allowed)

    async def run_pending(
        self,
        *,
        phase: Phase | str | None = None,
        only: TaskSpec | Sequence[TaskSpec] | None = None,
        exclude: TaskSpec | Sequence[TaskSpec] | None = None,
        limit: int | None = None,
    ) -> list[TaskRecord]:
        """Run the pending tasks one at a time: phase by phase, each phase in scheduling order.

        Tasks that the tasks it runs schedule are run too, in their phase's turn: an earlier phase
        gets its turn again before a later one goes on. It returns when no chosen task is pending.

        Parameters:
            phase: run only this phase's pending tasks.
            only: run only these tasks (a function or a name, or a list of them).
            exclude: leave these tasks pending.
            limit: run at most this many tasks.

        Returns:
            The records that were run.

        Raises:
            RuntimeError: the tasks kept scheduling more tasks (one that reschedules itself, say).
        """
        phases = _PHASE_ORDER if phase is None else (Phase(phase),)
        chosen, left = _task_specs("only", only), _task_specs("exclude", exclude)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a number of tasks from 1, or None for no limit, not {limit!r}")

        def runs(record: TaskRecord) -> bool:
            return (
                record.status is TaskStatus.PENDING
                and (only is None or any(matches_task(record, spec) for spec in chosen))
                and not any(matches_task(record, spec) for spec in left)
            )

        ran: list[TaskRecord] = []
        for _ in range(_MAX_PASSES):
            pending: list[TaskRecord] = []
            for wanted in phases:
                pending = [r for r in self.records if r.phase is wanted and runs(r)]
                if pending:
                    break
            if not pending:
                return ran
            for record in pending:
                if limit is not None and len(ran) >= limit:
                    return ran
                if record.status is TaskStatus.PENDING:  # a BackgroundTasks task after one that failed is discarded
                    await run_recorded(record)
                    ran.append(record)
        names = ", ".join(sorted({repr(r.name) for r in self.records if r.status is TaskStatus.PENDING}))
        raise RuntimeError(
            f"run_pending() gave up after {_MAX_PASSES:,} passes: the tasks it runs keep scheduling more "
            f"(still pending: {names}). Stand in for the task that reschedules itself with "
            "tasks_recorder.replace(task, fake)."
        )

    def run_pending_sync(
        self,
        *,
        phase: Phase | str | None = None,
        only: TaskSpec | Sequence[TaskSpec] | None = None,
        exclude: TaskSpec | Sequence[TaskSpec] | None = None,
        limit: int | None = None,
    ) -> list[TaskRecord]:
        """`run_pending()` for a sync test.

        The tasks run on the app's event loop while its lifespan runs (a `TestClient` used as a
        context manager keeps one): what the lifespan bound to that loop (a connection pool, say)
        works in them. Otherwise they run in an event loop of their own.
        """
        check_no_running_loop("run_pending_sync", "run_pending")
        return on_the_apps_loop(
            self._real_runtime, lambda: self.run_pending(phase=phase, only=only, exclude=exclude, limit=limit)
        )


def _task_specs(option: str, tasks: TaskSpec | Sequence[TaskSpec] | None) -> list[TaskSpec]:
    if tasks is None:
        return []
    specs = list(tasks) if isinstance(tasks, list | tuple) else [cast("TaskSpec", tasks)]
    for spec in specs:
        check_spec(f"run_pending({option}=...)", spec)
    return specs
