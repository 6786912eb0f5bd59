"""What an assertion looks for, and how a record differs from it.

A test names a task by its function or its name, and may give the arguments it expects, its
phase, a `where=` predicate over the record, and `partial=True` to compare only the arguments it
gives. Expected and recorded arguments are both bound to the signature of the function that was
scheduled before they are compared (as `unittest.mock.create_autospec` does), so
`send(to="a@b.c")` matches a task scheduled as `send("a@b.c")`, and a difference names the
parameter.

The assertions' options (`phase`, `partial`, `where`, `times`, `status`) are keywords too; for a
task whose own parameters are named like them, the expected arguments are passed as one
`unittest.mock.call(...)`, and a keyword that could be either is refused.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import types
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias
from unittest import mock

from fastapi_tasks import Phase, TaskStatus
from fastapi_tasks._seam import callable_name

from ._timeline import format_call, short_repr

if TYPE_CHECKING:
    from ._records import TaskRecord

__all__ = [
    "OPTIONS",
    "Expected",
    "Predicate",
    "TaskSpec",
    "callable_signature",
    "did_you_mean",
    "expect",
    "function_name",
    "matches_task",
    "on_another_instance",
    "parse_phase",
    "parse_status",
    "plain_signature",
    "signature_of",
    "task_label",
]

TaskSpec: TypeAlias = "Callable[..., Any] | str"
"""A task, as the assertions take it: the function that was scheduled, or the task's name."""

Predicate: TypeAlias = "Callable[[TaskRecord], object]"
"""A `where=` predicate: called with a record, true when it matches."""

OPTIONS = ("phase", "partial", "where", "times", "status")
"""Keyword options of the queries and assertions, which a task's own keyword arguments can shadow."""

_Call = type(mock.call)
_VAR = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


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
    """` Did you mean 'x'?` for the known name closest to `name`, or nothing when none is close."""
    close = difflib.get_close_matches(name, sorted(set(known) - {name}), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def parse_phase(phase: Phase | str | None) -> Phase | None:
    """`phase` as a `Phase`.

    Raises:
        ValueError: an unknown phase name.
    """
    if phase is None or isinstance(phase, Phase):
        return phase
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


# A function's signature, and what it was computed from: `__code__`, `__defaults__` and `__kwdefaults__`
# of the function (of a method's function), so that a function changed in place is looked at again.
_SignatureEntry: TypeAlias = "tuple[inspect.Signature | None, object, object, object]"
# Keyed weakly by the function, so that the cache keeps no function (nor a method's object) alive after
# its test. Only plain functions and the methods bound to them: they compare and hash by identity (a
# method by its function and the identity of its object), so an equal key always has the same signature.
_SIGNATURES: weakref.WeakKeyDictionary[Callable[..., Any], _SignatureEntry] = weakref.WeakKeyDictionary()
_CACHED_TYPES = (types.FunctionType, types.MethodType)


def callable_signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """`inspect.signature(func)`, or `None` when it has none; cached for functions and bound methods."""
    if type(func) not in _CACHED_TYPES:
        return _uncached_signature(func)
    function = func.__func__ if type(func) is types.MethodType else func
    code = getattr(function, "__code__", None)
    defaults = getattr(function, "__defaults__", None)
    kwdefaults = getattr(function, "__kwdefaults__", None)
    entry = _SIGNATURES.get(func)
    if entry is not None and entry[1] is code and entry[2] is defaults and entry[3] is kwdefaults:
        return entry[0]
    signature = _uncached_signature(func)
    _SIGNATURES[func] = (signature, code, defaults, kwdefaults)
    return signature


def _uncached_signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def signature_of(record: TaskRecord) -> inspect.Signature | None:
    """The parameters a scheduling of `record`'s function passes, or `None` when they are unknown."""
    if record.kind == "dispatch":
        signature: inspect.Signature | None = record.dispatcher.job_signature(record.func)  # type: ignore[attr-defined]
        return signature
    return callable_signature(record.func)


def function_name(record: TaskRecord) -> str:
    """The name of the function a record runs (a job's name in its queue), whatever the task's configured name."""
    if record.kind == "dispatch":
        return str(record.job_name)  # type: ignore[attr-defined]
    return callable_name(record.func)


def plain_signature(signature: inspect.Signature) -> str:
    """`(a, b=1, *, c)`: a signature without its annotations, as a message shows it."""
    return str(
        signature.replace(
            parameters=[p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
    )


def _named_parameters(signature: inspect.Signature) -> set[str]:
    return {name for name, p in signature.parameters.items() if p.kind not in _VAR}


def _flatten(
    signature: inspect.Signature, bound: inspect.BoundArguments, *, defaults: bool
) -> tuple[dict[str, Any], set[str]]:
    """The bound arguments as `label -> value`, one per value (each of `*args`, each of `**kwargs`).

    Returns the values and the labels that got their parameter's default.
    """
    given = set(bound.arguments)
    if defaults:
        bound.apply_defaults()
    values: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            values.update((f"{name}[{index}]", item) for index, item in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            values.update(
                (f"{name}[{key!r}]" if key in signature.parameters else key, item) for key, item in value.items()
            )
        else:
            values[name] = value
    return values, set(bound.arguments) - given


def _equal(expected: Any, actual: Any) -> bool:
    # The expected value on the left, so that `ANY` and other matchers decide.
    try:
        return expected is actual or bool(expected == actual)
    except Exception:
        return False


def _positional_differences(
    record: TaskRecord, args: tuple[Any, ...], kwargs: dict[str, Any], partial: bool
) -> list[str]:
    # For a function whose signature is unknown (a builtin): compare position by position.
    differences = []
    for index in range(max(len(args), 0 if partial else len(record.args))):
        if index >= len(args):
            differences.append(f"unexpected argument {index + 1}: {short_repr(record.args[index])}")
        elif index >= len(record.args):
            differences.append(f"missing argument {index + 1}: expected {short_repr(args[index])}")
        elif not _equal(args[index], record.args[index]):
            differences.append(
                f"argument {index + 1}: expected {short_repr(args[index])}, got {short_repr(record.args[index])}"
            )
    keys = kwargs.keys() if partial else kwargs.keys() | record.kwargs.keys()
    for key in sorted(keys):
        if key not in record.kwargs:
            differences.append(f"missing {key}: expected {short_repr(kwargs[key])}")
        elif key not in kwargs:
            differences.append(f"unexpected {key}: {short_repr(record.kwargs[key])}")
        elif not _equal(kwargs[key], record.kwargs[key]):
            differences.append(f"{key}: expected {short_repr(kwargs[key])}, got {short_repr(record.kwargs[key])}")
    return differences


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
            and not self.argument_differences(record)
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
        if self.args is None or self._same_call(record):
            return []
        signature = signature_of(record)
        recorded: inspect.BoundArguments | None = None
        if signature is not None:
            try:
                recorded = signature.bind(*record.args, **record.kwargs)
            except TypeError:
                recorded = None
        if signature is None or recorded is None:
            return _positional_differences(record, self.args, self.kwargs, self.partial)
        try:
            bind = signature.bind_partial if self.partial else signature.bind
            expected = bind(*self.args, **self.kwargs)
        except TypeError as exc:
            return [f"the expected arguments do not fit {function_name(record)}{plain_signature(signature)}: {exc}"]
        actual, defaulted = _flatten(signature, recorded, defaults=True)
        wanted, _ = _flatten(signature, expected, defaults=not self.partial)
        differences = []
        for label, value in actual.items():
            if label not in wanted:
                if not self.partial:
                    differences.append(f"unexpected {label}: {short_repr(value)}")
            elif not _equal(wanted[label], value):
                got = short_repr(value) + (" (its default)" if label in defaulted else "")
                differences.append(f"{label}: expected {short_repr(wanted[label])}, got {got}")
        differences += [
            f"missing {label}: expected {short_repr(v)}" for label, v in wanted.items() if label not in actual
        ]
        return differences

    def _same_call(self, record: TaskRecord) -> bool:
        # Written as the task was scheduled, with equal values: bound to any signature (or compared
        # position by position), they match too; binding them is for the calls written otherwise.
        assert self.args is not None
        args, kwargs = record.args, record.kwargs
        return (
            len(self.args) == len(args)
            and self.kwargs.keys() == kwargs.keys()
            and all(_equal(value, actual) for value, actual in zip(self.args, args, strict=True))
            and all(_equal(value, kwargs[key]) for key, value in self.kwargs.items())
        )

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
        signature = signature_of(record)
        if signature is None:
            return None
        try:
            signature.bind(*record.args, **record.kwargs)
        except TypeError:
            return None
        try:
            (signature.bind_partial if self.partial else signature.bind)(*self.args, **self.kwargs)
        except TypeError:
            return False
        return True

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


def _parameter_names(task: TaskSpec | None, records: Sequence[TaskRecord]) -> set[str]:
    signatures: list[inspect.Signature | None] = []
    if task is not None and not isinstance(task, str):
        signatures.append(callable_signature(task))
    seen: set[tuple[int, str]] = set()  # the records of one function share its signature
    for record in records:
        key = (id(record.func), record.kind)
        if key not in seen:
            seen.add(key)
            signatures.append(signature_of(record))
    names: set[str] = set()
    for signature in {id(signature): signature for signature in signatures if signature is not None}.values():
        names |= _named_parameters(signature)
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
        if any(isinstance(arg, _Call) for arg in args):
            raise TypeError(
                f"{method}() takes the expected arguments either as one call(...) or written out, not both."
            )
        parameters = _parameter_names(task, candidates)
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
