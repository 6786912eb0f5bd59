"""Rendering records as text: one call, one line, one table."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Collection, Sequence
from typing import Any

from fastapi_tasks._seam import describe_exception

from ._records import TaskRecord

__all__ = ["counted", "format_call", "render_timeline", "were"]

_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def _in_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def shorten(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters between two words, with "..." where it was cut."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 1)]
    # Cut after the last character that ends a word (a space, a comma, a dot...), not inside one.
    for index in range(len(cut) - 1, len(cut) // 2, -1):
        if not _in_word(cut[index]) and _in_word(cut[index - 1]):
            cut = cut[:index]
            break
    return cut.rstrip() + "..."


def shorten_message(text: str, limit: int) -> str:
    """An error message cut to about `limit` characters, keeping its last sentence (its fix hint) whole."""
    if len(text) <= limit:
        return text
    sentences = _SENTENCE_END.split(text)
    if len(sentences) < 2:
        return shorten(text, limit)
    hint = sentences[-1]
    head = text[: len(text) - len(hint)].rstrip()
    return f"{shorten(head, max(limit - len(hint) - 1, 24))} {hint}"


class _ShortRepr(reprlib.Repr):
    """Reprs for a table cell: cut between words, without addresses or private class names."""

    def repr_str(self, x: str, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return repr(shorten(x, self.maxstring))

    def repr_instance(self, x: object, level: int) -> str:
        try:
            text = repr(x)
        except Exception:
            return f"<{_public_name(type(x))} object>"
        cls = type(x)
        if cls.__name__.startswith("_") and cls.__module__.split(".")[0] in ("fastapi_tasks", "fastapi_tasks_testing"):
            # Our own helpers (a request's scheduler, say) go by the public class they stand for.
            text = text.replace(f"{cls.__module__}.{cls.__qualname__}", _public_name(cls))
            text = text.replace(cls.__qualname__, _public_name(cls))
        return shorten(_ADDRESS.sub("", text), self.maxother)


def _public_name(cls: type) -> str:
    return next(base.__name__ for base in cls.__mro__ if not base.__name__.startswith("_"))


_repr = _ShortRepr()
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


def counted(count: int, noun: str) -> str:
    """`1 task`, `2 tasks`: a count and its noun, in the singular or the plural."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def were(count: int, noun: str = "") -> str:
    """`1 was`, `2 were`; with a noun, `1 task was`, `2 tasks were`."""
    subject = counted(count, noun) if noun else str(count)
    return f"{subject} was" if count == 1 else f"{subject} were"


def format_call(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """`name(arg, key=value)` with each value's repr shortened."""
    parts = [short_repr(arg) for arg in args]
    parts += [f"{key}={short_repr(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def outcome(record: TaskRecord) -> str:
    """The record's status, with the exception for a failed task, or why a task never ran when that is known."""
    if record.exception is not None:
        description = one_line(describe_exception(record.exception))
        description = shorten_message(description, _MAX_EXCEPTION)
        return f"{record.status.value} ({description})"
    if record.reason is not None:
        return f"{record.status.value} ({one_line(record.reason)})"
    return record.status.value


def _call_cell(record: TaskRecord) -> str:
    call = format_call(record.name, record.args, record.kwargs)
    # Dispatches share the timeline with tasks; the job id is left out to keep the text stable.
    return call if record.kind == "task" else f"[{record.kind}] {call}"


def _shown(records: Sequence[TaskRecord], focus: Collection[TaskRecord], max_rows: int) -> list[bool]:
    """Which rows a long table shows: the focused ones, then their nearest neighbours (or both ends)."""
    anchors = [index for index, record in enumerate(records) if record in focus][:max_rows]
    if not anchors:
        anchors = [0, len(records) - 1]
    by_distance = sorted(range(len(records)), key=lambda index: (min(abs(index - a) for a in anchors), index))
    shown = [False] * len(records)
    for index in by_distance[:max_rows]:
        shown[index] = True
    return shown


def render_timeline(
    records: Sequence[TaskRecord], *, focus: Collection[TaskRecord] = (), max_rows: int | None = None
) -> str:
    """A table of `records` in scheduling order: number, phase, call, status, request.

    The text holds no timestamps or addresses, so it is stable enough for snapshot tests.

    Parameters:
        records: the records, one row each.
        focus: the records a long table must show.
        max_rows: show at most this many rows (the `focus` ones and their neighbours), a `...` line
            where rows are left out, and a last line that says how many.
    """
    if not records:
        return "(no tasks were scheduled)"
    focused = set(focus)
    shown = (
        [True] * len(records) if max_rows is None or len(records) <= max_rows else _shown(records, focused, max_rows)
    )
    header = ("#", "phase", "task", "status", "request")
    rows: list[tuple[str, ...] | None] = []
    for record, show in zip(records, shown, strict=True):
        if show:
            rows.append(
                (
                    str(record.seq),
                    record.phase.value,
                    _call_cell(record),
                    outcome(record),
                    "-" if record.request is None else str(record.request),
                )
            )
        elif rows[-1:] != [None]:
            rows.append(None)  # one "..." line for a run of rows left out
    cells = [row for row in rows if row is not None]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header))]
    lines = [
        "..." if row is None else "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    left_out = shown.count(False)
    if left_out:
        lines.append(f"({left_out} of {len(records)} tasks not shown; timeline() shows them all)")
    return "\n".join(lines)
