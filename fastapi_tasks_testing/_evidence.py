"""No assertion passes without evidence: the `tasks_recorder` fixture's recorder must see the app's requests.

A recorder installed on no app sees no request, so "nothing was scheduled" would be true of it
whatever the app did, and the app's tasks would run for real, unrecorded, even in record mode.
So, for the recorder the fixture made:

- a request that reaches the production `Tasks` dependency, or creates FastAPI's
  `BackgroundTasks`, while the recorder is installed on no app (or, in record mode, on another
  app) fails before its endpoint runs, and the test fails at teardown too;
- its first query or assertion fails while it was never installed on an app and recorded nothing.

Each failure says how to install it. A `RecordingScheduler()` made by hand is used on its own, as
a scheduler handed to the code under test: it is exempt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import Scope

from fastapi_tasks._seam import resolution_watchers
from fastapi_tasks.errors import FastAPITasksError

from ._background import unwatch_unclaimed, watch_unclaimed
from ._mode import Mode
from ._records import TaskRecord

__all__ = ["HOW_TO_INSTALL", "Evidence"]

HOW_TO_INSTALL = (
    "Install it in one of three ways:\n"
    "- a fixture named `app` that returns the FastAPI app (a fixture named otherwise is not looked at);\n"
    '- the ini option fastapi_tasks_app = "package.module:app";\n'
    "- tasks_recorder.install(app) in the test, before the requests."
)
"""How a message says to install the fixture's recorder."""


class Evidence:
    """The part of `RecordingScheduler` that keeps the fixture's recorder from passing, or letting tasks run, unseen."""

    # The recorder's state this part reads and writes (set in `RecordingScheduler.__init__` and `install()`).
    app: FastAPI | None
    mode: Mode
    _from_fixture: bool
    _saw_app: bool
    _records: list[TaskRecord]
    _previous_overrides: list[tuple[FastAPI, bool, Any]]
    _unrecorded_problem: str | None
    _watchers: list[Callable[[Scope], None]]

    def _watch_requests(self) -> None:
        """Fail the requests whose tasks would run unrecorded, until `_stop_watching()` (the fixture's teardown)."""

        def through_tasks(scope: Scope) -> None:
            self._refuse_unrecorded(scope, "reached the Tasks dependency")

        def through_background_tasks(scope: Scope) -> None:
            self._refuse_unrecorded(scope, "created its BackgroundTasks")

        self._watchers = [through_tasks, through_background_tasks]
        resolution_watchers.append(through_tasks)
        watch_unclaimed(through_background_tasks)

    def _stop_watching(self) -> None:
        if self._watchers:
            through_tasks, through_background_tasks = self._watchers
            if through_tasks in resolution_watchers:
                resolution_watchers.remove(through_tasks)
            unwatch_unclaimed(through_background_tasks)
            self._watchers = []

    def _refuse_unrecorded(self, scope: Scope, what: str) -> None:
        app = scope.get("app")
        if any(target is app for target, _, _ in self._previous_overrides):
            return  # an app it is installed on: a lost override is told by install()'s own watch
        method = "WEBSOCKET" if scope.get("type") == "websocket" else scope.get("method", "GET")
        request = f"A request ({method} {scope.get('path', '')}) to {app!r} {what}"
        if self.app is None:
            problem = (
                f"{request} while the tasks_recorder fixture is installed on no app: its tasks would run "
                f"unrecorded, so the request fails. {HOW_TO_INSTALL}"
            )
        elif self.mode == "record":
            problem = (
                f"{request} in record mode, but tasks_recorder is installed on another app, {self.app!r}: its "
                "tasks would run for real, unrecorded, so the request fails. Install tasks_recorder on the app "
                "the test calls."
            )
        else:
            return  # run and spy mode: tasks of an app the test did not install on run as they would anyway
        if self._unrecorded_problem is None:  # teardown tells the first; each request tells its own
            self._unrecorded_problem = problem
        raise FastAPITasksError(problem)

    def _require_evidence(self, method: str) -> None:
        """Refuse a query or an assertion of the fixture's recorder while it has seen no app and recorded nothing.

        Raises:
            FastAPITasksError: it never was installed on an app and has no record.
        """
        __tracebackhide__ = True
        if self._from_fixture and not self._saw_app and not self._records:
            raise FastAPITasksError(
                f"tasks_recorder.{method}() has nothing to go on: the tasks_recorder fixture is installed on no app, "
                f"so it saw no request, and an assertion on it would pass or fail whatever the app did. "
                f"{HOW_TO_INSTALL}\n"
                "(To hand a scheduler to the code under test, without an app, use a RecordingScheduler() of your own.)"
            )
