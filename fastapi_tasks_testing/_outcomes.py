"""Assertions on how the recorded tasks ended: succeeded, failed, cancelled, discarded, their `on_error` handlers."""

from __future__ import annotations

import re
from typing import Any

from fastapi_tasks import Phase, TaskStatus
from fastapi_tasks._seam import describe_exception

from ._matching import Predicate, TaskSpec, task_label
from ._queries import MATCH_OPTIONS, QueryBase
from ._records import TaskRecord
from ._timeline import outcome

__all__ = ["OutcomeAssertions"]

# How a failure message says that a task reached a status: "to have succeeded", "to have been cancelled".
_PAST = {
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.CANCELLED: "been cancelled",
    TaskStatus.DISCARDED: "been discarded",
}


class OutcomeAssertions(QueryBase):
    """Assertions on how the tasks ended; part of `RecordQueries`."""

    def _one_outcome(
        self,
        method: str,
        task: TaskSpec,
        status: TaskStatus,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        **options: Any,
    ) -> TaskRecord:
        __tracebackhide__ = True
        expected = self._expect(method, task, args, kwargs, MATCH_OPTIONS, **options)
        candidates = [record for record in self.records if expected.matches(record)]
        label = expected.label()
        if not candidates:
            self._fail(
                f"Expected {label} to have {_PAST[status]}, but no task matches." + self._why_none(expected),
                self._focus(expected),
            )
        for record in candidates:
            if record.status is status:
                self._mark([record])
                return record
        seen = ", ".join(f"#{record.seq} {outcome(record)}" for record in candidates)
        self._fail(f"Expected {label} to have {_PAST[status]}, but: {seen}.", candidates)

    def assert_succeeded(
        self,
        task: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        **kwargs: Any,
    ) -> TaskRecord:
        """Assert that a matching task ran and returned.

        Returns:
            The record; its `result` is the value the task returned.
        """
        __tracebackhide__ = True
        return self._one_outcome(
            "assert_succeeded", task, TaskStatus.SUCCEEDED, args, kwargs, phase=phase, partial=partial, where=where
        )

    def assert_failed(
        self,
        task: TaskSpec,
        /,
        exc_type: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        match: str | re.Pattern[str] | None = None,
        *,
        phase: Phase | str | None = None,
        where: Predicate | None = None,
    ) -> TaskRecord:
        """Assert that `task` raised (an `exc_type` whose message matches the `match` regex, when given).

        A failure asserted on is not reported again at teardown.

        Returns:
            The record; its `exception` is what the task raised.
        """
        __tracebackhide__ = True
        expected = self._expect("assert_failed", task, (), {}, MATCH_OPTIONS, phase=phase, where=where)
        runs = [record for record in self.records if expected.matches(record)]
        for record in runs:
            exc = record.exception
            if record.status is not TaskStatus.FAILED:
                continue
            if exc_type is not None and not isinstance(exc, exc_type):
                continue
            if match is not None and not re.search(match, str(exc)):
                continue
            record.handled = True
            self._mark([record])
            return record
        wanted = expected.label()
        if exc_type is not None:
            names = exc_type if isinstance(exc_type, tuple) else (exc_type,)
            wanted += " with " + " or ".join(name.__name__ for name in names)
        if match is not None:
            wanted += f" matching {getattr(match, 'pattern', match)!r}"
        if not runs:
            self._fail(
                f"Expected {wanted} to have failed, but it was not scheduled." + self._why_none(expected),
                self._focus(expected),
            )
        seen = ", ".join(f"#{record.seq} {outcome(record)}" for record in runs)
        self._fail(f"Expected {wanted} to have failed, but: {seen}.", runs)

    def assert_cancelled(
        self,
        task: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        **kwargs: Any,
    ) -> TaskRecord:
        """Assert that a matching task was cancelled (at shutdown) before it ended."""
        __tracebackhide__ = True
        return self._one_outcome(
            "assert_cancelled", task, TaskStatus.CANCELLED, args, kwargs, phase=phase, partial=partial, where=where
        )

    def assert_discarded(
        self,
        task: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        **kwargs: Any,
    ) -> TaskRecord:
        """Assert that a matching task was discarded because its endpoint raised."""
        __tracebackhide__ = True
        return self._one_outcome(
            "assert_discarded", task, TaskStatus.DISCARDED, args, kwargs, phase=phase, partial=partial, where=where
        )

    def assert_error_handled(
        self,
        task: TaskSpec,
        /,
        exc_type: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        *,
        phase: Phase | str | None = None,
        where: Predicate | None = None,
    ) -> tuple[Any, BaseException]:
        """Assert that `task`'s `on_error` handler was called with the task and the exception it raised.

        Returns:
            The `(task, exception)` the handler received.
        """
        __tracebackhide__ = True
        record = self.assert_failed(task, exc_type, phase=phase, where=where)
        for handled_task, exc in record.on_error_calls:
            if handled_task is record and exc is record.exception:
                if record.handler_exception is not None:
                    self._fail(
                        f"Expected the on_error handler of {task_label(task)} to handle the failure, but the "
                        f"handler itself raised {describe_exception(record.handler_exception)} "
                        "(production logs it and goes on).",
                        [record],
                    )
                return handled_task, exc
        if record.on_error is None:
            self._fail(
                f"Expected the on_error handler of {task_label(task)} to be called, but it has no on_error.", [record]
            )
        self._fail(f"Expected the on_error handler of {task_label(task)} to be called, but it was not.", [record])

    def assert_handler_failed(
        self,
        task: TaskSpec,
        /,
        exc_type: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        *,
        phase: Phase | str | None = None,
        where: Predicate | None = None,
    ) -> BaseException:
        """Assert that `task` failed and that its `on_error` handler itself raised (an `exc_type`, if given).

        Production logs and contains what a handler raises; the plugin reports it at teardown
        unless a test asserts on it with this method.

        Returns:
            What the handler raised.
        """
        __tracebackhide__ = True
        record = self.assert_failed(task, phase=phase, where=where)
        raised = record.handler_exception
        if raised is None:
            handler = "it has no on_error" if record.on_error is None else "its on_error handler returned"
            self._fail(f"Expected the on_error handler of {task_label(task)} to raise, but {handler}.", [record])
        if exc_type is not None and not isinstance(raised, exc_type):
            self._fail(
                f"Expected the on_error handler of {task_label(task)} to raise {_type_names(exc_type)}, "
                f"but it raised {describe_exception(raised)}.",
                [record],
            )
        record.handler_asserted = True
        return raised


def _type_names(exc_type: type[BaseException] | tuple[type[BaseException], ...]) -> str:
    types = exc_type if isinstance(exc_type, tuple) else (exc_type,)
    return " or ".join(t.__name__ for t in types)
