"""The pytest plugin: the `tasks_recorder` fixture, its marker, its ini options and its teardown report.

Loaded through the `pytest11` entry point `fastapi_tasks` (which names `_entry_point.py`, which
loads this module), so installing fastapi-tasks is enough; `-p fastapi_tasks_testing.plugin` and
`pytest_plugins = ["fastapi_tasks_testing.plugin"]` load it too.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_tasks import TaskStatus
from fastapi_tasks._seam import callable_name, describe_exception

from ._apps import find_fastapi_app
from ._faults import unused_faults_report, unused_holds_report
from ._matching import matches_task
from ._mode import MODES
from ._records import TaskRecord
from ._timeline import counted, format_call, outcome, render_timeline, were
from .recorder import DEFAULT_WAIT_TIMEOUT, RecordingScheduler

__all__ = ["pytest_addoption", "pytest_configure", "pytest_runtest_makereport", "tasks_recorder"]

_OPTIONS = ("mode", "expect_failures", "config", "strict", "wait_timeout")
_CALL_PASSED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the `fastapi_tasks_app` and `fastapi_tasks_wait_timeout` ini options."""
    parser.addini(
        "fastapi_tasks_app",
        "The FastAPI app the tasks_recorder fixture installs itself on, as module:attribute, "
        "when the tests define no `app` fixture.",
        default="",
    )
    parser.addini(
        "fastapi_tasks_wait_timeout",
        "Seconds a client's call waits for its tasks in run mode before the test fails naming them "
        f"(default {DEFAULT_WAIT_TIMEOUT:g}); a test's marker can set its own: tasks_recorder(wait_timeout=...).",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the `tasks_recorder` marker, and check the ini options that need no import."""
    _wait_timeout_from_ini(config)
    config.addinivalue_line(
        "markers",
        "tasks_recorder(*, mode='run', expect_failures=False, config=None, strict=False, wait_timeout=None): "
        "options of the "
        f"tasks_recorder fixture; mode is one of {', '.join(MODES)}.",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Note whether the test itself passed, for the teardown report of failed tasks."""
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED] = report.passed
    return report


def _marker_options(node: pytest.Item) -> dict[str, Any]:
    options: dict[str, Any] = {}
    # Farthest first, so a test's own marker overrides its module's `pytestmark`.
    for marker in reversed(list(node.iter_markers("tasks_recorder"))):
        if marker.args:
            raise TypeError(
                f"@pytest.mark.tasks_recorder takes keyword options only, not {marker.args!r}: "
                "write @pytest.mark.tasks_recorder(mode='record')."
            )
        unknown = sorted(set(marker.kwargs) - set(_OPTIONS))
        if unknown:
            raise TypeError(
                f"@pytest.mark.tasks_recorder got unknown {'option' if len(unknown) == 1 else 'options'} "
                f"{', '.join(map(repr, unknown))}; "
                f"its options are {', '.join(_OPTIONS)}."
            )
        options.update(marker.kwargs)
    return options


def _wait_timeout_from_ini(config: pytest.Config) -> float | None:
    text = str(config.getini("fastapi_tasks_wait_timeout")).strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise pytest.UsageError(
            f"fastapi_tasks_wait_timeout must be a number of seconds, like 30, not {text!r}."
        ) from None


def _app_from_ini(config: pytest.Config) -> FastAPI | None:
    spec = str(config.getini("fastapi_tasks_app")).strip()
    if not spec:
        return None
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise pytest.UsageError(f"fastapi_tasks_app must be 'module:attribute', like 'myapp.main:app', not {spec!r}.")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise pytest.UsageError(f"fastapi_tasks_app = {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise pytest.UsageError(
                f"fastapi_tasks_app = {spec!r}: {module_name!r} has no attribute {attribute!r}."
            ) from None
    return _check_app(target, f"fastapi_tasks_app = {spec!r}")


def _check_app(app: object, source: str) -> FastAPI:
    # An app wrapped by LifespanManager or by middleware around it: the FastAPI app inside it.
    found = find_fastapi_app(app)
    if found is None:
        raise TypeError(
            f"{source} is {app!r}, not a FastAPI app, and no FastAPI app was found inside it (through its `.app` "
            "attributes and the functions it wraps); tasks_recorder installs itself on a FastAPI app. Install it "
            "in the test with tasks_recorder.install(app), given the FastAPI app, or name the app with the ini option "
            'fastapi_tasks_app = "package.module:app".'
        )
    return found


def _find_app(request: pytest.FixtureRequest) -> tuple[FastAPI | None, str]:
    """The app to install the recorder on, and where it was found."""
    try:
        app = request.getfixturevalue("app")
    except pytest.FixtureLookupError as exc:
        if exc.argname != "app":
            raise  # The `app` fixture exists but cannot be set up (a fixture it needs is missing, say).
        # No `app` fixture: fall back to the ini option, outside the handler so its errors are not chained.
    else:
        return _check_app(app, "The `app` fixture"), "the `app` fixture"
    spec = str(request.config.getini("fastapi_tasks_app")).strip()
    return _app_from_ini(request.config), f"the ini option fastapi_tasks_app = {spec!r}"


def _failure_report(recorder: RecordingScheduler) -> str | None:
    if recorder.expect_failures:
        return None
    failed = [r for r in recorder.records if r.status is TaskStatus.FAILED and not r.handled]
    broken = [r for r in recorder.records if r.handler_exception is not None and not r.handler_asserted]
    if not failed and not broken:
        return None
    lines = []
    if failed:
        lines.append(f"{counted(len(failed), 'background task')} failed during the test:")
        for record in failed:
            lines.append(f"- {_describe(record)}: {outcome(record)}")
        lines.append(
            "Assert on them with tasks_recorder.assert_failed(...), or, if failures are expected, "
            "mark the test with @pytest.mark.tasks_recorder(expect_failures=True)."
        )
    if broken:
        lines.append(
            f"{counted(len(broken), 'on_error handler')} raised during the test (production logs and contains it):"
        )
        for record in broken:
            assert record.handler_exception is not None
            handler = callable_name(record.on_error)
            lines.append(f"- {_describe(record)}: {handler} raised {describe_exception(record.handler_exception)}")
        lines.append(
            "Assert on them with tasks_recorder.assert_handler_failed(...), or, if failures are expected, "
            "mark the test with @pytest.mark.tasks_recorder(expect_failures=True)."
        )
    return "\n".join(lines)


def _describe(record: TaskRecord) -> str:
    where = "" if record.request is None else f" ({record.request})"
    return f"#{record.seq} {record.phase.value} {format_call(record.name, record.args, record.kwargs)}{where}"


def _strict_report(recorder: RecordingScheduler) -> str | None:
    if not recorder.strict:
        return None
    unasserted = recorder._unasserted()
    if not unasserted:
        return None
    return (
        f"{were(len(unasserted), 'recorded task')} matched by no assertion (strict mode):\n"
        f"{render_timeline(unasserted)}\n"
        "Assert on each of them (tasks_recorder.assert_scheduled(...), assert_dispatched(...), ...), "
        "or exempt the ones that do not matter with tasks_recorder.ignore(task)."
    )


def _unfinished_report(recorder: RecordingScheduler) -> str | None:
    # In run mode every task runs to its end during its request: one that ended cancelled or is still pending
    # (its batch never started, say) did not, unless the test held it back, let it go or asserted on it.
    if recorder.mode != "run":
        return None
    unfinished = [
        record
        for record in recorder.records
        if record.kind == "task"
        and record.source == "Tasks"
        and record.status in _NOT_ENDED_AS_RUN
        # Scheduled on the recorder itself, outside any request: it waits for run_pending() by design.
        and not (record.request is None and record._runtime is None)
        and record not in recorder._asserted
        and not any(matches_task(record, spec) for spec in (*recorder._held, *recorder._detached))
    ]
    if not unfinished:
        return None
    lines = [f"{counted(len(unfinished), 'background task')} did not run to its end during the test (run mode):"]
    lines.extend(f"- {_describe(record)}: {record.status.value}" for record in unfinished)
    lines.append(
        "Assert on them if that is expected (tasks_recorder.assert_cancelled(...)), keep a task from running "
        "with tasks_recorder.hold(task), or let one outlive its request with tasks_recorder.detach(task)."
    )
    return "\n".join(lines)


_NOT_ENDED_AS_RUN = (TaskStatus.CANCELLED, TaskStatus.PENDING)


def _teardown_report(recorder: RecordingScheduler) -> str | None:
    reports = [
        _failure_report(recorder),
        _unfinished_report(recorder),
        _strict_report(recorder),
        unused_faults_report(recorder._faults, recorder.records),
        unused_holds_report(recorder._held, recorder.records),
    ]
    found = [report for report in reports if report is not None]
    return "\n\n".join(found) if found else None


@pytest.fixture
def tasks_recorder(request: pytest.FixtureRequest) -> Iterator[RecordingScheduler]:
    """A `RecordingScheduler` installed as the `Tasks` dependency of the app under test.

    The app is the `app` fixture when there is one, else the `fastapi_tasks_app` ini option
    (`module:attribute`), else the test calls `tasks_recorder.install(app)`. Options come from
    `@pytest.mark.tasks_recorder(...)`. At teardown the app's previous overrides are restored,
    and a test that passed fails when a task failed (unless asserted on or expected), when in
    run mode a task ended cancelled or stayed pending (unless held, detached or asserted on),
    when a fault or a hold it set applied to no task, and in strict mode when a record was
    matched by no assertion.
    """
    options = _marker_options(request.node)
    if "wait_timeout" not in options and (wait_timeout := _wait_timeout_from_ini(request.config)) is not None:
        options["wait_timeout"] = wait_timeout
    recorder = RecordingScheduler(**options)
    recorder._from_fixture = True
    app, source = _find_app(request)
    if app is not None:
        recorder._install(app)
        recorder._installed_by = f"the tasks_recorder fixture, on the app of {source}"
    recorder._watch_requests()  # a request whose tasks would run unrecorded fails (see _evidence.py)
    try:
        yield recorder
        # Said even when the test failed: it is why a test that expected tasks saw none.
        problem = recorder._check_override() or recorder._unrecorded_problem
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        # A test that failed or was skipped has its own outcome; its captured log shows the task's failure.
        if not request.node.stash.get(_CALL_PASSED, False):
            return
        report = _teardown_report(recorder)
        if report is not None:
            pytest.fail(report, pytrace=False)
    finally:
        recorder._stop_watching()
        recorder.uninstall()
