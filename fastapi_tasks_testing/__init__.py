"""Testing toolkit for fastapi-tasks: record, run and assert background tasks without sleeping.

`RecordingScheduler` stands in for the `Tasks` dependency; the pytest plugin (registered
automatically) gives each test one as the `tasks_recorder` fixture. This package never imports
pytest itself, so a `RecordingScheduler` can be used anywhere.
"""

from __future__ import annotations

from typing import Any

from fastapi_tasks import Phase, TaskStatus

from ._assertions import RecordQueries
from ._dispatch import DispatchQueries
from ._dispatch_records import DispatchRecord, JobRuns
from ._faults import Fault
from ._matching import Predicate, TaskSpec
from ._mode import MODES, Mode
from ._records import RequestInfo, TaskRecord
from ._timeline import render_timeline
from ._views import CapturedRecords, RequestRecords
from .recorder import RecordingScheduler

__all__ = [
    "MODES",
    "CapturedRecords",
    "DispatchQueries",
    "DispatchRecord",
    "Fault",
    "JobRuns",
    "Mode",
    "Phase",
    "Predicate",
    "RecordQueries",
    "RecordingScheduler",
    "RequestInfo",
    "RequestRecords",
    "TaskRecord",
    "TaskSpec",
    "TaskStatus",
    "assert_dispatched",
    "assert_dispatched_once",
    "assert_not_dispatched",
    "assert_not_scheduled",
    "assert_nothing_dispatched",
    "assert_nothing_scheduled",
    "assert_order",
    "assert_scheduled",
    "assert_scheduled_once",
    "assert_timeline",
    "render_timeline",
]


def assert_scheduled(
    recorder: RecordQueries,
    task: TaskSpec,
    /,
    *args: Any,
    phase: Phase | str | None = None,
    partial: bool = False,
    where: Predicate | None = None,
    times: int | None = None,
    **kwargs: Any,
) -> TaskRecord:
    """`recorder.assert_scheduled(task, *args, **options_and_kwargs)`, as a function."""
    __tracebackhide__ = True
    return recorder.assert_scheduled(task, *args, phase=phase, partial=partial, where=where, times=times, **kwargs)


def assert_scheduled_once(
    recorder: RecordQueries,
    task: TaskSpec,
    /,
    *args: Any,
    phase: Phase | str | None = None,
    partial: bool = False,
    where: Predicate | None = None,
    **kwargs: Any,
) -> TaskRecord:
    """`recorder.assert_scheduled_once(task, *args, phase=..., partial=..., where=..., **kwargs)`, as a function."""
    __tracebackhide__ = True
    return recorder.assert_scheduled_once(task, *args, phase=phase, partial=partial, where=where, **kwargs)


def assert_not_scheduled(
    recorder: RecordQueries,
    task: TaskSpec,
    /,
    *args: Any,
    phase: Phase | str | None = None,
    partial: bool = False,
    where: Predicate | None = None,
    **kwargs: Any,
) -> None:
    """`recorder.assert_not_scheduled(task, *args, phase=..., partial=..., where=..., **kwargs)`, as a function."""
    __tracebackhide__ = True
    recorder.assert_not_scheduled(task, *args, phase=phase, partial=partial, where=where, **kwargs)


def assert_nothing_scheduled(recorder: RecordQueries, /, *, phase: Phase | str | None = None) -> None:
    """`recorder.assert_nothing_scheduled(phase=phase)`, as a function."""
    __tracebackhide__ = True
    recorder.assert_nothing_scheduled(phase=phase)


def assert_order(recorder: RecordQueries, /, *tasks: TaskSpec) -> None:
    """`recorder.assert_order(*tasks)`, as a function."""
    __tracebackhide__ = True
    recorder.assert_order(*tasks)


def assert_timeline(
    recorder: RecordQueries, /, *calls: TaskSpec | tuple[TaskSpec, Any], any_order: bool = False
) -> list[TaskRecord]:
    """`recorder.assert_timeline(*calls, any_order=any_order)`, as a function."""
    __tracebackhide__ = True
    return recorder.assert_timeline(*calls, any_order=any_order)


def assert_dispatched(
    recorder: DispatchQueries,
    job: TaskSpec,
    /,
    *args: Any,
    phase: Phase | str | None = None,
    partial: bool = False,
    where: Predicate | None = None,
    times: int | None = None,
    **kwargs: Any,
) -> DispatchRecord:
    """`recorder.assert_dispatched(job, *args, **options_and_kwargs)`, as a function."""
    __tracebackhide__ = True
    return recorder.assert_dispatched(job, *args, phase=phase, partial=partial, where=where, times=times, **kwargs)


def assert_dispatched_once(
    recorder: DispatchQueries,
    job: TaskSpec,
    /,
    *args: Any,
    phase: Phase | str | None = None,
    partial: bool = False,
    where: Predicate | None = None,
    **kwargs: Any,
) -> DispatchRecord:
    """`recorder.assert_dispatched_once(job, *args, phase=..., partial=..., where=..., **kwargs)`, as a function."""
    __tracebackhide__ = True
    return recorder.assert_dispatched_once(job, *args, phase=phase, partial=partial, where=where, **kwargs)


def assert_not_dispatched(
    recorder: DispatchQueries,
    job: TaskSpec,
    /,
    *args: Any,
    phase: Phase | str | None = None,
    partial: bool = False,
    where: Predicate | None = None,
    **kwargs: Any,
) -> None:
    """`recorder.assert_not_dispatched(job, *args, phase=..., partial=..., where=..., **kwargs)`, as a function."""
    __tracebackhide__ = True
    recorder.assert_not_dispatched(job, *args, phase=phase, partial=partial, where=where, **kwargs)


def assert_nothing_dispatched(recorder: DispatchQueries, /, *, phase: Phase | str | None = None) -> None:
    """`recorder.assert_nothing_dispatched(phase=phase)`, as a function."""
    __tracebackhide__ = True
    recorder.assert_nothing_dispatched(phase=phase)
