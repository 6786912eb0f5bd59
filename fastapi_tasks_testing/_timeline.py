"""Rendering records as text: one call, one line, one table."""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Any

from fastapi_tasks._runner import describe_exception

from ._records import TaskRecord

__all__ = ["format_call", "render_timeline"]

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6


_MAX_EXCEPTION = 80  # characters of `TypeName: message` in a table cell; the log has the whole text


def one_line(text: str) -> str:
    """`text` with newlines and other unprintable characters escaped, so that it fits one line."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def short_repr(value: Any) -> str:
    """A repr short enough for one table cell, on one line."""
    return one_line(_repr.repr(value))


def format_call(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """`name(arg, key=value)` with each value's repr shortened."""
    parts = [short_repr(arg) for arg in args]
    parts += [f"{key}={short_repr(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def outcome(record: TaskRecord) -> str:
    """The record's status, with the exception for a failed task, or why a task never ran when that is known."""
    if record.exception is not None:
        description = one_line(describe_exception(record.exception))
        if len(description) > _MAX_EXCEPTION:
            description = description[: _MAX_EXCEPTION - 3] + "..."
        return f"{record.status.value} ({description})"
    if record.reason is not None:
        return f"{record.status.value} ({one_line(record.reason)})"
    return record.status.value


def _call_cell(record: TaskRecord) -> str:
    call = format_call(record.name, record.args, record.kwargs)
    # Dispatches share the timeline with tasks; the job id is left out to keep the text stable.
    return call if record.kind == "task" else f"[{record.kind}] {call}"


def render_timeline(records: Sequence[TaskRecord]) -> str:
    """A table of `records` in scheduling order: number, phase, call, status, request.

    The text holds no timestamps or addresses, so it is stable enough for snapshot tests.
    """
    if not records:
        return "(no tasks were scheduled)"
    header = ("#", "phase", "task", "status", "request")
    rows = [
        (
            str(record.seq),
            record.phase.value,
            _call_cell(record),
            outcome(record),
            "-" if record.request is None else str(record.request),
        )
        for record in records
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)
