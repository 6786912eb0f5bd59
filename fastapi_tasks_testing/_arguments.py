"""Comparing a record's arguments with the expected ones, bound to the signature of the function that was scheduled.

Expected and recorded arguments are both bound to the signature (as `unittest.mock.create_autospec`
does) before they are compared, so `send(to="a@b.c")` matches a task scheduled as `send("a@b.c")`,
and a difference names the parameter. A function without a known signature (a builtin) has its
arguments compared position by position.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from fastapi_tasks._seam import callable_name

from ._signatures import plain_signature
from ._timeline import short_repr

if TYPE_CHECKING:
    from ._records import TaskRecord

__all__ = ["argument_differences", "fits", "function_name", "same_call", "signature_of"]


def signature_of(record: TaskRecord) -> inspect.Signature | None:
    """The parameters a scheduling of `record`'s function passes, or `None` when they are unknown."""
    return record._signature()


def function_name(record: TaskRecord) -> str:
    """The name of the function a record runs (a job's name in its queue), whatever the task's configured name."""
    if record.kind == "dispatch":
        return str(record.job_name)  # type: ignore[attr-defined]
    return callable_name(record.func)


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


def argument_differences(
    record: TaskRecord, args: tuple[Any, ...], kwargs: dict[str, Any], *, partial: bool
) -> list[str]:
    """How `record`'s arguments differ from the expected `args` and `kwargs`, parameter by parameter.

    With `partial`, only the given arguments must match.
    """
    if same_call(record, args, kwargs):
        return []
    signature = signature_of(record)
    recorded = record._bound()
    if signature is None or recorded is None:
        return _positional_differences(record, args, kwargs, partial)
    try:
        bind = signature.bind_partial if partial else signature.bind
        expected = bind(*args, **kwargs)
    except TypeError as exc:
        return [f"the expected arguments do not fit {function_name(record)}{plain_signature(signature)}: {exc}"]
    actual, defaulted = _flatten(signature, recorded, defaults=True)
    wanted, _ = _flatten(signature, expected, defaults=not partial)
    differences = []
    for label, value in actual.items():
        if label not in wanted:
            if not partial:
                differences.append(f"unexpected {label}: {short_repr(value)}")
        elif not _equal(wanted[label], value):
            got = short_repr(value) + (" (its default)" if label in defaulted else "")
            differences.append(f"{label}: expected {short_repr(wanted[label])}, got {got}")
    differences += [f"missing {label}: expected {short_repr(v)}" for label, v in wanted.items() if label not in actual]
    return differences


def same_call(record: TaskRecord, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the expected arguments are written as `record`'s were, with equal values."""
    # Written as the task was scheduled, with equal values: bound to any signature (or compared
    # position by position), they match too; binding them is for the calls written otherwise.
    recorded_args, recorded_kwargs = record.args, record.kwargs
    if len(args) != len(recorded_args) or kwargs.keys() != recorded_kwargs.keys():
        return False
    for value, actual in zip(args, recorded_args, strict=True):
        if not _equal(value, actual):
            return False
    return not kwargs or all(_equal(value, recorded_kwargs[key]) for key, value in kwargs.items())


def fits(record: TaskRecord, args: tuple[Any, ...], kwargs: dict[str, Any], *, partial: bool) -> bool | None:
    """Whether the expected `args` and `kwargs` can be passed to `record`'s function (`None`: unknown).

    Unknown too when the recorded arguments do not fit either: the app scheduled a call that
    will fail, and a test may expect exactly that call.
    """
    signature = signature_of(record)
    if signature is None or record._bound() is None:
        return None
    try:
        (signature.bind_partial if partial else signature.bind)(*args, **kwargs)
    except TypeError:
        return False
    return True
