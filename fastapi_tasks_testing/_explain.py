"""Explaining a failed assertion: the closest records, the records it is about, and the timeline it shows.

An assertion that fails says what it expected and what it saw; these functions write the rest of
its message: the records of the task it looked for with what differs in each, a "did you mean"
for a name, the method scheduled on another object, and the recorded timeline with the records the
assertion is about shown first.
"""

from __future__ import annotations

from ._matching import Expected, did_you_mean, matches_task, on_another_instance, task_label
from ._records import TaskRecord
from ._timeline import format_call, render_timeline

__all__ = [
    "MAX_TIMELINE_ROWS",
    "bullet",
    "pair_up",
    "records_about",
    "timeline_section",
    "times_text",
    "why_none",
]

MAX_TIMELINE_ROWS = 30
"""A failure message shows at most this many rows of the timeline: the ones the assertion is about first."""


def bullet(record: TaskRecord) -> str:
    """`- #3 after_route audit('bob')`: one record in a list of a message."""
    return f"- #{record.seq} {record.phase.value} {format_call(record.name, record.args, record.kwargs)}"


def times_text(times: int) -> str:
    """`once`, `2 times`."""
    return "once" if times == 1 else f"{times} times"


def timeline_section(mine: list[TaskRecord], everything: list[TaskRecord], label: str, focus: list[TaskRecord]) -> str:
    """The timeline a failure message ends with: the records in scope, then (for a narrowed view) the others.

    `label` names a narrowed view (" (this view: GET /)"), or is empty for the whole recorder.
    """
    if not label:
        return "Recorded tasks:\n" + render_timeline(mine, focus=focus, max_rows=MAX_TIMELINE_ROWS)
    # A narrowed view lists its own records apart from the others.
    own = set(mine)
    others = [record for record in everything if record not in own]
    text = f"Recorded tasks{label}:\n" + render_timeline(mine, focus=focus, max_rows=MAX_TIMELINE_ROWS)
    if others:
        text += "\n\nOther recorded tasks:\n" + render_timeline(others, max_rows=MAX_TIMELINE_ROWS)
    return text


def _candidates(records: list[TaskRecord], expected: Expected, kind: str | None = None) -> list[TaskRecord]:
    """The records of the expected task, whatever their arguments, phase and status."""
    return [
        record
        for record in records
        if (expected.task is None or matches_task(record, expected.task)) and (kind is None or record.kind == kind)
    ]


def why_none(records: list[TaskRecord], expected: Expected, kind: str | None = None) -> str:
    """What a message adds when nothing matches: the closest records, or why there are none."""
    candidates = _candidates(records, expected, kind)
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
        return did_you_mean(task, (record.name for record in records if kind is None or record.kind == kind))
    elsewhere = [record for record in records if task is not None and on_another_instance(record, task)]
    if task is not None and elsewhere:
        owner = type(getattr(task, "__self__", None)).__name__
        return (
            f"\nIts function was scheduled on another {owner} object than the one given:\n"
            + "\n".join(bullet(record) for record in elsewhere)
            + f"\nTo match {task_label(task)} on any {owner} object, assert on the function of the class: "
            f"{owner}.{getattr(task, '__name__', '')}."
        )
    return ""


def records_about(records: list[TaskRecord], expected: Expected, kind: str | None = None) -> list[TaskRecord]:
    """The records a failure is about: the expected task's (also on another object), shown first in the timeline."""
    task = expected.task
    return [
        record
        for record in records
        if (task is None or matches_task(record, task) or on_another_instance(record, task))
        and (kind is None or record.kind == kind)
    ]


def pair_up(expectations: list[Expected], records: list[TaskRecord]) -> list[TaskRecord | None]:
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
