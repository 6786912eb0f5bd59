"""The apps under test: a counting app for load, and a fault app whose every task is accounted for."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tasks import Phase, Task, TaskConfig, Tasks, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks.errors import FastAPITasksShutdownError

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # anyio depends on the backport before 3.11
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "ASYNCIO_ONLY_KINDS",
    "BASE_FAULTS",
    "FAULT_KINDS",
    "Abort",
    "Accounting",
    "Ledger",
    "ServerHooks",
    "Tally",
    "account",
    "make_fault_app",
    "make_load_app",
    "make_starvation_app",
]

PHASES = (Phase.IMMEDIATE, Phase.AFTER_ROUTE, Phase.AFTER_RESPONSE)


# --- faults that are not Exceptions ------------------------------------------------------------


class Abort(BaseException):
    """An app's own `BaseException` subclass (not an `Exception`), as some libraries define to unwind a stack."""


BASE_FAULTS = ("base-exception", "sync-base-exception", "generator-exit", "exception-group", "foreign-cancel")
"""Task bodies that end with a `BaseException` that is neither an `Exception` nor our own cancellation:
an `Abort` (on the loop and in a worker thread), a `GeneratorExit`, a `BaseExceptionGroup`, and (asyncio
only) a `CancelledError` from a future that something else cancelled."""

ASYNCIO_ONLY_KINDS = frozenset({"foreign-cancel"})
"""Fault kinds that exist only on asyncio (trio has no cancelled futures)."""


def base_fault(kind: str, where: str) -> BaseException:
    """The exception a body of fault `kind` (of `BASE_FAULTS`, but "foreign-cancel") raises."""
    if kind in ("base-exception", "sync-base-exception"):
        return Abort(f"abort in {where}")
    if kind == "generator-exit":
        return GeneratorExit(f"generator exit in {where}")
    if kind == "exception-group":
        group: BaseException = BaseExceptionGroup(
            f"group in {where}", [Abort(f"abort in {where}"), ValueError(f"boom in {where}")]
        )
        return group
    raise ValueError(f"unknown fault kind {kind!r}")


async def foreign_cancellation() -> None:
    """Await a future that something else cancels: a `CancelledError` that no cancel scope of ours asked for."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.call_soon(future.cancel)
    await future


def fault_type(kind: str) -> type[BaseException]:
    """The type of what a body of fault `kind` (of `BASE_FAULTS`) ends with."""
    if kind == "foreign-cancel":
        return asyncio.CancelledError
    return type(base_fault(kind, ""))


class ServerHooks:
    """What the app's lifespan tells the test: it is up, and its shutdown has begun.

    `shutting_down` is set as soon as the server asks for shutdown, before `add_tasks`'s grace
    period and cancellation (which end every task before the app's own lifespans tear down):
    tasks that wait on it are in flight when shutdown starts.
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.loop_thread: int | None = None
        self.shutting_down: anyio.Event | None = None
        self.forever: anyio.Event | None = None  # never set: tasks that wait on it block until cancelled

    def install(self, app: FastAPI) -> None:
        """Watch `app`'s lifespan messages (call after `add_tasks(app)`, so that this middleware is outermost)."""
        app.add_middleware(_LifespanWatcher, hooks=self)


class _LifespanWatcher:
    """A pure ASGI middleware that tells `ServerHooks` when the lifespan started and when shutdown was asked for."""

    def __init__(self, app: ASGIApp, hooks: ServerHooks) -> None:
        self.app = app
        self.hooks = hooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        hooks = self.hooks
        hooks.shutting_down = anyio.Event()
        hooks.forever = anyio.Event()
        hooks.loop_thread = threading.get_ident()

        async def watch_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                hooks.started.clear()
                assert hooks.shutting_down is not None
                hooks.shutting_down.set()
            return message

        async def watch_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                hooks.started.set()
            await send(message)

        try:
            await self.app(scope, watch_receive, watch_send)
        finally:
            hooks.started.clear()


# --- load ------------------------------------------------------------------------------------


class Tally:
    """Counts task runs per (request id, phase), from the loop and from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[int, str], int] = {}
        self.expected = 0
        self.done = threading.Event()
        # Weak: the tally must not be what keeps a task alive.
        self.handles: weakref.WeakSet[Task[..., Any]] = weakref.WeakSet()
        # Strong, to check how each ended; `forget_faulty()` drops them before objects are counted.
        self.faulty: list[tuple[Task[..., Any], str]] = []

    def track(self, *tasks: Task[..., Any]) -> None:
        """Remember `tasks` weakly, for `/drain`."""
        with self._lock:
            self.handles.update(tasks)

    def alive(self) -> list[Task[..., Any]]:
        """The tracked tasks still alive."""
        with self._lock:
            return list(self.handles)

    def expect(self, keys: int) -> None:
        """Set `done` once `keys` distinct (request id, phase) pairs have run."""
        with self._lock:
            self.expected = keys
            if len(self.counts) >= keys:
                self.done.set()

    def hit(self, rid: int, phase: str) -> None:
        """A sync task body: runs in a worker thread."""
        key = (rid, phase)
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if len(self.counts) == self.expected:
                self.done.set()

    async def ahit(self, rid: int, phase: str) -> None:
        """An async task body: runs on the event loop."""
        self.hit(rid, phase)

    def hit_then_fail(self, rid: int, phase: str, kind: str) -> None:
        """A sync task body that counts itself, then raises the `BaseException` of fault `kind`."""
        self.hit(rid, phase)
        raise base_fault(kind, f"request {rid}, {phase}")

    async def ahit_then_fail(self, rid: int, phase: str, kind: str) -> None:
        """An async task body that counts itself, then ends with the `BaseException` of fault `kind`."""
        self.hit(rid, phase)
        if kind == "foreign-cancel":
            await foreign_cancellation()
        raise base_fault(kind, f"request {rid}, {phase}")

    def track_faulty(self, task: Task[..., Any], kind: str) -> None:
        with self._lock:
            self.faulty.append((task, kind))

    def faulty_outcomes(self) -> Counter[str]:
        """How the faulty tasks ended: "failed" (with their own exception kept), or what else."""
        with self._lock:
            return Counter(
                "failed"
                if task.status is TaskStatus.FAILED and isinstance(task.exception, fault_type(kind))
                else f"{kind}: {task.status.value}, {task.exception!r}"
                for task, kind in self.faulty
            )

    def forget_faulty(self) -> None:
        with self._lock:
            self.faulty.clear()

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self.counts.clear()
            self.expected = 0
            self.done.clear()
            self.faulty.clear()


def make_load_app(tally: Tally, hooks: ServerHooks, *, fault_every: int = 0) -> FastAPI:
    """An app whose two endpoints (async and sync) schedule one task per phase, sync and async tasks mixed.

    Parameters:
        fault_every: when not 0, one task in `fault_every` (counting each request's three in turn)
            counts itself and then ends with a `BaseException`, of each of `BASE_FAULTS` in turn.
    """
    app = FastAPI()
    add_tasks(app)
    hooks.install(app)

    def schedule(tasks: TasksScheduler, rid: int, sync_endpoint: bool) -> None:
        targets = (tasks, tasks.after_route, tasks.after_response)
        for index, (phase, target) in enumerate(zip(PHASES, targets, strict=True)):
            # Sync and async bodies alternate by phase, the other way round for sync endpoints.
            sync_body = (index % 2 == 1) != sync_endpoint
            ordinal = 3 * rid + index
            task: Task[..., Any]
            if fault_every and ordinal % fault_every == 0:
                kind = BASE_FAULTS[(ordinal // fault_every) % len(BASE_FAULTS)]
                if kind == "sync-base-exception":
                    task = target.schedule(tally.hit_then_fail, rid, phase.value, kind)
                else:
                    task = target.schedule(tally.ahit_then_fail, rid, phase.value, kind)
                tally.track_faulty(task, kind)
            elif sync_body:
                task = target.schedule(tally.hit, rid, phase.value)
            else:
                task = target.schedule(tally.ahit, rid, phase.value)
            tally.track(task)

    @app.get("/async/{rid}")
    async def async_endpoint(rid: int, tasks: Tasks) -> dict[str, int]:
        schedule(tasks, rid, sync_endpoint=False)
        return {"rid": rid}

    @app.get("/sync/{rid}")
    def sync_endpoint(rid: int, tasks: Tasks) -> dict[str, int]:
        schedule(tasks, rid, sync_endpoint=True)
        return {"rid": rid}

    @app.get("/drain")
    async def drain() -> dict[str, int]:
        """Wait until every task still alive has ended (a body may have counted itself, yet not returned)."""
        waited = 0
        for task in tally.alive():
            await task.wait()
            waited += 1
        await _give_every_worker_thread_a_new_job()
        return {"waited": waited}

    return app


async def _give_every_worker_thread_a_new_job() -> None:
    """Make each idle anyio worker thread let go of its last job, which anyio 4.0 keeps until the next one.

    An idle worker thread of anyio 4.0 still holds the last function it ran, with its arguments: a sync
    endpoint's, with the request's scheduler. As many jobs as there are worker threads, each waiting until
    all have started, reach every idle one (anyio hands work to idle threads before it starts new ones).
    """
    workers = sum(thread.name == "AnyIO worker thread" for thread in threading.enumerate())
    if not workers:
        return
    barrier = threading.Barrier(workers)
    limiter = anyio.CapacityLimiter(workers)
    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(functools.partial(anyio.to_thread.run_sync, barrier.wait, 30.0, limiter=limiter))


# --- starvation --------------------------------------------------------------------------------


def make_starvation_app(hooks: ServerHooks) -> FastAPI:
    """An app with a trivial sync endpoint (`/ping`) and slow sync tasks to run beside it.

    `POST /block/{count}?running=n` schedules `count` sync tasks that block in their worker
    threads until `/release`, and answers once `n` of them are running; `/release` lets them
    all finish and answers once they have.
    """
    app = FastAPI()
    add_tasks(app)
    hooks.install(app)
    blocked: list[tuple[threading.Event, list[Task[..., Any]]]] = []

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"pong": True}

    @app.post("/block/{count}")
    async def block(count: int, running: int, tasks: Tasks) -> dict[str, int]:
        gate, all_running, lock = threading.Event(), anyio.Event(), threading.Lock()
        entered = 0

        def slow() -> None:
            nonlocal entered
            with lock:
                entered += 1
                last = entered == running
            if last:
                anyio.from_thread.run_sync(all_running.set)  # from one of the app's anyio worker threads
            gate.wait()

        blocked.append((gate, [tasks.schedule(slow) for _ in range(count)]))
        await all_running.wait()
        return {"running": running}

    @app.get("/release")
    async def release() -> dict[str, int]:
        ended = 0
        while blocked:
            gate, handles = blocked.pop()
            gate.set()
            for handle in handles:
                await handle.wait()
                ended += 1
        return {"ended": ended}

    return app


# --- faults ----------------------------------------------------------------------------------

FAULT_KINDS = (
    "ok",
    "raise",
    "handler-raises",
    "sync-raise",
    "sync-handler-raises",
    "wrong-args",
    "endpoint-raises",
    *BASE_FAULTS,
    "handler-raises-base",
)
"""What `/fault/{kind}/{key}` schedules in each phase (`endpoint-raises`: ok tasks, then the endpoint raises;
`handler-raises-base`: a task that raises, whose `on_error` handler raises an `Abort`)."""


class Ledger:
    """Every task the fault app scheduled (by name), how often each body ran, what each `on_error` got."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tasks: dict[str, Task[..., Any]] = {}
        self.runs: Counter[str] = Counter()
        self.threads: dict[str, int] = {}
        self.handled: dict[str, BaseException] = {}
        self.raised: dict[str, BaseException] = {}  # what the bodies of BASE_FAULTS ended with
        self.notes: dict[str, str] = {}
        self.events: dict[str, anyio.Event] = {}

    def add(self, task: Task[..., Any]) -> None:
        with self._lock:
            assert task.name not in self.tasks, f"task name {task.name!r} used twice"
            self.tasks[task.name] = task

    def ran(self, name: str) -> None:
        with self._lock:
            self.runs[name] += 1
            self.threads[name] = threading.get_ident()

    def note(self, key: str, text: str) -> None:
        with self._lock:
            self.notes[key] = text

    def event(self, name: str) -> anyio.Event:
        """A named event, made on first use (on the server's event loop)."""
        if name not in self.events:
            self.events[name] = anyio.Event()
        return self.events[name]

    def named(self, key: str) -> list[Task[..., Any]]:
        """The tasks of request `key` (named `key/...`)."""
        with self._lock:
            return [task for name, task in self.tasks.items() if name.startswith(f"{key}/")]

    # Task bodies and error handlers. Each body takes its own name first, to count its runs.
    async def ok(self, name: str) -> str:
        self.ran(name)
        return name

    def sync_ok(self, name: str) -> str:
        self.ran(name)
        return name

    async def fail(self, name: str) -> None:
        self.ran(name)
        raise ValueError(f"boom in {name}")

    def sync_fail(self, name: str) -> None:
        self.ran(name)
        raise ValueError(f"boom in {name} (worker thread)")

    def _raise(self, name: str, exc: BaseException) -> None:
        with self._lock:
            self.raised[name] = exc
        raise exc

    async def base_fail(self, name: str, kind: str) -> None:
        """End with the `BaseException` of fault `kind` (of `BASE_FAULTS`), on the loop."""
        self.ran(name)
        if kind == "foreign-cancel":
            try:
                await foreign_cancellation()
            except asyncio.CancelledError as exc:
                self._raise(name, exc)
        self._raise(name, base_fault(kind, name))

    def sync_base_fail(self, name: str, kind: str) -> None:
        """Raise the `BaseException` of fault `kind` in a worker thread."""
        self.ran(name)
        self._raise(name, base_fault(kind, f"{name} (worker thread)"))

    async def block(self, name: str, until: anyio.Event) -> None:
        self.ran(name)
        await until.wait()

    async def block_then_schedule(self, name: str, until: anyio.Event, tasks: TasksScheduler) -> None:
        """Block; when cancelled at shutdown, try to schedule one more task (which must be refused)."""
        self.ran(name)
        try:
            await until.wait()
        except anyio.get_cancelled_exc_class():
            try:
                tasks.schedule(self.ok, f"{name}:late")
            except FastAPITasksShutdownError as exc:
                self.note(name, str(exc))
            raise

    async def on_error(self, task: Task[..., Any], exc: Exception) -> None:
        with self._lock:
            self.handled[task.name] = exc

    async def on_error_raises(self, task: Task[..., Any], exc: Exception) -> None:
        await self.on_error(task, exc)
        raise RuntimeError(f"handler of {task.name} broke too")

    async def on_error_raises_base(self, task: Task[..., Any], exc: Exception) -> None:
        await self.on_error(task, exc)
        raise Abort(f"handler of {task.name} aborted")

    def sync_on_error(self, task: Task[..., Any], exc: Exception) -> None:
        with self._lock:
            self.handled[task.name] = exc

    def sync_on_error_raises(self, task: Task[..., Any], exc: Exception) -> None:
        self.sync_on_error(task, exc)
        raise RuntimeError(f"handler of {task.name} broke too (worker thread)")


def _schedule_fault(ledger: Ledger, tasks: TasksScheduler, kind: str, key: str) -> None:
    for phase, target in zip(PHASES, (tasks, tasks.after_route, tasks.after_response), strict=True):
        name = f"{key}/{phase.value}"
        if kind in ("ok", "endpoint-raises"):
            body: Callable[..., Any] = ledger.ok if phase is not Phase.AFTER_ROUTE else ledger.sync_ok
            ledger.add(target.task(name=name).schedule(body, name))
        elif kind == "raise":
            ledger.add(target.task(name=name, on_error=ledger.on_error).schedule(ledger.fail, name))
        elif kind == "handler-raises":
            ledger.add(target.task(name=name, on_error=ledger.on_error_raises).schedule(ledger.fail, name))
        elif kind == "sync-raise":
            ledger.add(target.task(name=name, on_error=ledger.sync_on_error).schedule(ledger.sync_fail, name))
        elif kind == "sync-handler-raises":
            definition = target.task(name=name, on_error=ledger.sync_on_error_raises)
            ledger.add(definition.schedule(ledger.sync_fail, name))
        elif kind in BASE_FAULTS:
            body = ledger.sync_base_fail if kind == "sync-base-exception" else ledger.base_fail
            ledger.add(target.task(name=name, on_error=ledger.on_error).schedule(body, name, kind))
        elif kind == "handler-raises-base":
            ledger.add(target.task(name=name, on_error=ledger.on_error_raises_base).schedule(ledger.fail, name))
        elif kind == "wrong-args":
            # Production checks no arguments at schedule time: the call fails in the background.
            definition = target.task(name=name, on_error=ledger.on_error)
            ledger.add(definition.schedule(ledger.ok, name, "one too many"))
        else:
            raise ValueError(f"unknown fault kind {kind!r}")


def make_fault_app(ledger: Ledger, hooks: ServerHooks, *, shutdown_timeout: float | None = None) -> FastAPI:
    """An app whose endpoints schedule faulty, blocking, streaming and disconnecting work, all into `ledger`."""
    app = FastAPI()
    add_tasks(app, config=TaskConfig(on_error=ledger.on_error), shutdown_timeout=shutdown_timeout)
    hooks.install(app)

    def forever() -> anyio.Event:
        assert hooks.forever is not None
        return hooks.forever

    @app.get("/health")
    async def health() -> dict[str, int]:
        return {"tasks": len(ledger.tasks)}

    @app.get("/fault/{kind}/{key}")
    async def fault(kind: str, key: str, tasks: Tasks) -> dict[str, str]:
        _schedule_fault(ledger, tasks, kind, key)
        if kind == "endpoint-raises":
            raise RuntimeError(f"endpoint {key} broke after scheduling")
        return {"scheduled": key}

    @app.get("/sync-fault/{kind}/{key}")
    def sync_fault(kind: str, key: str, tasks: Tasks) -> dict[str, str]:
        # A sync endpoint runs in a worker thread: scheduling crosses into the loop.
        _schedule_fault(ledger, tasks, kind, key)
        if kind == "endpoint-raises":
            raise RuntimeError(f"endpoint {key} broke after scheduling")
        return {"scheduled": key}

    @app.get("/block/{key}")
    async def block(key: str, tasks: Tasks, shield: bool = False, release: str = "forever") -> dict[str, str]:
        """One blocking task per phase; `release`: "forever", "key" (`/release/{key}`) or "shutdown"."""
        if release == "forever":
            until = forever()
        elif release == "shutdown":
            assert hooks.shutting_down is not None
            until = hooks.shutting_down
        else:
            until = ledger.event(f"{key}:release")
        for phase, target in zip(PHASES, (tasks, tasks.after_route, tasks.after_response), strict=True):
            name = f"{key}/{phase.value}"
            ledger.add(target.task(name=name, shield=shield).schedule(ledger.block, name, until))
        return {"scheduled": key}

    @app.get("/block-then-schedule/{key}")
    async def block_then_schedule(key: str, tasks: Tasks) -> dict[str, str]:
        name = f"{key}/{Phase.IMMEDIATE.value}"
        ledger.add(tasks.task(name=name).schedule(ledger.block_then_schedule, name, forever(), tasks))
        return {"scheduled": key}

    @app.get("/hang/{key}")
    async def hang(key: str, tasks: Tasks) -> None:
        """Schedule one task per phase, then never return: the request is in progress at shutdown."""
        _schedule_fault(ledger, tasks, "ok", key)
        ledger.event(f"{key}:entered").set()
        await forever().wait()

    @app.get("/started/{key}")
    async def started(key: str, phase: Phase | None = None) -> dict[str, str]:
        """Wait until every task of `key` (of `phase`) has started, or ended."""
        for task in ledger.named(key):
            if phase is None or task.phase is phase:
                await task.started.wait()
        return {"started": key}

    @app.get("/entered/{key}")
    async def entered(key: str) -> dict[str, str]:
        await ledger.event(f"{key}:entered").wait()
        return {"entered": key}

    @app.get("/release/{key}")
    async def release(key: str) -> dict[str, str]:
        ledger.event(f"{key}:release").set()
        return {"released": key}

    @app.get("/cancel/{key}")
    async def cancel(key: str) -> dict[str, str]:
        """Cancel every task of `key` from outside, once started; wait for the unshielded ones to end."""
        result = {}
        for task in ledger.named(key):
            await task.started.wait()
            task.cancel()
            if not task.config.shield:
                await task.wait()
            result[task.name] = task.status.value
        return result

    @app.get("/settle/{key}")
    async def settle(key: str) -> dict[str, str]:
        """Wait until every task of `key` has ended; return their statuses."""
        result = {}
        for task in ledger.named(key):
            await task.wait()
            result[task.name] = task.status.value
        return result

    @app.get("/disconnect/{key}")
    async def disconnect(key: str, request: Request, tasks: Tasks) -> dict[str, str]:
        """Schedule one task per phase, then return only once the client has gone away."""
        _schedule_fault(ledger, tasks, "ok", key)
        ledger.event(f"{key}:entered").set()
        while (await request.receive())["type"] != "http.disconnect":
            pass
        ledger.note(key, "endpoint saw http.disconnect")
        return {"late": key}

    @app.get("/stream/{key}")
    async def stream(key: str, tasks: Tasks) -> StreamingResponse:
        """Schedule one task per phase, then stream a first chunk and block: the client leaves mid-stream."""
        _schedule_fault(ledger, tasks, "ok", key)

        async def chunks() -> AsyncIterator[bytes]:
            # The endpoint has returned: its scheduler still starts immediate tasks.
            name = f"{key}/from-stream"
            ledger.add(tasks.task(name=name).schedule(ledger.ok, name))
            yield b"first chunk\n"
            try:
                await forever().wait()
                yield b"never sent\n"
            finally:
                ledger.note(key, "stream closed")

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


# --- accounting ------------------------------------------------------------------------------


class Accounting(Counter[str]):
    """How each task ended: succeeded, failed+handled, failed+logged (a `BaseException`: logged at ERROR,
    not handed to `on_error`, which takes an `Exception`), cancelled+logged, discarded+logged."""


def _messages(records: Iterable[logging.LogRecord], level: int = logging.NOTSET) -> list[str]:
    return [r.getMessage() for r in records if r.name == "fastapi_tasks" and r.levelno >= level]


def account(ledger: Ledger, records: Sequence[logging.LogRecord], keys: Iterable[str] | None = None) -> Accounting:
    """Check that every task of `keys` (default: all) ended and left its trace; count the outcomes.

    Raises:
        AssertionError: some tasks are unaccounted for; one `- ` bullet each.
    """
    __tracebackhide__ = True
    messages = _messages(records)
    errors = _messages(records, logging.ERROR)
    tasks = list(ledger.tasks.values()) if keys is None else [t for key in keys for t in ledger.named(key)]
    outcome = Accounting()
    problems = []
    for task in tasks:
        name, status, runs = task.name, task.status, ledger.runs[task.name]
        if status is TaskStatus.SUCCEEDED and runs == 1:
            outcome["succeeded"] += 1
        elif status is TaskStatus.FAILED and runs <= 1 and ledger.handled.get(name) is task.exception:
            # runs == 0: the call itself failed (wrong arguments) before the body began.
            if not any(m.startswith(f"Background task {name!r} failed: ") for m in messages):
                problems.append(f"- {name}: failed without a log record")
            outcome["failed+handled"] += 1
        elif (
            status is TaskStatus.FAILED
            and runs == 1
            and ledger.raised.get(name, name) is task.exception
            and name not in ledger.handled
        ):
            if not any(m.startswith(f"Background task {name!r} failed: ") for m in errors):
                problems.append(f"- {name}: failed with {type(task.exception).__name__} without an ERROR log record")
            outcome["failed+logged"] += 1
        elif status is TaskStatus.CANCELLED and runs <= 1:
            if f"Background task {name!r} was cancelled before it finished" not in messages:
                problems.append(f"- {name}: cancelled without a log record")
            outcome["cancelled+logged"] += 1
        elif status is TaskStatus.DISCARDED and runs == 0:
            if not any(m.startswith("Discarded ") and repr(name) in m for m in messages):
                problems.append(f"- {name}: discarded without a log record")
            outcome["discarded+logged"] += 1
        else:
            handled = name in ledger.handled
            problems.append(f"- {name}: status {status.value}, body ran {runs} time(s), on_error called: {handled}")
    if problems:
        raise AssertionError(f"{len(problems)} of {len(tasks)} task(s) unaccounted for:\n" + "\n".join(problems))
    return outcome
