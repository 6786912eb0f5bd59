"""Faults a test injects: a task that raises or runs a fake instead, a dispatch the broker refuses.

Each `fail()`, `replace()` and `fail_dispatch()` of a recorder makes a `Fault`, which applies to
the matching runs (all of them, the first `times`, or those its `where=` predicate accepts) and
counts them. A fault that applied to nothing by the end of the test is reported at teardown: a
mistyped task name must not pass silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ._matching import Predicate, TaskSpec, did_you_mean, matches_task, task_label
from ._timeline import counted, short_repr

if TYPE_CHECKING:
    from ._records import TaskRecord

__all__ = [
    "Fault",
    "FaultInjection",
    "FaultKind",
    "check_exception",
    "check_spec",
    "unused_faults_report",
    "unused_holds_report",
]

FaultKind: TypeAlias = Literal["fail", "replace", "fail_dispatch"]
"""Which recorder method made a fault."""


def check_spec(caller: str, task: object) -> None:
    """Refuse a task that is neither a callable nor a name; `caller` is how the message names the call: `hold()`.

    Raises:
        TypeError: it is neither.
    """
    if not (isinstance(task, str) or callable(task)):
        raise TypeError(f"{caller} takes a task as its function or its name, not {task!r}")


def check_exception(method: str, exc: object) -> None:
    """Refuse something that cannot be raised.

    Raises:
        TypeError: `exc` is neither an exception instance nor an exception class.
    """
    if not (isinstance(exc, BaseException) or (isinstance(exc, type) and issubclass(exc, BaseException))):
        raise TypeError(f"{method}() needs an exception instance or class to raise, not {exc!r}")


class Fault:
    """One fault a test injected with `fail()`, `replace()` or `fail_dispatch()`, and the runs it applied to.

    Attributes:
        kind: "fail", "replace" or "fail_dispatch".
        task: the task (or job) it applies to, as a function or a name.
        times: how many runs it applies to; `None`: every matching run.
        where: a predicate over the record that a run must satisfy, or `None`.
        optional: whether it may apply to no run without failing the test at teardown.
        records: the records of the runs it applied to, in order.
    """

    __slots__ = ("_action", "kind", "optional", "records", "task", "times", "where")

    def __init__(
        self,
        kind: FaultKind,
        task: TaskSpec,
        action: BaseException | type[BaseException] | Callable[..., Any],
        *,
        times: int | None = None,
        where: Predicate | None = None,
        optional: bool = False,
    ) -> None:
        check_spec(f"{kind}()", task)
        if not isinstance(optional, bool):
            raise TypeError(f"{kind}() takes optional=True or False, not {optional!r}")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError(f"{kind}() takes times=None (every run) or a number of runs from 1, not {times!r}")
        if where is not None and not callable(where):
            raise TypeError(f"{kind}() takes where= as a function of the record, not {where!r}")
        self.kind: FaultKind = kind
        self.task = task
        self.times = times
        self.where = where
        self.optional = optional
        self.records: list[TaskRecord] = []
        self._action = action

    def __repr__(self) -> str:
        limit = "every time" if self.times is None else f"of {self.times}"
        return f"<Fault {self.describe()}: applied {self.used} {limit}>"

    @property
    def used(self) -> int:
        """How many runs it applied to."""
        return len(self.records)

    def describe(self) -> str:
        """The call that made it, as the test wrote it: `fail('charge', RuntimeError('declined'), times=1)`."""
        parts = [task_label(self.task), short_repr(self._action)]
        if self.times is not None:
            parts.append(f"times={self.times}")
        if self.where is not None:
            parts.append(f"where={getattr(self.where, '__name__', None) or short_repr(self.where)}")
        return f"{self.kind}({', '.join(parts)})"

    def applies_to(self, record: TaskRecord) -> bool:
        """Whether it applies to this run of `record` (and has runs left)."""
        if self.times is not None and self.used >= self.times:
            return False
        return matches_task(record, self.task) and (self.where is None or bool(self.where(record)))

    def target(self, record: TaskRecord) -> Callable[..., Any]:
        """Apply it to `record`: count the run, and return what runs instead of the task's function."""
        self.records.append(record)
        action = self._action
        if self.kind == "replace":
            assert callable(action)
            return action
        # An injected failure is expected: the teardown report of failed tasks leaves it out.
        record.handled = True

        def raise_injected(*args: Any, **kwargs: Any) -> Any:
            raise self.exception()

        return raise_injected

    def exception(self) -> BaseException:
        """The exception to raise: the instance given, or a new one of the class given."""
        action = self._action
        return action() if isinstance(action, type) else action  # type: ignore[return-value]


def unused_faults_report(faults: Iterable[Fault], records: Iterable[TaskRecord]) -> str | None:
    """The teardown report of the faults that applied to no run, or `None` when every one did."""
    unused = [fault for fault in faults if not fault.records and not fault.optional]
    if not unused:
        return None
    names = [record.name for record in records]
    lines = [f"{counted(len(unused), 'fault')} injected by the test applied to no task:"]
    for fault in unused:
        lines.append(f"- tasks_recorder.{fault.describe()} matched no run.{_name_hint(fault.task, names)}")
    lines.append(
        "Check the task's name or function and the where= condition; a fault that may apply to nothing "
        "takes optional=True."
    )
    return "\n".join(lines)


def unused_holds_report(held: Iterable[TaskSpec], records: Iterable[TaskRecord]) -> str | None:
    """The teardown report of the tasks `hold()` was given that matched no recorded task, or `None`."""
    records = list(records)
    unused = [task for task in held if not any(matches_task(record, task) for record in records)]
    if not unused:
        return None
    names = [record.name for record in records]
    lines = [f"{counted(len(unused), 'task')} given to hold() matched no recorded task:"]
    lines += [f"- tasks_recorder.hold({task_label(task)}) held nothing.{_name_hint(task, names)}" for task in unused]
    lines.append("Check the task's name or function: a hold() that matches no task keeps nothing pending.")
    return "\n".join(lines)


def _name_hint(task: TaskSpec, names: list[str]) -> str:
    # A mistyped name gets the closest recorded one; a function that matched nothing gets no guess.
    return did_you_mean(task, names) if isinstance(task, str) else ""


class FaultInjection:
    """The part of `RecordingScheduler` that makes tasks fail, or runs fakes in their place."""

    # The recorder's state this part reads and writes (set in `RecordingScheduler.__init__`).
    _faults: list[Fault]

    def fail(
        self,
        task: TaskSpec,
        exc: BaseException | type[BaseException],
        *,
        times: int | None = None,
        where: Predicate | None = None,
        optional: bool = False,
    ) -> Fault:
        """Make the matching runs of `task` raise `exc` instead of running, so its `on_error` is tested for real.

        These failures are expected: the plugin does not report them at teardown. A fault that
        applies to no run by the end of the test fails it at teardown (a mistyped name, say).

        Parameters:
            task: the task's function or name.
            exc: the exception (instance or class) to raise.
            times: fail only the first `times` matching runs, then let the task run: "fails once,
                then the retry succeeds" is `times=1`. By default every run fails.
            where: fail only the runs whose record satisfies this predicate.
            optional: when true, the fault may apply to no run (in some cases of a parametrized test).

        Returns:
            The fault; its `records` are the runs it applied to.
        """
        check_exception("fail", exc)
        fault = Fault("fail", task, exc, times=times, where=where, optional=optional)
        self._faults.append(fault)
        return fault

    def replace(
        self,
        task: TaskSpec,
        fake: Callable[..., Any],
        *,
        times: int | None = None,
        where: Predicate | None = None,
        optional: bool = False,
    ) -> Fault:
        """Run `fake` with the same arguments instead of the matching runs of `task`.

        Parameters:
            task: the task's function or name.
            fake: what runs instead, with the task's arguments.
            times: replace only the first `times` matching runs; by default every one.
            where: replace only the runs whose record satisfies this predicate.
            optional: when true, the replacement may apply to no run.

        Returns:
            The fault; its `records` are the runs it applied to.
        """
        if not callable(fake):
            raise TypeError(f"replace() needs a callable to run instead, not {fake!r}")
        fault = Fault("replace", task, fake, times=times, where=where, optional=optional)
        self._faults.append(fault)
        return fault

    def _target_for(self, record: TaskRecord) -> Callable[..., Any]:
        for fault in reversed(self._faults):
            if fault.kind != "fail_dispatch" and fault.applies_to(record):
                return fault.target(record)
        return record.func
