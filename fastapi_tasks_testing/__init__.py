"""Testing toolkit for fastapi-tasks: record, run and assert background tasks without sleeping.

`RecordingScheduler` stands in for the `Tasks` dependency; the pytest plugin (registered
automatically) gives each test one as the `tasks_recorder` fixture. This package never imports
pytest itself, so a `RecordingScheduler` can be used anywhere.
"""

from __future__ import annotations

from typing import Any

from fastapi_tasks import Phase, TaskStatus

from ._assertions import RecordQueries, TaskSpec
from ._dispatch import DispatchQueries, DispatchRecord
from ._recorder import MODES, Mode, RecordingScheduler, RequestRecords
from ._records import RequestInfo, TaskRecord
from ._timeline import render_timeline

__all__ = [
    "MODES",
    "DispatchQueries",
    "DispatchRecord",
    "Mode",
    "Phase",
    "RecordQueries",
    "RecordingScheduler",
    "RequestInfo",
    "RequestRecords",
    "TaskRecord",
    "TaskSpec",
    "TaskStatus",
    "assert_dispatched",
    "assert_not_dispatched",
    "assert_not_scheduled",
    "assert_order",
    "assert_scheduled",
    "assert_scheduled_once",
    "render_timeline",
]


def assert_scheduled(
    recorder: RecordQueries, task: TaskSpec, /, *args: Any, phase: Phase | str | None = None, **kwargs: Any
) -> TaskRecord:
    """`recorder.assert_scheduled(task, *args, phase=phase, **kwargs)`, as a function."""
    __tracebackhide__ = True
    return recorder.assert_scheduled(task, *args, phase=phase, **kwargs)


def assert_scheduled_once(
    recorder: RecordQueries, task: TaskSpec, /, *args: Any, phase: Phase | str | None = None, **kwargs: Any
) -> TaskRecord:
    """`recorder.assert_scheduled_once(task, *args, phase=phase, **kwargs)`, as a function."""
    __tracebackhide__ = True
    return recorder.assert_scheduled_once(task, *args, phase=phase, **kwargs)


def assert_not_scheduled(recorder: RecordQueries, task: TaskSpec, /, *, phase: Phase | str | None = None) -> None:
    """`recorder.assert_not_scheduled(task, phase=phase)`, as a function."""
    __tracebackhide__ = True
    recorder.assert_not_scheduled(task, phase=phase)


def assert_order(recorder: RecordQueries, /, *tasks: TaskSpec) -> None:
    """`recorder.assert_order(*tasks)`, as a function."""
    __tracebackhide__ = True
    recorder.assert_order(*tasks)


def assert_dispatched(
    recorder: DispatchQueries, job: TaskSpec, /, *args: Any, phase: Phase | str | None = None, **kwargs: Any
) -> DispatchRecord:
    """`recorder.assert_dispatched(job, *args, phase=phase, **kwargs)`, as a function."""
    __tracebackhide__ = True
    return recorder.assert_dispatched(job, *args, phase=phase, **kwargs)


def assert_not_dispatched(recorder: DispatchQueries, job: TaskSpec, /, *, phase: Phase | str | None = None) -> None:
    """`recorder.assert_not_dispatched(job, phase=phase)`, as a function."""
    __tracebackhide__ = True
    recorder.assert_not_dispatched(job, phase=phase)
