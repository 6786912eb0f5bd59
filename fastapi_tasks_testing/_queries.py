"""The records a query looks at, and the building blocks every query and assertion is made of.

`QueryBase` holds what the recorder and its views share beneath their assertions: the records in
scope, building what an assertion looks for from its arguments (see `_matching.py`), failing
with the timeline (see `_explain.py`), marking what an assertion matched (for strict mode), and
`filter()`. The assertions are in `_assertions.py` (what was scheduled) and `_outcomes.py` (how
the tasks ended).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from fastapi_tasks import Phase, TaskStatus

from ._explain import records_about, timeline_section, why_none
from ._matching import Expected, Predicate, TaskSpec, expect
from ._records import TaskRecord
from ._timeline import render_timeline

__all__ = ["COUNT_OPTIONS", "MATCH_OPTIONS", "QueryBase", "check_times"]

MATCH_OPTIONS = ("phase", "partial", "where")
"""The options of every query and assertion that takes a task's arguments."""
COUNT_OPTIONS = (*MATCH_OPTIONS, "times")
"""The options of the assertions that count."""


def given(**options: Any) -> dict[str, Any]:
    """The options a test set: those that are not their default (`None`, or `False` for `partial`)."""
    return {name: value for name, value in options.items() if value is not None and value is not False}


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


class QueryBase:
    """The records in scope and the building blocks of the queries and assertions over them."""

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

    def _require_evidence(self, method: str) -> None:
        # The fixture's recorder refuses an assertion while it has seen no app (see _evidence.py).
        pass

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
        self._require_evidence(method)
        # `times` is no part of what is matched, but a task's own `times` parameter makes it ambiguous too.
        set_options = given(times=times, **options)
        return expect(method, task, args, kwargs, self.records, given=set_options, accepted=accepted, **options)

    def _fail(self, message: str, focus: Iterable[TaskRecord] = ()) -> NoReturn:
        __tracebackhide__ = True
        section = timeline_section(self.records, self._all_records(), self._scope_label(), list(focus))
        raise AssertionError(f"{message}{self._install_hint()}\n\n{section}")

    def _why_none(self, expected: Expected, kind: str | None = None) -> str:
        return why_none(self.records, expected, kind)

    def _focus(self, expected: Expected, kind: str | None = None) -> list[TaskRecord]:
        return records_about(self.records, expected, kind)

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
