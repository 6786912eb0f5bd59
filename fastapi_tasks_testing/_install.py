"""Installing the recorder on an app: the `Tasks` override, the request's recording runtime, and restoring overrides.

`install(app)` points the `Tasks` dependency of the app (and of the FastAPI apps mounted in it) at
`recording_dependency`, which resolves it as production does, with the request's runtime swapped for
one that records (see `_engine.py`); `uninstall()` puts back whatever overrides were there before.
"""

from __future__ import annotations

import inspect
import os
import sys
import weakref
from collections.abc import Callable
from typing import Any, cast

from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.routing import Host, Mount
from starlette.types import Scope

from fastapi_tasks import Phase, TaskConfig, TasksScheduler, get_tasks_scheduler
from fastapi_tasks._seam import (
    CONFIG_KEY,
    Runtime,
    callable_name,
    resolution_watchers,
    resolve_runtime,
    tasks_added,
)
from fastapi_tasks.errors import FastAPITasksError, FastAPITasksUninitializedAppError

from ._background import BackgroundTaskRecord, hook_background_tasks, unhook_background_tasks
from ._dispatch_records import DispatchRecord
from ._engine import Call, RequestRuntime
from ._evidence import HOW_TO_INSTALL
from ._mode import Mode
from ._outside import OutsideWait, Waiter, current_call
from ._records import RequestInfo, TaskRecord

__all__ = ["Installing", "recording_dependency"]

_MOUNTS = (Mount, Host)  # the routes that serve apps (and routes) of their own


class Installing:
    """The part of `RecordingScheduler` that installs it on an app and resolves `Tasks` for its requests."""

    # The recorder's state this part reads and writes (set in `RecordingScheduler.__init__`).
    app: FastAPI | None
    mode: Mode
    config: TaskConfig
    _explicit_config: TaskConfig | None
    _from_fixture: bool
    _saw_app: bool
    _installed_by: str
    _records: list[TaskRecord]
    _previous_overrides: list[tuple[FastAPI, bool, Any]]
    _override_problem: str | None
    _real_runtime: Runtime | None
    # The app's outermost ASGI callable before install() wrapped it in the wait outside the app.
    _previous_stack: list[tuple[FastAPI, Any]]
    # What the request's runtime and the BackgroundTasks hook call back (defined by the other parts).
    _runs: Callable[[TaskRecord], bool]
    _waits_for: Callable[[TaskRecord], bool]
    wait_timeout: float
    _waited_too_long: Callable[[Call, Scope], BaseException]
    _target_for: Callable[[TaskRecord], Callable[..., Any]]
    _next_order: Callable[[], int]
    _record: Callable[
        [Callable[..., Any], tuple[Any, ...], dict[str, Any], TaskConfig, Phase, RequestInfo | None], TaskRecord
    ]
    _record_dispatch: Callable[
        [Callable[..., Any], tuple[Any, ...], dict[str, Any], TaskConfig, Phase, RequestInfo | None], DispatchRecord
    ]
    _record_background: Callable[
        [Callable[..., Any], tuple[Any, ...], dict[str, Any], RequestInfo], BackgroundTaskRecord
    ]

    def install(self, app: FastAPI) -> None:
        """Override the `Tasks` dependency of `app` and of the FastAPI apps mounted in it until `uninstall()`.

        Their requests' FastAPI `BackgroundTasks` are recorded too.

        Raises:
            TypeError: `app` is not a FastAPI app.
            FastAPITasksError: the recorder is already installed on an app, or the app uses
                `BackgroundTasks` and the installed FastAPI creates them where the recorder cannot see.
        """
        self._install(app)
        self._installed_by = _install_call_site()

    def _install(self, app: FastAPI) -> None:
        # install(), but for who installed it, which the caller notes: the fixture names itself, without looking.
        if not isinstance(app, FastAPI):
            raise TypeError(f"tasks_recorder.install() needs a FastAPI app, not {app!r}")
        if self.app is not None:
            raise FastAPITasksError(self._already_installed())
        apps = _apps_served_by(app)
        hook_background_tasks(self, apps)  # first: it may refuse, and nothing is changed then
        if self._explicit_config is None:
            self.config = getattr(app.state, CONFIG_KEY, None) or TaskConfig()
        # A mounted FastAPI app resolves its dependencies with its own overrides, not its parent's.
        for target in apps:
            overrides = target.dependency_overrides
            self._previous_overrides.append(
                (target, get_tasks_scheduler in overrides, overrides.get(get_tasks_scheduler))
            )
            overrides[get_tasks_scheduler] = recording_dependency
            _RECORDERS[target] = self
        resolution_watchers.append(self._watch_resolution)
        # Outside every middleware of the app: a client's call waits there, once the app has returned, for
        # the tasks it started (see _outside.py). Built now as Starlette would build it on the first call.
        stack = app.middleware_stack
        self._previous_stack.append((app, stack))
        app.middleware_stack = OutsideWait(app.build_middleware_stack() if stack is None else stack, self)
        self.app = app
        self._saw_app = True

    def _watch_resolution(self, scope: Scope) -> None:
        # The production dependency resolved Tasks for an app this recorder overrides: the override is gone.
        app = scope.get("app")
        if any(target is app for target, _, _ in self._previous_overrides):
            self._override_problem = _override_gone(app)
            raise FastAPITasksError(self._override_problem)

    def _check_override(self) -> str | None:
        """Why the recorder's override of `Tasks` is not in place on an app it was installed on, if it is not."""
        if self._override_problem is not None:
            return self._override_problem
        for target, _, _ in self._previous_overrides:
            if target.dependency_overrides.get(get_tasks_scheduler) is not recording_dependency:
                return _override_gone(target)
        return None

    def uninstall(self) -> None:
        """Restore the previous `Tasks` override (or its absence) of the app and of its mounted apps.

        Their `BackgroundTasks` are no longer recorded; FastAPI's own class is back once no recorder is installed.
        """
        unhook_background_tasks(self)
        while self._previous_stack:
            app, stack = self._previous_stack.pop()
            if isinstance(app.middleware_stack, OutsideWait) and app.middleware_stack.waiter is cast("Waiter", self):
                app.middleware_stack = stack
        if self._watch_resolution in resolution_watchers:
            resolution_watchers.remove(self._watch_resolution)
        while self._previous_overrides:
            target, had_override, previous = self._previous_overrides.pop()
            if _RECORDERS.get(target) is self:
                del _RECORDERS[target]
            if had_override:
                target.dependency_overrides[get_tasks_scheduler] = previous
            else:
                target.dependency_overrides.pop(get_tasks_scheduler, None)
        self.app = None

    async def _dependency(self, connection: HTTPConnection) -> TasksScheduler:
        # The production dependency, with the request's runtime swapped for one that records and then
        # starts each task with the real runtime's own spawn: the same errors (no add_tasks, no lifespan),
        # the same scheduler, bound to the same exit stacks.
        scope = connection.scope
        try:
            real = resolve_runtime(scope)
        except FastAPITasksUninitializedAppError:
            # Without add_tasks the app fails here in production, and so it does here, as it does while the
            # lifespan does not run: a test client's call without the lifespan has a runtime of its own (see
            # _outside.py), unless in spy mode, which runs tasks on the app's real runtime.
            if self.mode == "spy" and tasks_added(scope):
                raise FastAPITasksUninitializedAppError(
                    "tasks_recorder in spy mode runs tasks on the app's real scheduler, so the lifespan must run: "
                    "use `with TestClient(app) as client:` or asgi_lifespan.LifespanManager(app)."
                ) from None
            raise
        self._real_runtime = real
        config = real.config if self._explicit_config is None else self._explicit_config
        runtime = RequestRuntime(real, self, config, RequestInfo.from_scope(scope), current_call.get())
        return TasksScheduler(_runtime=runtime, _scope=scope)

    def _already_installed(self) -> str:
        return (
            f"The recorder is already installed, by {self._installed_by}; "
            "call tasks_recorder.uninstall() before installing it on another app."
        )

    def _install_hint(self) -> str:
        problem = self._check_override()
        if problem is not None:
            return "\n" + problem
        if not self._from_fixture or self.app is not None or self._records:
            return ""
        return f"\nThe tasks_recorder fixture is installed on no app, so it saw no request. {HOW_TO_INSTALL}"


_RECORDERS: weakref.WeakKeyDictionary[FastAPI, Installing] = weakref.WeakKeyDictionary()
"""The recorder installed on each app (and on each app mounted in it)."""


async def recording_dependency(connection: HTTPConnection) -> TasksScheduler:
    """What `Tasks` resolves to while a recorder is installed: the installed recorder's scheduler.

    One function for every recorder, found through the app serving the request: FastAPI keeps
    what it learns of a dependency keyed by the callable, for the life of the process, and a
    recorder's own bound method there would keep the recorder and its records alive after its test.
    """
    app = connection.scope.get("app")
    recorder = _RECORDERS.get(app) if isinstance(app, FastAPI) else None
    if recorder is None:
        raise FastAPITasksError(
            f"The Tasks dependency of {app!r} is still overridden by tasks_recorder, but no recorder is "
            "installed on it any more: restore app.dependency_overrides with tasks_recorder.uninstall(), "
            "not by copying the dict back."
        )
    return await recorder._dependency(connection)


# FastAPI analyzes an overriding dependency anew on every request, with `inspect.signature(eval_str=True)`:
# ready-made, its signature costs no evaluation of the annotations this module's future import made strings.
recording_dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("connection", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection)],
    return_annotation=TasksScheduler,
)


def _apps_served_by(app: FastAPI) -> list[FastAPI]:
    """`app` and every FastAPI app mounted in it, at any depth."""
    apps = [app]
    pending = [app.routes]
    while pending:
        for route in pending.pop():
            if isinstance(route, _MOUNTS):
                if isinstance(route.app, FastAPI) and route.app not in apps:
                    apps.append(route.app)
                pending.append(route.routes)
    return apps


def _override_gone(app: object) -> str:
    overrides = getattr(app, "dependency_overrides", {})
    if overrides.get(get_tasks_scheduler, recording_dependency) is not recording_dependency:
        return (
            f"tasks_recorder's override of the Tasks dependency of {app!r} was replaced by "
            f"{callable_name(overrides[get_tasks_scheduler])}: the test (or a fixture) overrode Tasks itself after "
            "the recorder was installed, so the app's tasks go to that override, unrecorded. Let tasks_recorder "
            "stand in for Tasks (record mode runs no task; replace() stands in for one), or do not use "
            "tasks_recorder in a test that brings its own Tasks."
        )
    return (
        f"tasks_recorder's override of the Tasks dependency is gone from {app!r}.dependency_overrides: "
        "something replaced or cleared the dict after the recorder was installed (like "
        "`app.dependency_overrides = {...}` in a fixture), so the app's tasks run unrecorded on its real "
        "scheduler. Add overrides to the dict instead of replacing it (`app.dependency_overrides[dep] = fake`), "
        "or request the fixture that resets it before tasks_recorder."
    )


def _install_call_site() -> str:
    """`tasks_recorder.install(app) at test_admin.py:12`: the call of the test's code that installs the recorder."""
    frame = sys._getframe(2)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("fastapi_tasks_testing"):
        frame = frame.f_back
    return f"tasks_recorder.install(app) at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
