"""Queries and assertions over recorded tasks, and the explanations of a mismatch.

Every query and assertion takes the task (its function or its name), then optionally the
arguments it expects (written out, or as one `unittest.mock.call(...)`) and keyword options:
`phase=`, `partial=True` (only the given arguments must match), `where=` (a predicate over the
record); counting assertions take `times=`. See `_matching.py` for how arguments are compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from fastapi_tasks import Phase, TaskStatus
from fastapi_tasks._seam import describe_exception

from ._matching import (
    Expected,
    Predicate,
    TaskSpec,
    did_you_mean,
    expect,
    matches_task,
    on_another_instance,
    parse_phase,
    task_label,
)
from ._records import TaskRecord
from ._timeline import format_call, outcome, render_timeline

if TYPE_CHECKING:
    from unittest.mock import _Call

__all__ = [
    "COUNT_OPTIONS",
    "MATCH_OPTIONS",
    "RecordQueries",
    "TaskSpec",
    "bullet",
    "check_times",
    "matches_task",
    "task_label",
    "times_text",
    "were",
]

MAX_TIMELINE_ROWS = 30
"""A failure message shows at most this many rows of the timeline: the ones the assertion is about first."""

# How a failure message says that a task reached a status: "to have succeeded", "to have been cancelled".
_PAST = {
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.CANCELLED: "been cancelled",
    TaskStatus.DISCARDED: "been discarded",
}
MATCH_OPTIONS = ("phase", "partial", "where")
"""The options of every query and assertion that takes a task's arguments."""
COUNT_OPTIONS = (*MATCH_OPTIONS, "times")
"""The options of the assertions that count."""


def given(**options: Any) -> dict[str, Any]:
    """The options a test set: those that are not their default (`None`, or `False` for `partial`)."""
    return {name: value for name, value in options.items() if value is not None and value is not False}


def bullet(record: TaskRecord) -> str:
    """`- #3 after_route audit('bob')`: one record in a list of a message."""
    return f"- #{record.seq} {record.phase.value} {format_call(record.name, record.args, record.kwargs)}"


def were(count: int) -> str:
    """`1 was`, `2 were`."""
    return f"{count} was" if count == 1 else f"{count} were"


def times_text(times: int) -> str:
    """`once`, `2 times`."""
    return "once" if times == 1 else f"{times} times"


def check_times(times: int | None, negative: str) -> None:
    """Refuse a `times=` that is not a positive whole number.

    Raises:
        TypeError: not an int.
        ValueError: zero or less; `negative` names the assertion to use for "none".
    """
    if times is None:
        return
    if isinstance(times, bool) or not isinstance(times, int):
        raise TypeError(f"times must be a whole number, not {times!r}")
    if times < 1:
        raise ValueError(f"times must be 1 or more, not {times!r}; to expect none, use {negative}().")


class RecordQueries:
    """Queries and assertions over a list of records; the recorder and its views share them."""

    @property
    def records(self) -> list[TaskRecord]:
        """The records in scope, in scheduling order."""
        raise NotImplementedError

    def _all_records(self) -> list[TaskRecord]:
        # What a failure message shows: the whole timeline, even from a narrowed view.
        return self.records

    def _scope_label(self) -> str:
        return ""

    def _install_hint(self) -> str:
        return ""

    def timeline(self) -> str:
        """The records as a text table, one line per task: number, phase, call, status, request."""
        return render_timeline(self.records)

    # --- building blocks -----------------------------------------------------------------------

    def _expect(
        self,
        method: str,
        task: TaskSpec | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        accepted: Sequence[str],
        times: int | None = None,
        **options: Any,
    ) -> Expected:
        __tracebackhide__ = True
        # `times` is no part of what is matched, but a task's own `times` parameter makes it ambiguous too.
        set_options = given(times=times, **options)
        return expect(method, task, args, kwargs, self.records, given=set_options, accepted=accepted, **options)

    def _fail(self, message: str, focus: Iterable[TaskRecord] = ()) -> NoReturn:
        __tracebackhide__ = True
        raise AssertionError(f"{message}{self._install_hint()}\n\n{self._timeline_section(list(focus))}")

    def _timeline_section(self, focus: list[TaskRecord]) -> str:
        mine = self.records
        label = self._scope_label()
        if not label:
            return "Recorded tasks:\n" + render_timeline(mine, focus=focus, max_rows=MAX_TIMELINE_ROWS)
        # A narrowed view lists its own records apart from the others.
        own = set(mine)
        others = [record for record in self._all_records() if record not in own]
        text = f"Recorded tasks{label}:\n" + render_timeline(mine, focus=focus, max_rows=MAX_TIMELINE_ROWS)
        if others:
            text += "\n\nOther recorded tasks:\n" + render_timeline(others, max_rows=MAX_TIMELINE_ROWS)
        return text

    def _candidates(self, expected: Expected, kind: str | None = None) -> list[TaskRecord]:
        """The records of the expected task, whatever their arguments, phase and status."""
        return [
            record
            for record in self.records
            if (expected.task is None or matches_task(record, expected.task)) and (kind is None or record.kind == kind)
        ]

    def _why_none(self, expected: Expected, kind: str | None = None) -> str:
        """What a message adds when nothing matches: the closest records, or why there are none."""
        candidates = self._candidates(expected, kind)
        if candidates:
            ranked = sorted(
                ((expected.differences(record), record) for record in candidates),
                key=lambda item: (len(item[0]), item[1].seq),
            )
            lines = ["Closest recorded tasks:"]
            for differences, record in ranked[:3]:
                lines.append(bullet(record))
                lines += [f"    {difference}" for difference in differences]
            return "\n" + "\n".join(lines)
        task = expected.task
        if isinstance(task, str):
            return did_you_mean(task, (record.name for record in self.records if kind is None or record.kind == kind))
        elsewhere = [record for record in self.records if task is not None and on_another_instance(record, task)]
        if task is not None and elsewhere:
            owner = type(getattr(task, "__self__", None)).__name__
            return (
                f"\nIts function was scheduled on another {owner} object than the one given:\n"
                + "\n".join(bullet(record) for record in elsewhere)
                + f"\nTo match {task_label(task)} on any {owner} object, assert on the function of the class: "
                f"{owner}.{getattr(task, '__name__', '')}."
            )
        return ""

    def _focus(self, expected: Expected, kind: str | None = None) -> list[TaskRecord]:
        task = expected.task
        return [
            record
            for record in self.records
            if (task is None or matches_task(record, task) or on_another_instance(record, task))
            and (kind is None or record.kind == kind)
        ]

    @staticmethod
    def _mark(records: Iterable[TaskRecord]) -> None:
        # Strict mode reports, at teardown, the records that no assertion matched.
        for record in records:
            record._recorder._asserted.add(record)

    # --- queries -------------------------------------------------------------------------------

    def filter(
        self,
        task: TaskSpec | None = None,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        status: TaskStatus | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        **kwargs: Any,
    ) -> list[TaskRecord]:
        """The records of `task` (a callable or a name; `None` for all) that match every option given.

        Parameters:
            task: the task's function or name; `None` for every task. The arguments after it
                (written out, or one `unittest.mock.call(...)`) are the ones it was scheduled
                with; without them any arguments match.
            phase: only this phase's records.
            status: only records with this status.
            partial: when true, only the given arguments must match.
            where: a predicate the record must satisfy.
        """
        expected = self._expect(
            "filter", task, args, kwargs, (*MATCH_OPTIONS, "status"),
            phase=phase, status=status, partial=partial, where=where,
        )  # fmt: skip
        return [record for record in self.records if expected.matches(record)]

    # --- what was scheduled --------------------------------------------------------------------

    def assert_scheduled(
        self,
        task: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        times: int | None = None,
        **kwargs: Any,
    ) -> TaskRecord:
        """Assert that `task` was scheduled (with these arguments, in this phase, ..., when given).

        Arguments are bound to the task's signature and compare with `==`, so `send(to="a@b.c")`
        matches `send("a@b.c")` and `unittest.mock.ANY` matches any value; without arguments any
        call matches. For a task with a parameter named like an option, pass its arguments as one
        `unittest.mock.call(...)`.

        Parameters:
            task: the task's function or name.
            phase: the phase it was scheduled in.
            partial: when true, only the given arguments must match.
            where: a predicate the record must satisfy.
            times: exactly this many tasks must match (by default, at least one).

        Returns:
            The first matching record.

        Raises:
            AssertionError: no task matches (or not `times` of them); the message shows the closest
                records and the timeline.
        """
        __tracebackhide__ = True
        check_times(times, "assert_not_scheduled")
        expected = self._expect(
            "assert_scheduled", task, args, kwargs, COUNT_OPTIONS, times, phase=phase, partial=partial, where=where
        )
        return self._assert_count(expected, times, "scheduled")

    def assert_scheduled_once(
        self,
        task: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        **kwargs: Any,
    ) -> TaskRecord:
        """Assert that exactly one scheduled task matches, as `assert_scheduled(..., times=1)` does.

        Returns:
            The matching record.
        """
        __tracebackhide__ = True
        expected = self._expect(
            "assert_scheduled_once", task, args, kwargs, MATCH_OPTIONS, phase=phase, partial=partial, where=where
        )
        return self._assert_count(expected, 1, "scheduled")

    def _assert_count(self, expected: Expected, times: int | None, verb: str, kind: str | None = None) -> TaskRecord:
        __tracebackhide__ = True
        found = [
            record for record in self.records if expected.matches(record) and (kind is None or record.kind == kind)
        ]
        noun = "dispatch" if kind == "dispatch" else "task"
        if times is None and found:
            self._mark(found)
            return found[0]
        if len(found) == times:
            self._mark(found)
            return found[0]
        wanted = f"Expected {expected.label()} to be {verb}"
        if times is not None:
            wanted += f" {times_text(times)}"
        if not found:
            detail = "none was." if times is not None else f"no {noun} matches."
            self._fail(f"{wanted}, but {detail}{self._why_none(expected, kind)}", self._focus(expected, kind))
        matches = "\n".join(bullet(record) for record in found)
        self._fail(f"{wanted}, but {were(len(found))}:\n{matches}", self._focus(expected, kind))

    def assert_not_scheduled(
        self,
        task: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        **kwargs: Any,
    ) -> None:
        """Assert that no scheduled task matches (`task`, with these arguments, in this phase, ..., when given).

        `assert_not_scheduled(send_push, "grace", partial=True)`: no push to "grace", whatever its
        other arguments.
        """
        __tracebackhide__ = True
        expected = self._expect(
            "assert_not_scheduled", task, args, kwargs, MATCH_OPTIONS, phase=phase, partial=partial, where=where
        )
        found = [record for record in self.records if expected.matches(record)]
        if found:
            listed = "\n".join(bullet(record) for record in found)
            self._fail(f"Expected {expected.label()} not to be scheduled, but it was:\n{listed}", found)

    def assert_nothing_scheduled(self, *, phase: Phase | str | None = None) -> None:
        """Assert that no task at all was scheduled (in `phase`, when given), nor any job dispatched."""
        __tracebackhide__ = True
        wanted = parse_phase(phase)
        found = [record for record in self.records if wanted is None or record.phase is wanted]
        if found:
            where = "" if wanted is None else f" in phase {wanted.value}"
            listed = "\n".join(bullet(record) for record in found)
            self._fail(f"Expected no task to be scheduled{where}, but {were(len(found))}:\n{listed}", found)

    def assert_order(self, *tasks: TaskSpec) -> None:
        """Assert that these tasks started running in this relative order.

        Each task is taken by its first run; a task named twice is taken by its first, then its
        second run: `assert_order(audit, send_email, audit)`.
        """
        __tracebackhide__ = True
        if len(tasks) < 2:
            raise TypeError("assert_order() needs at least two tasks to compare.")
        firsts: list[TaskRecord] = []
        for position, task in enumerate(tasks):
            ran = sorted(
                (record for record in self.records if matches_task(record, task) and record.order is not None),
                key=lambda record: (record.order or 0, record.seq),
            )
            occurrence = sum(1 for earlier in tasks[:position] if earlier == task)
            if len(ran) <= occurrence:
                times = "" if occurrence == 0 else f" {occurrence + 1} times"
                self._fail(
                    f"Expected {task_label(task)} to have run{times}, but it "
                    + ("did not." if not ran else f"ran {times_text(len(ran))}.")
                    + self._why_none(Expected(task)),
                    self._focus(Expected(task)),
                )
            firsts.append(ran[occurrence])
        orders = [record.order or 0 for record in firsts]
        if orders != sorted(orders):
            expected = " -> ".join(task_label(task) for task in tasks)
            actual = " -> ".join(
                task_label(task) for _, task in sorted(zip(orders, tasks, strict=True), key=lambda p: p[0])
            )
            self._fail(
                f"Expected the tasks to run in the order {expected}, but they ran in the order {actual}.", firsts
            )
        self._mark(firsts)

    def assert_timeline(self, *calls: TaskSpec | tuple[TaskSpec, _Call], any_order: bool = False) -> list[TaskRecord]:
        """Assert that exactly these tasks were recorded, in this scheduling order, and no other.

        Each item is a task (its function or name: any arguments), or a `(task, call(...))` pair
        for its arguments, as `unittest.mock.call` writes them (`ANY` works).

        Parameters:
            any_order: when true, the same tasks in any order pass too.

        Returns:
            The records, in the order of `calls`.
        """
        __tracebackhide__ = True
        if not calls:
            raise TypeError(
                "assert_timeline() needs the tasks to expect; to expect none, use assert_nothing_scheduled()."
            )
        expectations = [self._timeline_item(item) for item in calls]
        records = self.records
        listed = "\n".join(f"{index}. {expected.label()}" for index, expected in enumerate(expectations, 1))
        order = "in any order" if any_order else "in this order"
        head = f"Expected exactly these {len(expectations)} tasks, {order}:\n{listed}"
        if any_order:
            pairs = _pair_up(expectations, records)
            missing = [index for index, record in enumerate(pairs) if record is None]
            matched = [record for record in pairs if record is not None]
            extra = [record for record in records if record not in set(matched)]
            if not missing and not extra:
                self._mark(matched)
                return matched
            problems = [f"- no recorded task is {index + 1}. {expectations[index].label()}" for index in missing]
            problems += [f"{bullet(record)} was not expected" for record in extra]
            self._fail(f"{head}\nbut:\n" + "\n".join(problems), records)
        for index, (expected, record) in enumerate(zip(expectations, records, strict=False), 1):
            if not expected.matches(record):
                assert expected.task is not None
                if matches_task(record, expected.task):
                    differences = expected.differences(record)
                else:
                    differences = [f"it is not {task_label(expected.task)}"]
                detail = "\n".join(f"    {difference}" for difference in differences)
                self._fail(f"{head}\nbut task {index} is:\n{bullet(record)}\n{detail}", [record])
        if len(records) > len(expectations):
            extra = records[len(expectations) :]
            self._fail(f"{head}\nbut {len(extra)} more were recorded:\n" + "\n".join(map(bullet, extra)), extra)
        if len(records) < len(expectations):
            missing_text = "\n".join(
                f"{index}. {expected.label()}" for index, expected in enumerate(expectations, 1) if index > len(records)
            )
            self._fail(f"{head}\nbut only {len(records)} were recorded; missing:\n{missing_text}")
        self._mark(records)
        return records

    def _timeline_item(self, item: TaskSpec | tuple[TaskSpec, _Call]) -> Expected:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError(f"assert_timeline() takes tasks and (task, call(...)) pairs, not {item!r}")
            task, expected_call = item
            return self._expect("assert_timeline", task, (expected_call,), {}, ())
        return Expected(task=item)

    # --- how the tasks ended -------------------------------------------------------------------

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


def _pair_up(expectations: list[Expected], records: list[TaskRecord]) -> list[TaskRecord | None]:
    """A record for each expectation, each record used once (a bipartite matching), `None` where there is none."""
    owner: dict[int, int] = {}  # record index -> expectation index

    def place(index: int, seen: set[int]) -> bool:
        for position, record in enumerate(records):
            if position in seen or not expectations[index].matches(record):
                continue
            seen.add(position)
            if position not in owner or place(owner[position], seen):
                owner[position] = index
                return True
        return False

    for index in range(len(expectations)):
        place(index, set())
    paired: list[TaskRecord | None] = [None] * len(expectations)
    for position, index in owner.items():
        paired[index] = records[position]
    return paired
