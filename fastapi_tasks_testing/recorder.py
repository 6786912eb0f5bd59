"""`RecordingScheduler`: the app's scheduler under test, recording every task and waiting for them.

The class here holds the records and the scheduler's hooks (what a scheduled task becomes); the
rest of it is composed of parts, one concept each:

- `_install.py`: installing on an app, the `Tasks` override and restoring overrides;
- `_control.py`: modes at work, `allow()`, `hold()` and `run_pending()`: running and holding;
- `_faults.py`: `fail()` and `replace()`; `_dispatch.py`: recording `enqueue()`, its faults and jobs;
- `_waits.py`: `drain()` and `wait_for()`; `_shutdown.py`: the shutdown simulation;
- `_evidence.py`: the fixture's recorder refuses to pass an assertion, or let a task run, unseen;
- `_strict.py`: what strict mode reports; `_assertions.py`: the queries and assertions (built of
  `_queries.py`, with `_outcomes.py` for how tasks ended and `_explain.py` for what a failure says).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from anyio.abc import TaskGroup
from fastapi import FastAPI

from fastapi_tasks import Phase, Task, TaskConfig, TasksScheduler
from fastapi_tasks._seam import Runtime
from fastapi_tasks.errors import FastAPITasksError

from ._assertions import RecordQueries
from ._background import BackgroundTaskRecord
from ._control import Control
from ._dispatch import DispatchRecorder
from ._evidence import Evidence
from ._faults import Fault, FaultInjection
from ._install import Installing
from ._matching import TaskSpec
from ._mode import MODES, Mode
from ._records import RequestInfo, TaskRecord
from ._shutdown import Shutdown
from ._strict import StrictMode
from ._views import CapturedRecords, RequestRecords
from ._waits import Waiting

if TYPE_CHECKING:
    from starlette.types import Scope

__all__ = ["DEFAULT_WAIT_TIMEOUT", "RecordingScheduler"]

DEFAULT_WAIT_TIMEOUT = 10.0
"""Seconds a client's call waits for its tasks in "run" mode, unless told otherwise."""


class RecordingScheduler(
    Evidence,
    Installing,
    Control,
    FaultInjection,
    Waiting,
    Shutdown,
    StrictMode,
    DispatchRecorder,
    TasksScheduler,
    RecordQueries,
):
    """A `TasksScheduler` that records every task it is given, for tests.

    Installed on an app (`install(app)`, or the `tasks_recorder` pytest fixture) it overrides the
    `Tasks` dependency with the production one, whose tasks it records and runs; each request's
    tasks are recorded apart. The app's lifespan need not run in "run" and "record" mode. Used
    on its own it is a scheduler for unit tests of code that takes one: its tasks wait,
    recorded, for `run_pending()`.

    Parameters:
        mode: "run" (default): the production scheduler starts, discards and refuses tasks, and
            the production runtime starts each task, exactly as in production: each its own
            task, concurrent with the request and the other tasks. The client's call returns
            once every task it started (and every task those started) has ended: the recorder
            waits for them outside the app, after the whole ASGI call (see `wait_timeout`).
            "record": nothing runs; run the tasks with `run_pending()`.
            "spy": the app's real scheduler runs them, concurrently, as in production (the
            lifespan must run); `drain()` waits for them.
        config: the app-wide configuration; by default the one given to `add_tasks(app)`.
        expect_failures: when true, tasks that fail are not reported at teardown by the plugin.
        strict: when true, the plugin fails the test at teardown if a recorded task or dispatch
            was matched by no assertion (exempt noise with `ignore()`).
        wait_timeout: in "run" mode, the seconds a client's call waits, once the app has returned,
            for the tasks it started; past it the call fails naming the unfinished tasks.

    Raises:
        ValueError: unknown `mode`.
        TypeError: `config` is not a `TaskConfig`, `expect_failures` or `strict` not a bool, or
            `wait_timeout` not a number.
        ValueError: `wait_timeout` is not a positive, finite number of seconds.
    """

    def __init__(
        self,
        *,
        mode: Mode = "run",
        config: TaskConfig | None = None,
        expect_failures: bool = False,
        strict: bool = False,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Unknown tasks_recorder mode {mode!r}; use one of {', '.join(map(repr, MODES))}.")
        if config is not None and not isinstance(config, TaskConfig):
            raise TypeError(f"config must be a TaskConfig, not {config!r}")
        if not isinstance(expect_failures, bool):
            raise TypeError(f"expect_failures must be True or False, not {expect_failures!r}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, not {strict!r}")
        if isinstance(wait_timeout, bool) or not isinstance(wait_timeout, int | float):
            raise TypeError(f"wait_timeout must be a number of seconds, not {wait_timeout!r}")
        if not 0 < wait_timeout < math.inf:
            raise ValueError(f"wait_timeout must be a positive, finite number of seconds, not {wait_timeout!r}")
        self.wait_timeout = float(wait_timeout)
        self.mode: Mode = mode
        self.expect_failures = expect_failures
        self.strict = strict
        # What an assertion matched (strict mode reports the rest), and the tasks strict mode ignores.
        self._asserted: set[TaskRecord] = set()
        self._ignored: list[TaskSpec] = []
        self._held: list[TaskSpec] = []
        self._detached: list[TaskSpec] = []
        self._previous_stack: list[tuple[FastAPI, Any]] = []
        # Set by the pytest fixture: a recorder that saw no app then refuses assertions (see _evidence.py).
        self._from_fixture = False
        self._saw_app = False
        self._unrecorded_problem: str | None = None
        self._watchers: list[Callable[[Scope], None]] = []
        # What installed the recorder, for the error of a second install().
        self._installed_by = ""
        self.app: FastAPI | None = None
        self._records: list[TaskRecord] = []
        self._seq = itertools.count(1)
        self._order = itertools.count(1)
        self._explicit_config = config
        self._faults: list[Fault] = []
        self._allowed: list[TaskSpec] = []
        self._previous_overrides: list[tuple[FastAPI, bool, Any]] = []
        self._runtime = None
        self._override_problem: str | None = None
        # The app's runtime, once a request was served: the sync helpers run tasks on its event loop.
        self._real_runtime: Runtime | None = None
        self.config = config or TaskConfig()
        self._init_batches()

    def __repr__(self) -> str:
        return f"<RecordingScheduler mode={self.mode!r} records={len(self._records)}>"

    # --- the records -------------------------------------------------------------------------

    @property
    def records(self) -> list[TaskRecord]:
        """Every recorded task, in scheduling order."""
        return list(self._records)

    def for_request(self, method_or_route: str, path: str | None = None) -> RequestRecords:
        """The records of the requests to `method path` (or of the route named `method_or_route`).

        Every query and assertion of the result is narrowed to those requests.
        """
        if path is None:
            return RequestRecords(self, lambda r: r.route == method_or_route, f"route {method_or_route!r}")
        method = method_or_route.upper()
        return RequestRecords(self, lambda r: r.method == method and r.path == path, f"{method} {path}")

    @property
    def requests(self) -> list[RequestInfo]:
        """The requests that scheduled tasks, in order of their first task."""
        seen: dict[int, RequestInfo] = {}
        for record in self._records:
            if record.request is not None:
                seen.setdefault(record.request.id, record.request)
        return list(seen.values())

    def clear(self) -> None:
        """Forget every record (fault injections and allowed tasks stay)."""
        self._records.clear()

    # --- scheduling ----------------------------------------------------------------------------

    def _next_order(self) -> int:
        return next(self._order)

    def _base_config(self) -> TaskConfig:
        return self.config

    def _record(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        phase: Phase,
        request: RequestInfo | None,
    ) -> TaskRecord:
        record = TaskRecord(self, func, args, kwargs, config, phase, request, next(self._seq))
        self._records.append(record)
        return record

    def _record_background(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], request: RequestInfo
    ) -> BackgroundTaskRecord:
        # A task added to FastAPI's BackgroundTasks (see _background.py).
        record = BackgroundTaskRecord(self, func, args, kwargs, request, next(self._seq))
        self._records.append(record)
        return record

    def _new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._record(func, args, kwargs, config, phase, None)

    def _new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._record_dispatch(job, args, kwargs, config, phase, None)

    def _submit(self, task: Task[..., Any]) -> None:
        # Outside a request there is no task group to start tasks in: they wait for run_pending().
        pass

    def _start_tasks(self, tasks: list[Task[..., Any]], phase: Phase) -> None:
        pass  # likewise

    @property
    def tg(self) -> TaskGroup:
        """Not available: a recorder used on its own has no task group."""
        raise FastAPITasksError("A RecordingScheduler used outside a request has no task group.")

    # --- a block's records ---------------------------------------------------------------------

    @contextlib.contextmanager
    def capture(self) -> Iterator[CapturedRecords]:
        """A view of the records added inside a `with` block: `with tasks_recorder.capture() as new:`.

        Every query and assertion works on the view, narrowed to those records, during the block
        and after it.
        """
        view = CapturedRecords(self)
        try:
            yield view
        finally:
            view._close()
