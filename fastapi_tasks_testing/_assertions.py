"""Assertions on what was scheduled: which tasks, with which arguments, how many times, in which order.

Every query and assertion takes the task (its function or its name), then optionally the
arguments it expects (written out, or as one `unittest.mock.call(...)`) and keyword options:
`phase=`, `partial=True` (only the given arguments must match), `where=` (a predicate over the
record); counting assertions take `times=`. See `_matching.py` for how arguments are compared,
`_queries.py` holds what they are built of, `_explain.py` what a failure adds to its message, and
`_outcomes.py` the assertions on how the tasks ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi_tasks import Phase

from ._explain import bullet, pair_up, times_text
from ._matching import Expected, Predicate, TaskSpec, matches_task, parse_phase, task_label
from ._outcomes import OutcomeAssertions
from ._queries import COUNT_OPTIONS, MATCH_OPTIONS, check_times
from ._records import TaskRecord
from ._timeline import were

if TYPE_CHECKING:
    from unittest.mock import _Call

__all__ = ["RecordQueries"]


class RecordQueries(OutcomeAssertions):
    """Queries and assertions over a list of records; the recorder and its views share them."""

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
        self._require_evidence("assert_nothing_scheduled")
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
        self._require_evidence("assert_order")
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
        self._require_evidence("assert_timeline")
        expectations = [self._timeline_item(item) for item in calls]
        records = self.records
        listed = "\n".join(f"{index}. {expected.label()}" for index, expected in enumerate(expectations, 1))
        order = "in any order" if any_order else "in this order"
        these = "this 1 task" if len(expectations) == 1 else f"these {len(expectations)} tasks"
        head = f"Expected exactly {these}, {order}:\n{listed}"
        if any_order:
            pairs = pair_up(expectations, records)
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
            self._fail(
                f"{head}\nbut {were(len(extra), 'more task')} recorded:\n" + "\n".join(map(bullet, extra)), extra
            )
        if len(records) < len(expectations):
            missing_text = "\n".join(
                f"{index}. {expected.label()}" for index, expected in enumerate(expectations, 1) if index > len(records)
            )
            self._fail(f"{head}\nbut only {were(len(records))} recorded; missing:\n{missing_text}")
        self._mark(records)
        return records

    def _timeline_item(self, item: TaskSpec | tuple[TaskSpec, _Call]) -> Expected:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError(f"assert_timeline() takes tasks and (task, call(...)) pairs, not {item!r}")
            task, expected_call = item
            return self._expect("assert_timeline", task, (expected_call,), {}, ())
        return Expected(task=item)
