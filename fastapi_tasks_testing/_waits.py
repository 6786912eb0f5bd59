"""Waiting for tasks: what a client's call says when its tasks outlast the wait (run mode), and `drain()` and
`wait_for()` (for "spy" mode), with their sync twins."""

from __future__ import annotations

import threading
import time
from typing import Any, NoReturn

import anyio

from fastapi_tasks import TaskStatus

from ._assertions import RecordQueries
from ._engine import Call
from ._faults import check_spec
from ._matching import Expected, Predicate, TaskSpec, parse_status
from ._records import RequestInfo, TaskRecord
from ._sync import check_no_running_loop

__all__ = ["Waiting"]

_POLL = 0.002  # seconds between two looks at the records while waiting for tasks that run elsewhere
_pause = threading.Event()  # never set: its wait() is a pause that no signal handler cuts short
# How wait_for()'s timeout message says that a task reached a status.
_REACHED = {
    TaskStatus.PENDING: "been scheduled",
    TaskStatus.RUNNING: "started",
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "been cancelled",
    TaskStatus.DISCARDED: "been discarded",
    TaskStatus.DISPATCHED: "been dispatched",
}


class Waiting(RecordQueries):
    """The part of `RecordingScheduler` that waits for tasks to end or to reach a status."""

    # The recorder's state this part reads (set in `RecordingScheduler.__init__`).
    _records: list[TaskRecord]
    wait_timeout: float

    def _waited_too_long(self, call: Call, scope: Any) -> BaseException:
        """The error of a client call whose tasks are still unfinished once `wait_timeout` has passed."""
        request = RequestInfo.from_scope(scope)
        unfinished = sorted(
            (task for task in call.unfinished if isinstance(task, TaskRecord)), key=lambda record: record.seq
        )
        lines = "\n".join(
            f"- #{record.seq} {record.phase.value} {record.name!r} ({record.status.value}, from {record.request})"
            for record in unfinished
        )
        return AssertionError(
            f"tasks_recorder waited {self.wait_timeout:g} s after {request} returned for the tasks it started, "
            f"and {len(unfinished)} of them had not ended; they were cancelled:\n{lines}\n"
            "A task meant to outlive its request (a poller, say) can be let go: tasks_recorder.detach(task) "
            "(the call no longer waits for it), or kept from running: tasks_recorder.hold(task). To wait "
            "longer: @pytest.mark.tasks_recorder(wait_timeout=...) or the ini option fastapi_tasks_wait_timeout."
        )

    async def drain(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (the timeout is the point of drain)
        """Wait until every recorded task has ended (for "spy" mode, where tasks run concurrently).

        Raises:
            AssertionError: some tasks were still running after `timeout` seconds; the message
                names them and their phases.
        """
        __tracebackhide__ = True
        with anyio.move_on_after(timeout):
            while unfinished := self._unfinished():
                await unfinished[0].wait()
            return
        self._drain_timed_out(timeout, self._unfinished())

    def _unfinished(self) -> list[TaskRecord]:
        # A task handed to a task group stays "pending" until its body begins: it will end too, so wait
        # for it. A pending task never handed over (record mode) would wait forever: not for drain().
        return [
            r
            for r in self._records
            if r.status is TaskStatus.RUNNING or (r.status is TaskStatus.PENDING and r._handle is not None)
        ]

    def drain_sync(self, timeout: float = 5.0) -> None:
        """`drain()` for a sync test: wait until every recorded task has ended (tasks run in the app's thread).

        Raises:
            AssertionError: some tasks were still running after `timeout` seconds.
            RuntimeError: called inside an event loop, where `await drain()` is the way.
        """
        __tracebackhide__ = True
        check_no_running_loop("drain_sync", "drain")
        deadline = time.monotonic() + timeout
        while self._unfinished() and time.monotonic() < deadline:
            _pause.wait(_POLL)
        if still := self._unfinished():
            self._drain_timed_out(timeout, still)

    def _drain_timed_out(self, timeout: float, still: list[TaskRecord]) -> NoReturn:
        __tracebackhide__ = True
        names = "\n".join(f"- #{r.seq} {r.phase.value} {r.name}" for r in still)
        self._fail(f"drain() timed out after {timeout:g} s; still running:\n{names}", still)

    async def wait_for(
        self,
        task: TaskSpec,
        /,
        *,
        status: TaskStatus | str | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the timeout is the point of wait_for)
        where: Predicate | None = None,
    ) -> TaskRecord:
        """Wait until a task matching `task` reaches `status` (by default, until it has ended), for "spy" mode.

        A task reaches "running" when it starts (even if it has ended since), "pending" when it
        is scheduled; any other status is its final one.

        Parameters:
            task: the task's function or name.
            status: the status to wait for; `None`: any final status.
            timeout: seconds to wait.
            where: a predicate the record must satisfy.

        Returns:
            The first record that reached the status.

        Raises:
            AssertionError: no matching task reached it within `timeout` seconds; the message shows
                the timeline.
        """
        __tracebackhide__ = True
        expected, wanted = self._waited(task, status, where)
        # Records appear from any thread and their events belong to the app's event loop: poll.
        with anyio.move_on_after(timeout):
            while True:
                found = self._reached(expected, wanted)
                if found is not None:
                    return found
                await anyio.sleep(_POLL)
        self._wait_timed_out(expected, wanted, timeout)

    def wait_for_sync(
        self,
        task: TaskSpec,
        /,
        *,
        status: TaskStatus | str | None = None,
        timeout: float = 5.0,
        where: Predicate | None = None,
    ) -> TaskRecord:
        """`wait_for()` for a sync test (spy mode with `TestClient`: the tasks run in the client's thread)."""
        __tracebackhide__ = True
        check_no_running_loop("wait_for_sync", "wait_for")
        expected, wanted = self._waited(task, status, where)
        deadline = time.monotonic() + timeout
        while (found := self._reached(expected, wanted)) is None:
            if time.monotonic() >= deadline:
                self._wait_timed_out(expected, wanted, timeout)
            _pause.wait(_POLL)
        return found

    def _waited(
        self, task: TaskSpec, status: TaskStatus | str | None, where: Predicate | None
    ) -> tuple[Expected, TaskStatus | None]:
        check_spec("wait_for()", task)
        if where is not None and not callable(where):
            raise TypeError(f"where must be a function taking a record, not {where!r}")
        return Expected(task=task, where=where), parse_status(status)

    def _reached(self, expected: Expected, status: TaskStatus | None) -> TaskRecord | None:
        for record in self.records:
            if not expected.matches(record):
                continue
            if status is None:
                reached = record.status.ended
            elif status is TaskStatus.PENDING:
                reached = True
            elif status is TaskStatus.RUNNING:
                reached = record.status is not TaskStatus.PENDING and record.started_at is not None
            else:
                reached = record.status is status
            if reached:
                return record
        return None

    def _wait_timed_out(self, expected: Expected, status: TaskStatus | None, timeout: float) -> NoReturn:
        __tracebackhide__ = True
        reached = "ended" if status is None else _REACHED[status]
        self._fail(
            f"wait_for() timed out after {timeout:g} s: no {expected.label()} has {reached}.", self._focus(expected)
        )
