"""What an assertion looks for, and how a record differs from it.

A test names a task by its function or its name, and may give the arguments it expects, its
phase, a `where=` predicate over the record, and `partial=True` to compare only the arguments it
gives. Expected and recorded arguments are both bound to the signature of the function that was
scheduled before they are compared (see `_arguments.py`), so `send(to="a@b.c")` matches a task
scheduled as `send("a@b.c")`, and a difference names the parameter.

The assertions' options (`phase`, `partial`, `where`, `times`, `status`) are keywords too; for a
task whose own parameters are named like them, the expected arguments are passed as one
`unittest.mock.call(...)`, and a keyword that could be either is refused.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias
from unittest import mock

from fastapi_tasks import Phase, TaskStatus

from ._arguments import argument_differences, fits, function_name, same_call, signature_of
from ._signatures import callable_signature, plain_signature
from ._timeline import format_call

if TYPE_CHECKING:
    from ._records import TaskRecord

__all__ = [
    "OPTIONS",
    "Expected",
    "Predicate",
    "TaskSpec",
    "did_you_mean",
    "expect",
    "matches_task",
    "on_another_instance",
    "parse_phase",
    "parse_status",
    "task_label",
]

TaskSpec: TypeAlias = "Callable[..., Any] | str"
"""A task, as the assertions take it: the function that was scheduled, or the task's name."""

Predicate: TypeAlias = "Callable[[TaskRecord], object]"
"""A `where=` predicate: called with a record, true when it matches."""

_VAR = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)  # no argument is passed by their name
OPTIONS = ("phase", "partial", "where", "times", "status")
"""Keyword options of the queries and assertions, which a task's own keyword arguments can shadow."""

_Call = type(mock.call)
_PHASES = {phase.value: phase for phase in Phase}


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
    # _unwrap() and inspect.ismethod(), inline: most records a query looks at are of other tasks.
    while isinstance(func, functools.partial):
        func = func.func
    while isinstance(task, functools.partial):
        task = task.func
    # A bound method also matches the function in its class: `Mailer.send` for `mailer.send`.
    return bool(func == task or (isinstance(func, types.MethodType) and func.__func__ is task))


def on_another_instance(record: TaskRecord, task: TaskSpec) -> bool:
    """Whether `record` runs the method `task` is bound to, but on another object."""
    func, wanted = _unwrap(record.func), _unwrap(task)
    return (
        inspect.ismethod(func)
        and inspect.ismethod(wanted)
        and func.__func__ is wanted.__func__
        and func.__self__ is not wanted.__self__
    )


def task_label(task: TaskSpec) -> str:
    """How an assertion message names `task`."""
    if isinstance(task, str):
        return repr(task)
    return str(getattr(_unwrap(task), "__qualname__", repr(task)))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` Did you mean 'x'?` for the known name closest to `name`, or nothing when none is close.

    A task's name is its function's qualified name: a nested function's short name
    (`send` for `signup.<locals>.send`, `send_emial` for `Mailer.send_email`) finds it too.
    """
    names = sorted(set(known) - {name})
    by_short_name: dict[str, str] = {}
    for known_name in names:
        by_short_name.setdefault(known_name.rpartition(".")[2], known_name)
    short = name.rpartition(".")[2]
    if short in by_short_name:
        return f" Did you mean {by_short_name[short]!r}?"
    close = difflib.get_close_matches(name, names, n=1)
    if not close:
        close = [by_short_name[match] for match in difflib.get_close_matches(short, sorted(by_short_name), n=1)]
    return f" Did you mean {close[0]!r}?" if close else ""


def parse_phase(phase: Phase | str | None) -> Phase | None:
    """`phase` as a `Phase`.

    Raises:
        ValueError: an unknown phase name.
    """
    if phase is None or isinstance(phase, Phase):
        return phase
    if type(phase) is str and phase in _PHASES:  # a phase's name, as tests write it: without the Enum's lookup
        return _PHASES[phase]
    try:
        return Phase(phase)
    except ValueError:
        names = ", ".join(repr(p.value) for p in Phase)
        raise ValueError(f"Unknown phase {phase!r}; use one of {names}.") from None


def parse_status(status: TaskStatus | str | None) -> TaskStatus | None:
    """`status` as a `TaskStatus`.

    Raises:
        ValueError: an unknown status name.
    """
    if status is None or isinstance(status, TaskStatus):
        return status
    try:
        return TaskStatus(status)
    except ValueError:
        names = ", ".join(repr(s.value) for s in TaskStatus)
        raise ValueError(f"Unknown status {status!r}; use one of {names}.") from None


@dataclass(frozen=True, eq=False)
class Expected:
    """What a query or an assertion looks for: every part that is given must match."""

    task: TaskSpec | None = None
    args: tuple[Any, ...] | None = None  # None: any arguments
    kwargs: dict[str, Any] = field(default_factory=dict)
    phase: Phase | None = None
    status: TaskStatus | None = None
    partial: bool = False
    where: Predicate | None = None

    # --- matching ------------------------------------------------------------------------------

    def matches(self, record: TaskRecord) -> bool:
        """Whether `record` is what is looked for."""
        return (
            (self.task is None or matches_task(record, self.task))
            and (self.phase is None or record.phase is self.phase)
            and (self.status is None or record.status is self.status)
            # Written as it was scheduled (same_call), the call has no argument difference to look for.
            and (
                self.args is None or same_call(record, self.args, self.kwargs) or not self.argument_differences(record)
            )
            and (self.where is None or bool(self.where(record)))
        )

    def differences(self, record: TaskRecord) -> list[str]:
        """What differs between `record` (a run of the task) and what is looked for, one line each."""
        differences = []
        if self.phase is not None and record.phase is not self.phase:
            differences.append(f"phase: expected {self.phase.value}, got {record.phase.value}")
        differences += self.argument_differences(record)
        if self.where is not None and not self.where(record):
            differences.append(f"where: {_predicate_label(self.where)} is false for it")
        return differences

    def argument_differences(self, record: TaskRecord) -> list[str]:
        """How `record`'s arguments differ from the expected ones, parameter by parameter."""
        if self.args is None:
            return []
        return argument_differences(record, self.args, self.kwargs, partial=self.partial)

    def may_fit(self, record: TaskRecord) -> bool:
        """Whether the expected arguments fit `record`'s function, or whether they do is unknown (see `fits`)."""
        if self.args is not None and len(self.args) == len(record.args) and self.kwargs.keys() == record.kwargs.keys():
            # Shaped like the recorded call: they bind wherever it binds, and where it does not, it is unknown.
            return True
        fit = self.fits(record)
        return fit is None or fit

    def fits(self, record: TaskRecord) -> bool | None:
        """Whether the expected arguments can be passed to `record`'s function (`None`: unknown).

        Unknown too when the recorded arguments do not fit either: the app scheduled a call that
        will fail, and a test may expect exactly that call.
        """
        if self.args is None:
            return True
        return fits(record, self.args, self.kwargs, partial=self.partial)

    # --- describing ----------------------------------------------------------------------------

    def label(self, name: str | None = None) -> str:
        """The task and its expected call, as a message names them: `send('a@b.c', ...) in phase immediate`.

        `name` names the task instead of its label (a job's name in its queue, say).
        """
        if name is None:
            name = "a task" if self.task is None else task_label(self.task)
        if self.args is not None:
            call = format_call(name, self.args, self.kwargs)
            name = call[:-1] + (", ...)" if self.args or self.kwargs else "...)") if self.partial else call
        if self.phase is not None:
            name += f" in phase {self.phase.value}"
        if self.where is not None:
            name += f" where {_predicate_label(self.where)}"
        return name


def _predicate_label(where: Callable[..., object]) -> str:
    return str(getattr(where, "__name__", None) or repr(where))


def _parameter_names(task: TaskSpec | None, records: Sequence[TaskRecord], among: Iterable[str]) -> set[str]:
    """The names in `among` that name a parameter of the task (of `task`, or of the functions of `records`)."""
    among = set(among)
    if not among:
        return among  # nothing to look up: no signature is needed
    # Each signature once, by identity (held here, so that no two share an id).
    signatures: dict[int, inspect.Signature] = {}
    if task is not None and not isinstance(task, str):
        signature = callable_signature(task)
        if signature is not None:
            signatures[id(signature)] = signature
    seen: set[tuple[int, str]] = set()  # the records of one function share its signature
    for record in records:
        key = (id(record.func), record.kind)
        if key not in seen:
            seen.add(key)
            signature = signature_of(record)
            if signature is not None:
                signatures[id(signature)] = signature
    names: set[str] = set()
    for signature in signatures.values():
        parameters = signature.parameters
        for name in among:
            parameter = parameters.get(name)
            if parameter is not None and parameter.kind not in _VAR:
                names.add(name)
    return names


def expect(
    method: str,
    task: TaskSpec | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    records: Sequence[TaskRecord],
    *,
    given: dict[str, Any],
    accepted: Sequence[str],
    phase: Phase | str | None = None,
    status: TaskStatus | str | None = None,
    partial: bool = False,
    where: Predicate | None = None,
) -> Expected:
    """Build what `method` looks for from the arguments it was called with.

    `args` and `kwargs` are the expected arguments as the test wrote them, or one
    `unittest.mock.call(...)`; `records` are the records the test may mean (to learn the task's
    parameters); `given` holds the options the test set, `accepted` names the options `method` has.

    Raises:
        TypeError: an ambiguous or impossible expectation (see the messages).
        ValueError: an unknown phase or status.
    """
    __tracebackhide__ = True
    if not isinstance(partial, bool):
        raise TypeError(f"partial must be True or False, not {partial!r}")
    if where is not None and not callable(where):
        raise TypeError(f"where must be a function taking a record, not {where!r}")
    candidates = [record for record in records if task is None or matches_task(record, task)]
    as_call = len(args) == 1 and isinstance(args[0], _Call)
    if as_call:
        expected_call = args[0]
        if kwargs:
            raise TypeError(
                f"{method}() got the expected call {expected_call!r} and the keyword arguments "
                f"{', '.join(map(repr, kwargs))} besides it: put every argument of the task inside call(...)."
            )
        if isinstance(expected_call[0], str) and expected_call[0]:  # call.send(...): a call of a mock's method
            raise TypeError(
                f"{method}() takes the expected arguments as call(...), not {expected_call!r}: "
                "the task is its first argument."
            )
        args, kwargs = tuple(expected_call.args), dict(expected_call.kwargs)
    else:
        for arg in args:
            if isinstance(arg, _Call):
                raise TypeError(
                    f"{method}() takes the expected arguments either as one call(...) or written out, not both."
                )
        # Only the options the test wrote can be ambiguous with the task's parameters: look those up.
        written = [*given, *(option for option in OPTIONS if option in kwargs)] if kwargs else given
        parameters = _parameter_names(task, candidates, written)
        for option, value in given.items():
            if option in parameters:
                name = "the task" if task is None else task_label(task)
                meant = format_call("call", args, {**kwargs, option: value})
                raise TypeError(
                    f"{method}() got {option}={value!r}, which is ambiguous: {name} has a parameter named "
                    f"{option!r} too. To expect that argument, pass the arguments as one call: "
                    f"{method}({name}, {meant}); the options go beside the call."
                )
        for option in OPTIONS:
            if option in kwargs and option not in accepted and option not in parameters:
                raise TypeError(
                    f"{method}() has no {option}= option, and {option!r} is no parameter of the task. "
                    f"To expect a task argument named {option!r}, pass call(..., {option}=...)."
                )
    expected = Expected(
        task=task,
        args=(args if args or kwargs or as_call else None),
        kwargs=kwargs,
        phase=parse_phase(phase),
        status=parse_status(status),
        partial=partial,
        where=where,
    )
    # Lazily: the first candidate the expected arguments may fit ends the search.
    if candidates and not any(map(expected.may_fit, candidates)):
        record = candidates[0]
        signature = signature_of(record)
        assert signature is not None
        name = function_name(record)
        raise TypeError(
            f"{method}() expects {format_call(name, args, kwargs)}, which cannot be a call of "
            f"{name}{plain_signature(signature)}: {_bind_error(signature, expected)}. Fix the expected arguments."
        )
    return expected


def _bind_error(signature: inspect.Signature, expected: Expected) -> str:
    try:
        (signature.bind_partial if expected.partial else signature.bind)(*(expected.args or ()), **expected.kwargs)
    except TypeError as exc:
        return str(exc)
    return "?"  # pragma: no cover - only asked about arguments that did not bind
