"""Running one scenario under one driver, and comparing what the drivers saw.

A scenario is a small app, built fresh for every run by a factory that gets a `Probe`, and a
request script. The app's endpoints keep the handle of every task they schedule
(`probe.keep(tasks.schedule(...))`) and its tasks report what they observed (`probe.see(...)`).
A driver serves the app, runs the script, and returns the outcome: a plain dict of what happened,
each request's response, and for each task its phase, status, exception, result, effective config
and observations.

The drivers:

- "production": the app as it is, its lifespan running (unless the scenario is about a lifespan
  that does not run); after the script, the driver waits on every kept handle, up to `HANG_GUARD`
  seconds (a task still pending or running then is reported). Its outcome is the reference.
- "recorder": the same, with `RecordingScheduler(mode="run")` installed on the app, and nothing
  waited for: run mode promises that every task of a request has ended when the client's call
  returns, so a task that has not is a difference.
- "recorder-bare": the recorder, with a bare client: no lifespan runs (httpx's `ASGITransport`
  without `LifespanManager`, or a `TestClient` outside a `with` block). Run mode promises that such
  a test works as production does with its lifespan, so its outcome is compared with the same
  reference. A scenario that cannot run without the lifespan says why in `Scenario.bare_opt_out`.

Async scripts drive httpx's `AsyncClient` in the test's own event loop (with the lifespan,
through `asgi_lifespan.LifespanManager`); sync scripts drive Starlette's `TestClient` (which runs
the app in an event loop of its own, on the test's backend), from a worker thread.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import pprint
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar, cast

import anyio
import anyio.abc
import anyio.to_thread
import httpx
import trio
from _versions import ABANDON_ON_CANCEL
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tasks import Task, TaskConfig, add_tasks
from fastapi_tasks.tasks import DEFAULT_MAX_THREADS
from fastapi_tasks_testing import RecordingScheduler

from ._differences import ACCEPTED_DIFFERENCES

__all__ = [
    "HANG_GUARD",
    "RECORDER_DRIVERS",
    "AsyncScript",
    "Backend",
    "Client",
    "Driver",
    "Outcome",
    "Probe",
    "Scenario",
    "SyncClient",
    "SyncScript",
    "compare",
    "new_app",
    "run_scenario",
    "statuses",
    "task_outcome",
]

Backend: TypeAlias = Literal["asyncio", "trio"]
Driver: TypeAlias = Literal["production", "recorder", "recorder-bare"]
"""How a scenario is served: see the module docstring."""
RECORDER_DRIVERS: tuple[Driver, ...] = ("recorder", "recorder-bare")
Outcome: TypeAlias = dict[str, Any]
"""What one run saw: `requests` (as the client saw them), `sent` (the statuses the app sent), `tasks`
(name -> fields), `notes`, `logs` (line -> count), and `hung` or `lifespan` when something never
ended or the app's lifespan failed."""

TaskT = TypeVar("TaskT", bound=Task[..., Any])

HANG_GUARD = 2.0
"""Seconds a script, or the wait for its tasks, may take before the run is reported as hung.

Every scenario ends in milliseconds when nothing is wrong; nothing here waits on a clock otherwise.
A whole run (lifespan, script, wait) that takes longer than `RUN_GUARD` fails.
"""
RUN_GUARD = 4 * HANG_GUARD


class Probe:
    """What an app under test reports: the tasks it scheduled, what they observed, its responses."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task[..., Any]] = {}
        self.seen: dict[str, dict[str, object]] = {}
        self.notes: dict[str, object] = {}
        self.requests: list[str] = []
        self.hung: list[str] = []
        self.responses_sent = 0
        """Responses whose last body message the server was handed (see `new_app`)."""
        self.sent: list[str] = []
        """As the server saw it: the status of each response the app started (the client may see an
        exception), and how the app ended each WebSocket session."""
        self.running = 0
        self.most_running = 0
        self.unstarted: set[str] = set()
        """Kept tasks that nothing starts before the shutdown: the wait for the tasks leaves them out."""
        self._signals: dict[str, anyio.Event] = {}

    def keep(self, task: TaskT, *, starts: bool = True) -> TaskT:
        """Keep the handle that `schedule()` returned, under the task's short name (unique in a scenario).

        `starts=False`: a task that is meant never to start before the shutdown (a batch nobody starts).
        """
        name = short_name(task.name)
        if self.tasks.get(name, task) is not task:
            raise AssertionError(f"two tasks named {name!r} in one scenario: name them apart with task(name=...)")
        self.tasks[name] = task
        if not starts:
            self.unstarted.add(name)
        return task

    def see(self, task_name: str, **observed: object) -> None:
        """Note what the task `task_name` observed (whether a session was closed, say)."""
        self.seen.setdefault(task_name, {}).update(observed)

    def note(self, key: str, value: object) -> None:
        """Note something about the scenario as a whole."""
        self.notes[key] = value

    def signal(self, name: str) -> anyio.Event:
        """The event called `name`, shared by the app and its script (made on first use, in the event loop)."""
        if name not in self._signals:
            self._signals[name] = anyio.Event()
        return self._signals[name]

    @contextmanager
    def running_task(self) -> Iterator[None]:
        """Count a task body as running while in the block (for `notes.most_running_at_once`)."""
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            yield
        finally:
            self.running -= 1


def short_name(name: str) -> str:
    """`build.<locals>.audit` -> `audit`: task names as a scenario spells them."""
    return name.rsplit(".", 1)[-1]


# --- apps ----------------------------------------------------------------------------------------


class _ResponseSentCounter:
    """Counts the responses whose last body message was handed to the server."""

    def __init__(self, app: ASGIApp, probe: Probe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.probe.responses_sent += 1

        await self.app(scope, receive, counting_send)


class _ServerSide:
    """Around the whole app, as a server sees it.

    It notes the status of every HTTP response the app started, and how the app ended each WebSocket
    session (`probe.sent`); it sets the probe's signal "shutdown" when the server asks the app to shut
    down, and "served <path>" when the app has ended a WebSocket session.
    """

    def __init__(self, app: ASGIApp, probe: Probe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._http(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noting_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                self.probe.signal("shutdown").set()
            return message

        await self.app(scope, noting_receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        ended = "returned"
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            ended = f"raised {_describe_exception(exc)}"
            raise
        finally:
            self.probe.sent.append(f"WEBSOCKET {scope['path']}: the app {ended}")
            self.probe.signal(f"served {scope['path']}").set()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.probe.sent.append(f"{scope['method']} {scope['path']}: {message['status']}")
            await send(message)

        await self.app(scope, receive, noting_send)


def new_app(
    probe: Probe,
    *,
    tasks: bool = True,
    config: TaskConfig | None = None,
    app: FastAPI | None = None,
    shutdown_timeout: float | None = None,
    max_threads: int = DEFAULT_MAX_THREADS,
    eager_start: bool = False,
) -> FastAPI:
    """A FastAPI app (`app`, or a new one) with `add_tasks` (unless `tasks=False`) whose responses `probe` counts."""
    app = FastAPI() if app is None else app
    if tasks:
        add_tasks(
            app, config=config, shutdown_timeout=shutdown_timeout, max_threads=max_threads, eager_start=eager_start
        )
    app.add_middleware(_ResponseSentCounter, probe=probe)
    return app


# --- clients -------------------------------------------------------------------------------------


def _raised(exc: BaseException) -> str:
    """`raised TypeName` for what the app let out, part of the outcome; what ends the test run goes on."""
    # Both loops' cancellations by name: a sync script's thread runs in no event loop to ask.
    if isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError | trio.Cancelled):
        raise exc
    return f"raised {_describe_exception(exc)}"


def _describe_exception(exc: BaseException) -> str:
    # An exception group (a builtin from Python 3.11 on) shows what it holds.
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple):
        return f"{type(exc).__name__}[{', '.join(_describe_exception(e) for e in inner)}]"
    return type(exc).__name__


class Client:
    """What an async script drives: HTTP requests through httpx, and raw ASGI calls for what httpx cannot do."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        app: ASGIApp,
        probe: Probe,
        shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.http = http
        self.app = app
        self.probe = probe
        self._shutdown = shutdown

    async def shutdown(self) -> None:
        """Have the server shut the app down now, as on SIGTERM, and wait until it has.

        Requests still in flight go on: a script starts them in a task group of its own first.
        """
        if self._shutdown is None:
            raise AssertionError("the scenario runs without the lifespan: there is nothing to shut down")
        await self._shutdown()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """Make a request; note its status code, or the exception the client raised."""
        try:
            response = await self.http.request(method, path, **kwargs)
        except BaseException as exc:
            self.probe.requests.append(f"{method} {path}: {_raised(exc)}")
            return None
        self.probe.requests.append(f"{method} {path}: {response.status_code}")
        return response

    async def get(self, path: str, **kwargs: Any) -> httpx.Response | None:
        """`request("GET", path)`."""
        return await self.request("GET", path, **kwargs)

    async def get_text(self, path: str) -> str | None:
        """`GET path`, noting the body as well (for streams)."""
        response = await self.get(path)
        if response is None:
            return None
        self.probe.requests.append(f"GET {path}: body {response.text!r}")
        return response.text

    async def abandon_stream(self, path: str, how: Literal["cancel", "send-fails", "disconnect"]) -> None:
        """`GET path` and walk away once the first body chunk has arrived.

        - "cancel": the request is cancelled (a server cancelling the handler of a closed connection);
        - "send-fails": sending the next message raises `OSError` (ASGI 2.4: Starlette raises
          `ClientDisconnect`);
        - "disconnect": `receive()` says `http.disconnect` (ASGI 2.0: Starlette stops the stream).
        """
        first_chunk = anyio.Event()
        version = "2.4" if how == "send-fails" else "2.0"
        asked_for_body = False

        async def receive() -> Message:
            nonlocal asked_for_body
            if not asked_for_body:
                asked_for_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] != "http.response.body":
                return
            if first_chunk.is_set():
                if how == "send-fails":
                    raise OSError("the client went away")
                return
            if message.get("body"):
                first_chunk.set()
                if how == "cancel":
                    request_scope.cancel()

        outcome = "walked away after the first chunk"
        with anyio.CancelScope() as request_scope:
            try:
                await self.app(_http_scope("GET", path, version), receive, send)
            except BaseException as exc:
                outcome = _raised(exc)
        self.probe.requests.append(f"GET {path}: {outcome}")

    async def cancel_when(self, path: str, event: anyio.Event) -> None:
        """`GET path` and cancel the request once `event` is set (a client that gave up waiting)."""
        outcome = "cancelled"
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                nonlocal outcome
                try:
                    await self.http.get(path)
                except BaseException as exc:
                    outcome = _raised(exc)
                else:
                    outcome = "returned before it was cancelled"
                tg.cancel_scope.cancel()

            tg.start_soon(call)
            await event.wait()
            tg.cancel_scope.cancel()
        self.probe.requests.append(f"GET {path}: {outcome}")


def _http_scope(method: str, path: str, spec_version: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }


class SyncClient:
    """What a sync script drives: Starlette's `TestClient` (in a `with` block, or bare), for WebSockets and HTTP."""

    def __init__(self, client: TestClient, probe: Probe) -> None:
        self.client = client
        self.probe = probe

    def wait_until_served(self, path: str, session: WebSocketTestSession) -> None:
        """Wait until the app has ended the WebSocket session at `path` (returned or raised).

        `TestClient` cancels the app when the script leaves a `websocket_connect()` block: a script
        that waits first sees how the app ended, whatever the driver does while it ends. The wait
        runs in the session's event loop, which is the client's with the lifespan and the
        session's own without.
        """
        session.portal.call(self._served, path)

    async def _served(self, path: str) -> None:
        await self.probe.signal(f"served {path}").wait()  # the event made in the app's event loop

    def get(self, path: str) -> None:
        """`GET path`; note its status code, or the exception the client raised.

        A bare `TestClient` runs each call in an event loop of its own, which ends with the call.
        """
        try:
            response = self.client.get(path)
        except BaseException as exc:
            self.probe.requests.append(f"GET {path}: {_raised(exc)}")
        else:
            self.probe.requests.append(f"GET {path}: {response.status_code}")


AsyncScript: TypeAlias = Callable[[Client], Awaitable[None]]
SyncScript: TypeAlias = Callable[[SyncClient], None]


async def get_root(client: Client) -> None:
    """The default script: one `GET /`."""
    await client.get("/")


@dataclass(frozen=True)
class Scenario:
    """One row of the differential table.

    Parameters:
        id: a short kebab-case name, unique in the table.
        covers: what the scenario is about (and the issue observation it reproduces, if any).
        build: makes a fresh app reporting to the probe it is given.
        script: the requests to make (async, through httpx); the default is one `GET /`.
        sync_script: instead of `script`, requests made through `TestClient` (for WebSockets, and
            for what a test written the way the docs teach does).
        lifespan: whether production runs the app's lifespan. `False` is for the one thing a
            missing lifespan changes in production: it refuses; the only recorder driver is then
            the bare one.
        bare_opt_out: why the scenario cannot run with a bare client (`None`: it runs in every
            driver). Only a script that needs the lifespan itself (to shut the app down, say), or
            an app that needs its own lifespan, opts out.
        backends: the event loops the scenario runs on (asyncio only, for what trio cannot express).
        python: the oldest Python the scenario runs on, for a feature that needs a newer one than the
            project's oldest (older ones skip it).
        fastapi: the oldest FastAPI the scenario runs on, and the feature that needs it, for one that
            the project's oldest lacks (older ones skip it): `((0, 121), "Depends(scope=...)")`.
        starlette: likewise, the oldest Starlette (major, minor) the scenario runs on, for what an older
            Starlette's `TestClient` cannot show: `((0, 45), "...")`.
        install_on: the app the recorder is installed on; by default the one `build` returned.
        recorder_setup: configures the recorder once it is installed, before the script runs (what a
            test would do with `tasks_recorder`), in both recorder drivers.
        accepted: the kinds of `ACCEPTED_DIFFERENCES` this scenario may show, in every recorder driver.
        accepted_bare: kinds the bare driver may show besides `accepted`.
        racy: outcome fields (`fnmatch` patterns over dotted paths) whose production value a race
            between a worker thread and the event loop decides: not compared, since run mode makes
            the task lose that race every time (`expect_recorder` pins the losing value).
        expect: what DESIGN.md requires of the production outcome, checked on its own.
        expect_recorder: what run mode promises beyond agreement (determinism, say), checked on
            the outcome of both recorder drivers after the comparison.
        expect_bare: what the bare driver must show beyond agreement, checked after `expect_recorder`.
    """

    id: str
    covers: str
    build: Callable[[Probe], FastAPI]
    script: AsyncScript = get_root
    sync_script: SyncScript | None = None
    lifespan: bool = True
    bare_opt_out: str | None = None
    backends: tuple[Backend, ...] = ("asyncio", "trio")
    python: tuple[int, int] = (3, 10)
    fastapi: tuple[tuple[int, ...], str] | None = None
    starlette: tuple[tuple[int, ...], str] | None = None
    install_on: Callable[[FastAPI], FastAPI] | None = None
    recorder_setup: Callable[[RecordingScheduler], None] | None = None
    accepted: tuple[str, ...] = ()
    accepted_bare: tuple[str, ...] = ()
    racy: tuple[str, ...] = ()
    expect: Callable[[Outcome], None] | None = None
    expect_recorder: Callable[[Outcome], None] | None = None
    expect_bare: Callable[[Outcome], None] | None = None

    def __post_init__(self) -> None:
        unknown = {*self.accepted, *self.accepted_bare} - set(ACCEPTED_DIFFERENCES)
        if unknown:
            raise ValueError(f"scenario {self.id!r} accepts unknown differences {sorted(unknown)}")
        if not self.lifespan and self.bare_opt_out is not None:
            raise ValueError(f"scenario {self.id!r} runs without the lifespan: it cannot opt out of the bare driver")

    def drivers(self) -> tuple[Driver, ...]:
        """The recorder drivers this scenario runs under (each compared with production)."""
        if not self.lifespan:
            return ("recorder-bare",)
        return ("recorder",) if self.bare_opt_out is not None else RECORDER_DRIVERS

    def accepts(self, driver: Driver, backend: Backend) -> list[str]:
        """The field patterns that may differ under `driver` on `backend`."""
        kinds = [*self.accepted, *(self.accepted_bare if driver == "recorder-bare" else ())]
        patterns = [
            pattern
            for kind in kinds
            if backend in ACCEPTED_DIFFERENCES[kind].backends
            for pattern in ACCEPTED_DIFFERENCES[kind].fields
        ]
        return [*patterns, *self.racy]


# --- drivers -------------------------------------------------------------------------------------


async def run_scenario(scenario: Scenario, driver: Driver, backend: Backend) -> Outcome:
    """Serve a fresh app of `scenario` under `driver`, run its script, and return what happened."""
    probe = Probe()
    app = scenario.build(probe)
    recorder: RecordingScheduler | None = None
    if driver != "production":
        recorder = RecordingScheduler(mode="run")
        recorder.install(app if scenario.install_on is None else scenario.install_on(app))
        if scenario.recorder_setup is not None:
            scenario.recorder_setup(recorder)
    lifespan = scenario.lifespan and driver != "recorder-bare"
    try:
        with _collecting_logs() as logs, anyio.fail_after(RUN_GUARD):
            if scenario.sync_script is not None:
                sync_script = scenario.sync_script
                # A sync script that hangs is left behind in its thread: the run reports it and goes on.
                outcome = await anyio.to_thread.run_sync(
                    functools.partial(_run_with_testclient, app, sync_script, probe, recorder, backend, lifespan),
                    **cast("dict[str, Any]", {ABANDON_ON_CANCEL: True}),
                )
            else:
                outcome = await _run_with_httpx(app, scenario.script, probe, recorder, lifespan)
    finally:
        if recorder is not None:
            recorder.uninstall()
    if logs:
        outcome["logs"] = dict(sorted(Counter(logs).items()))
    return outcome


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@contextmanager
def _collecting_logs() -> Iterator[list[str]]:
    """The `fastapi_tasks` log lines of the block, at every level."""
    logger = logging.getLogger("fastapi_tasks")
    collector = _LogCollector()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collector)
    try:
        yield collector.lines
    finally:
        logger.removeHandler(collector)
        logger.setLevel(level)


async def _run_with_httpx(
    app: FastAPI, script: AsyncScript, probe: Probe, recorder: RecordingScheduler | None, lifespan: bool
) -> Outcome:
    outcome: Outcome | None = None
    lifespan_error: str | None = None
    try:
        async with _served(app, probe, lifespan=lifespan) as (http, asgi, shutdown):
            with anyio.move_on_after(HANG_GUARD) as guard:
                await script(Client(http, asgi, probe, shutdown))
            if guard.cancelled_caught:
                probe.hung.append("the request script")
            if recorder is None:
                await _wait_for_tasks(probe)
            outcome = _outcome(probe, recorder)
    except BaseException as exc:
        # The app's lifespan may end with anything its tasks raised (an exception group, say).
        lifespan_error = _raised(exc)
    if outcome is None:
        outcome = _outcome(probe, recorder)
    if lifespan_error is not None:
        outcome["lifespan"] = lifespan_error
    return outcome


@asynccontextmanager
async def _served(
    app: FastAPI, probe: Probe, *, lifespan: bool
) -> AsyncIterator[tuple[httpx.AsyncClient, ASGIApp, Callable[[], Awaitable[None]] | None]]:
    served: ASGIApp = _ServerSide(app, probe)
    if lifespan:
        async with LifespanManager(served) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                # Shutting down once more when the block ends is a no-op: the lifespan has ended by then.
                yield http, manager.app, manager.shutdown
    else:
        # A bare client: nothing sends the app lifespan events.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://test") as http:
            yield http, served, None


def _run_with_testclient(
    app: FastAPI,
    script: SyncScript,
    probe: Probe,
    recorder: RecordingScheduler | None,
    backend: Backend,
    lifespan: bool,
) -> Outcome:
    client = TestClient(_ServerSide(app, probe), backend=backend)
    if not lifespan:
        # A bare client, as the docs' first test writes it: no `with` block, no lifespan, and an event
        # loop of its own for each call.
        try:
            _run_sync_script(script, SyncClient(client, probe))
        finally:
            client.close()
        return _outcome(probe, recorder)
    with client:
        _run_sync_script(script, SyncClient(client, probe))
        if recorder is None:
            assert client.portal is not None  # the `with` block's event loop, which the app runs on
            client.portal.call(_wait_for_tasks, probe)
        return _outcome(probe, recorder)


def _run_sync_script(script: SyncScript, client: SyncClient) -> None:
    # Bounded like an async script: past HANG_GUARD the script is left behind in its thread, which
    # the recorder's own bound on its wait ends later; the run goes on and reports it.
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            script(client)
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="sync script", daemon=True).start()
    if not done.wait(HANG_GUARD):
        client.probe.hung.append("the request script")
        return
    if failure:
        raise failure[0]


async def _wait_for_tasks(probe: Probe) -> None:
    with anyio.move_on_after(HANG_GUARD) as guard:
        # Until none is left: a task may schedule more tasks while it runs.
        while unfinished := [t for name, t in probe.tasks.items() if not t.done and name not in probe.unstarted]:
            await unfinished[0].wait()
    if guard.cancelled_caught:
        names = sorted(name for name, task in probe.tasks.items() if not task.done and name not in probe.unstarted)
        probe.hung.append(f"waiting for {', '.join(names)}")


# --- outcomes ------------------------------------------------------------------------------------


def _describe_task(task: Task[..., Any]) -> dict[str, object]:
    on_error = task.config.on_error
    described: dict[str, object] = {
        "phase": task.phase.value,
        "status": task.status.value,
        "exception": None if task.exception is None else _describe_exception(task.exception),
        "config.name": task.config.name,
        "config.shield": task.config.shielded,
        "config.on_error": None if on_error is None else short_name(getattr(on_error, "__qualname__", repr(on_error))),
    }
    if task.status.value == "succeeded":
        described["result"] = repr(task.result)
    return described


def _outcome(probe: Probe, recorder: RecordingScheduler | None) -> Outcome:
    tasks: dict[str, dict[str, object]] = {name: _describe_task(task) for name, task in probe.tasks.items()}
    if recorder is not None:
        # A record that no scheduling call handed back: production would have no such task.
        kept = [id(task) for task in probe.tasks.values()]
        for record in recorder.records:
            # FastAPI's BackgroundTasks, which the recorder records too, are not fastapi-tasks tasks:
            # production has no handle on them (scenarios note what they did instead).
            if getattr(record, "source", None) == "BackgroundTasks":
                continue
            if id(record) not in kept:
                name = short_name(record.name)
                tasks[name if name not in tasks else f"{name} (another)"] = {
                    **_describe_task(record),
                    "handle": "recorded, but never returned by schedule()",
                }
    for name, observed in probe.seen.items():
        tasks.setdefault(name, {"handle": "none kept"}).update(
            {f"seen.{key}": value for key, value in observed.items()}
        )
    outcome: Outcome = {
        "requests": list(probe.requests),
        "sent": list(probe.sent),
        "tasks": tasks,
        "notes": dict(probe.notes),
    }
    if probe.most_running:
        outcome["notes"]["most_running_at_once"] = probe.most_running
    if probe.hung:
        outcome["hung"] = list(probe.hung)
    return outcome


def _flatten(outcome: Outcome) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in outcome.items():
        if isinstance(value, dict):
            for sub, sub_value in _flatten(value).items():
                flat[f"{key}.{sub}"] = sub_value
        else:
            flat[key] = value
    return flat


_MISSING = "(absent)"


def compare(
    scenario: Scenario, backend: Backend, production: Outcome, recorder: Outcome, driver: Driver = "recorder"
) -> str | None:
    """The differences between production's outcome and `driver`'s that `scenario` does not accept, as a
    readable report; else None."""
    flat_production, flat_recorder = (
        _flatten(_summarize_lone_tasks(production, recorder)),
        _flatten(_summarize_lone_tasks(recorder, production)),
    )
    accepted = scenario.accepts(driver, backend)
    rows = []
    for path in sorted(flat_production.keys() | flat_recorder.keys(), key=_path_order):
        left = flat_production.get(path, _MISSING)
        right = flat_recorder.get(path, _MISSING)
        if left != right and not any(fnmatch.fnmatchcase(path, pattern) for pattern in accepted):
            rows.append((path, _show(left), _show(right)))
    if not rows:
        return None
    header = ("field", "production", f"{driver} (run mode)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [f"Scenario {scenario.id!r} ({backend}, {driver}): the drivers disagree. {scenario.covers}"]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    lines.append("Production outcome:")
    lines.append(_indent(pprint.pformat(production, width=110, sort_dicts=True)))
    lines.append(f"{driver} outcome:")
    lines.append(_indent(pprint.pformat(recorder, width=110, sort_dicts=True)))
    return "\n".join(lines)


def _summarize_lone_tasks(outcome: Outcome, other: Outcome) -> Outcome:
    # A task that only one engine has is one row of the report, not one per field.
    tasks: dict[str, dict[str, object]] = outcome["tasks"]
    lone = {name: _summary(fields) for name, fields in tasks.items() if name not in other["tasks"]}
    return {**outcome, "tasks": {**tasks, **lone}} if lone else outcome


class _Summary(str):
    """A task's fields in one line, shown as is."""


def _summary(fields: dict[str, object]) -> _Summary:
    parts = [f"{key}={value!r}" for key, value in fields.items() if value is not None and value is not False]
    return _Summary(", ".join(parts))


_SECTIONS = ("requests", "sent", "hung", "lifespan", "tasks", "notes", "logs")


def _path_order(path: str) -> tuple[int, str]:
    section = path.split(".", 1)[0]
    return (_SECTIONS.index(section) if section in _SECTIONS else len(_SECTIONS), path)


def _show(value: object) -> str:
    return value if isinstance(value, _Summary) else _MISSING if value is _MISSING else repr(value)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# --- what expectations read ----------------------------------------------------------------------


def statuses(outcome: Outcome) -> dict[str, object]:
    """Task name -> status, for every task of `outcome`."""
    return {name: fields.get("status") for name, fields in outcome["tasks"].items()}


def task_outcome(outcome: Outcome, name: str) -> dict[str, object]:
    """The fields of the task `name`; fails, showing the outcome, when there is none."""
    tasks: dict[str, dict[str, object]] = outcome["tasks"]
    assert name in tasks, f"no task {name!r} in the outcome: {pprint.pformat(outcome)}"
    return tasks[name]
