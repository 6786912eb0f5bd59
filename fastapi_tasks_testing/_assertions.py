"""Queries and assertions over recorded tasks, and the explanations of a mismatch."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

from fastapi_tasks import Phase, TaskStatus

from ._records import TaskRecord
from ._timeline import format_call, outcome, render_timeline, short_repr

__all__ = ["RecordQueries", "TaskSpec", "matches_task", "task_label"]

TaskSpec: TypeAlias = "Callable[..., Any] | str"
"""A task, as the assertions take it: the function that was scheduled, or the task's name."""

# How a failure message says that a task reached a status: "to have succeeded", "to have been cancelled".
_PAST = {
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.CANCELLED: "been cancelled",
    TaskStatus.DISCARDED: "been discarded",
}


def _unwrap(func: Any) -> Any:
    while isinstance(func, functools.partial):
        func = func.func
    return func


def matches_task(record: TaskRecord, task: TaskSpec) -> bool:
    """Whether `record` is a run of `task` (a callable, or a task name)."""
    if isinstance(task, str):
        return record.name == task
    func = record.func
    if func is task or func == task:
        return True
    func, task = _unwrap(func), _unwrap(task)
    # A bound method also matches the function in its class: `Mailer.send` for `mailer.send`.
    return bool(func == task or (inspect.ismethod(func) and func.__func__ is task))


def task_label(task: TaskSpec) -> str:
    """How an assertion message names `task`."""
    if isinstance(task, str):
        return repr(task)
    return str(getattr(_unwrap(task), "__qualname__", repr(task)))


def _phase(phase: Phase | str | None) -> Phase | None:
    if phase is None or isinstance(phase, Phase):
        return phase
    try:
        return Phase(phase)
    except ValueError:
        names = ", ".join(repr(p.value) for p in Phase)
        raise ValueError(f"Unknown phase {phase!r}; use one of {names}.") from None


def _status(status: TaskStatus | str | None) -> TaskStatus | None:
    if status is None or isinstance(status, TaskStatus):
        return status
    try:
        return TaskStatus(status)
    except ValueError:
        names = ", ".join(repr(s.value) for s in TaskStatus)
        raise ValueError(f"Unknown status {status!r}; use one of {names}.") from None


def _argument_differences(record: TaskRecord, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    differences = []
    for index in range(max(len(args), len(record.args))):
        if index >= len(args):
            differences.append(f"unexpected argument {index + 1}: {short_repr(record.args[index])}")
        elif index >= len(record.args):
            differences.append(f"missing argument {index + 1}: expected {short_repr(args[index])}")
        elif args[index] != record.args[index]:
            differences.append(
                f"argument {index + 1}: expected {short_repr(args[index])}, got {short_repr(record.args[index])}"
            )
    for key in sorted(kwargs.keys() | record.kwargs.keys()):
        if key not in record.kwargs:
            differences.append(f"missing keyword argument {key}: expected {short_repr(kwargs[key])}")
        elif key not in kwargs:
            differences.append(f"unexpected keyword argument {key}={short_repr(record.kwargs[key])}")
        elif kwargs[key] != record.kwargs[key]:
            differences.append(
                f"keyword argument {key}: expected {short_repr(kwargs[key])}, got {short_repr(record.kwargs[key])}"
            )
    return differences


class RecordQueries:
    """Queries and assertions over a list of records; the recorder and its per-request views share them."""

    @property
    def records(self) -> list[TaskRecord]:
        """The records in scope, in scheduling order."""
        raise NotImplementedError

    def _all_records(self) -> list[TaskRecord]:
        # What a failure message shows: the whole timeline, even from a narrowed view.
        return self.records

    def _scope_label(self) -> str:
        return ""

    def timeline(self) -> str:
        """The records as a text table, one line per task: number, phase, call, status, request."""
        return render_timeline(self.records)

    def filter(
        self,
        task: TaskSpec | None = None,
        *,
        phase: Phase | str | None = None,
        status: TaskStatus | str | None = None,
    ) -> list[TaskRecord]:
        """The records of `task` (a callable or a name; `None` for all), optionally of one phase and status."""
        wanted_phase, wanted_status = _phase(phase), _status(status)
        return [
            record
            for record in self.records
            if (task is None or matches_task(record, task))
            and (wanted_phase is None or record.phase is wanted_phase)
            and (wanted_status is None or record.status is wanted_status)
        ]

    def _matching(
        self, task: TaskSpec, phase: Phase | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[TaskRecord]:
        any_args = not args and not kwargs
        return [
            record
            for record in self.filter(task, phase=phase)
            if any_args or (args == record.args and kwargs == record.kwargs)
        ]

    def _fail(self, message: str) -> NoReturn:
        __tracebackhide__ = True
        raise AssertionError(
            f"{message}\n\nRecorded tasks{self._scope_label()}:\n{render_timeline(self._all_records())}"
        )

    def _expected(self, task: TaskSpec, phase: Phase | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        call = task_label(task) if not args and not kwargs else format_call(task_label(task), args, kwargs)
        return call if phase is None else f"{call} in phase {phase.value}"

    def _closest(self, task: TaskSpec, phase: Phase | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        any_args = not args and not kwargs
        ranked: list[tuple[int, int, TaskRecord, list[str]]] = []
        for record in self.filter(task):
            differences = [] if any_args else _argument_differences(record, args, kwargs)
            if phase is not None and record.phase is not phase:
                differences.insert(0, f"phase: expected {phase.value}, got {record.phase.value}")
            ranked.append((len(differences), record.seq, record, differences))
        if not ranked:
            return ""
        ranked.sort(key=lambda item: (item[0], item[1]))
        lines = ["Closest recorded tasks:"]
        for _, _, record, differences in ranked[:3]:
            lines.append(f"- #{record.seq} {record.phase.value} {format_call(record.name, record.args, record.kwargs)}")
            lines += [f"    {difference}" for difference in differences]
        return "\n" + "\n".join(lines)

    def assert_scheduled(
        self, task: TaskSpec, /, *args: Any, phase: Phase | str | None = None, **kwargs: Any
    ) -> TaskRecord:
        """Assert that `task` was scheduled (with these arguments, in this phase, when given).

        Without arguments any call matches; arguments compare with `==`, so `unittest.mock.ANY` works.

        Returns:
            The first matching record.
        """
        __tracebackhide__ = True
        wanted = _phase(phase)
        found = self._matching(task, wanted, args, kwargs)
        if not found:
            self._fail(
                f"Expected {self._expected(task, wanted, args, kwargs)} to be scheduled, but no task matches."
                + self._closest(task, wanted, args, kwargs)
            )
        return found[0]

    def assert_scheduled_once(
        self, task: TaskSpec, /, *args: Any, phase: Phase | str | None = None, **kwargs: Any
    ) -> TaskRecord:
        """Assert that exactly one scheduled task matches, as in `assert_scheduled`.

        Returns:
            The matching record.
        """
        __tracebackhide__ = True
        wanted = _phase(phase)
        found = self._matching(task, wanted, args, kwargs)
        if len(found) != 1:
            if not found:
                detail = "none was." + self._closest(task, wanted, args, kwargs)
            else:
                detail = f"{len(found)} were: " + ", ".join(f"#{record.seq}" for record in found) + "."
            self._fail(f"Expected {self._expected(task, wanted, args, kwargs)} to be scheduled once, but {detail}")
        return found[0]

    def assert_not_scheduled(self, task: TaskSpec, /, *, phase: Phase | str | None = None) -> None:
        """Assert that `task` was not scheduled (in `phase`, when given)."""
        __tracebackhide__ = True
        wanted = _phase(phase)
        found = self.filter(task, phase=wanted)
        if found:
            numbers = ", ".join(f"#{record.seq}" for record in found)
            self._fail(f"Expected {self._expected(task, wanted, (), {})} not to be scheduled, but it was: {numbers}.")

    def assert_order(self, *tasks: TaskSpec) -> None:
        """Assert that these tasks started running in this relative order (each by its first run)."""
        __tracebackhide__ = True
        if len(tasks) < 2:
            raise TypeError("assert_order() needs at least two tasks to compare.")
        orders = []
        for task in tasks:
            ran = sorted((record.order, record.seq) for record in self.filter(task) if record.order is not None)
            if not ran:
                self._fail(f"Expected {task_label(task)} to have run, but it did not.")
            orders.append(ran[0][0])
        if orders != sorted(orders):
            expected = " -> ".join(task_label(task) for task in tasks)
            actual = " -> ".join(
                task_label(task) for _, task in sorted(zip(orders, tasks, strict=True), key=lambda p: p[0])
            )
            self._fail(f"Expected the tasks to run in the order {expected}, but they ran in the order {actual}.")

    def _one_outcome(
        self, task: TaskSpec, status: TaskStatus, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskRecord:
        __tracebackhide__ = True
        candidates = self._matching(task, None, args, kwargs)
        if not candidates:
            self._fail(
                f"Expected {self._expected(task, None, args, kwargs)} to have {_PAST[status]}, but no task matches."
                + self._closest(task, None, args, kwargs)
            )
        for record in candidates:
            if record.status is status:
                return record
        seen = ", ".join(f"#{record.seq} {outcome(record)}" for record in candidates)
        self._fail(f"Expected {self._expected(task, None, args, kwargs)} to have {_PAST[status]}, but: {seen}.")

    def assert_succeeded(self, task: TaskSpec, /, *args: Any, **kwargs: Any) -> TaskRecord:
        """Assert that a matching task ran and returned.

        Returns:
            The record; its `result` is the value the task returned.
        """
        __tracebackhide__ = True
        return self._one_outcome(task, TaskStatus.SUCCEEDED, args, kwargs)

    def assert_failed(
        self,
        task: TaskSpec,
        /,
        exc_type: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        match: str | re.Pattern[str] | None = None,
    ) -> TaskRecord:
        """Assert that `task` raised (an `exc_type` whose message matches the `match` regex, when given).

        A failure asserted on is not reported again at teardown.

        Returns:
            The record; its `exception` is what the task raised.
        """
        __tracebackhide__ = True
        failed = [record for record in self.filter(task) if record.status is TaskStatus.FAILED]
        for record in failed:
            exc = record.exception
            if exc_type is not None and not isinstance(exc, exc_type):
                continue
            if match is not None and not re.search(match, str(exc)):
                continue
            record.handled = True
            return record
        wanted = task_label(task)
        if exc_type is not None:
            names = exc_type if isinstance(exc_type, tuple) else (exc_type,)
            wanted += " with " + " or ".join(name.__name__ for name in names)
        if match is not None:
            wanted += f" matching {getattr(match, 'pattern', match)!r}"
        if not self.filter(task):
            self._fail(f"Expected {wanted} to have failed, but it was not scheduled.")
        seen = ", ".join(f"#{record.seq} {outcome(record)}" for record in self.filter(task))
        self._fail(f"Expected {wanted} to have failed, but: {seen}.")

    def assert_cancelled(self, task: TaskSpec, /, *args: Any, **kwargs: Any) -> TaskRecord:
        """Assert that a matching task was cancelled (at shutdown) before it ended."""
        __tracebackhide__ = True
        return self._one_outcome(task, TaskStatus.CANCELLED, args, kwargs)

    def assert_discarded(self, task: TaskSpec, /, *args: Any, **kwargs: Any) -> TaskRecord:
        """Assert that a matching task was discarded because its endpoint raised."""
        __tracebackhide__ = True
        return self._one_outcome(task, TaskStatus.DISCARDED, args, kwargs)

    def assert_error_handled(
        self, task: TaskSpec, /, exc_type: type[BaseException] | tuple[type[BaseException], ...] | None = None
    ) -> tuple[Any, Exception]:
        """Assert that `task`'s `on_error` handler was called with the task and the exception it raised.

        Returns:
            The `(task, exception)` the handler received.
        """
        __tracebackhide__ = True
        record = self.assert_failed(task, exc_type)
        for handled_task, exc in record.on_error_calls:
            if handled_task is record and exc is record.exception:
                return handled_task, exc
        if record.on_error is None:
            self._fail(f"Expected the on_error handler of {task_label(task)} to be called, but it has no on_error.")
        self._fail(f"Expected the on_error handler of {task_label(task)} to be called, but it was not.")
