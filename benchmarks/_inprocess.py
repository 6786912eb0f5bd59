"""The in-process measurements: per request, per scheduled task, memory. One event loop, one run.

Every app is served through `httpx.AsyncClient` + `ASGITransport` with its lifespan running
(asgi_lifespan.LifespanManager). Tasks tick a countdown that the client awaits, so a request's
clock stops only when all of its tasks have run.

The references are what a task costs without fastapi-tasks: anyio's `start_soon` on the app's task
group, and the event loop's own `loop.create_task`, which fastapi-tasks uses itself on asyncio.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import pstats
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import ModuleType
from typing import Annotated, Any

import anyio
import httpx
from _common import Countdown, median, rotated
from asgi_lifespan import LifespanManager
from fastapi import BackgroundTasks, Depends, FastAPI, Request

from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler

__all__ = ["EAGER", "Bench", "Variant"]

EAGER = sys.version_info >= (3, 12)
"""Whether this Python can start tasks eagerly: `add_tasks(app, eager_start=True)` raises before 3.12."""

COUNTDOWN = Countdown()
"""Ticked once by every task that finishes."""
STARTED = Countdown()
"""Ticked by every pending-memory task once it is running (and blocked on the gate)."""


class _Gate:
    event: anyio.Event | None = None


GATE = _Gate()

LegacyTasks: Any = None
"""fastapi-tasks 0.1.0's `Tasks`, once loaded."""

LIVE: set[asyncio.Task[None]] = set()
"""The `loop.create_task` references' tasks until they end: the loop keeps only weak references to
its tasks, so asyncio's docs require a strong one (fastapi-tasks keeps its own live set too)."""


def create_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    """`loop.create_task(coro)`, kept alive until it ends, as asyncio's docs require."""
    task = loop.create_task(coro)
    LIVE.add(task)
    task.add_done_callback(LIVE.discard)


async def work() -> None:
    """The task every variant schedules: the cheapest possible body."""
    COUNTDOWN.tick()


async def work_for(user_id: int) -> None:
    """The task of the toolkit figure: takes an argument, so that assertions have something to match."""
    COUNTDOWN.tick()


async def hold() -> None:
    """A task that stays pending (blocked on the gate) until released, for the memory figure."""
    STARTED.tick()
    assert GATE.event is not None
    await GATE.event.wait()
    COUNTDOWN.tick()


async def plain_dependency() -> int:
    return 1


async def generator_dependency() -> AsyncIterator[int]:
    yield 1


# --- per-request variants: each is the only route of an app of its own, so that no variant pays
# --- for matching other variants' routes first.


async def bare() -> None:
    return None


async def bg3(background: BackgroundTasks) -> None:
    background.add_task(work)
    background.add_task(work)
    background.add_task(work)


async def dep(value: Annotated[int, Depends(plain_dependency)]) -> None:
    return None


async def gendep(value: Annotated[int, Depends(generator_dependency)]) -> None:
    return None


async def ss3(request: Request) -> None:
    start_soon = request.state.fastapi_tasks_tg.start_soon
    start_soon(work)
    start_soon(work)
    start_soon(work)


async def ct3(request: Request) -> None:
    # Takes the request like `ss3`, so that FastAPI solves the same parameters for both references.
    loop = asyncio.get_running_loop()
    create_task(loop, work())
    create_task(loop, work())
    create_task(loop, work())


async def t0(tasks: Tasks) -> None:
    return None


async def t3(tasks: Tasks) -> None:
    tasks.schedule(work)
    tasks.after_route.schedule(work)
    tasks.after_response.schedule(work)


async def old0(tasks: LegacyTasks) -> None:
    return None


async def old3(tasks: LegacyTasks) -> None:
    tasks.schedule(work)
    tasks.after_route.schedule(work)
    tasks.after_response.schedule(work)


# key: (label, which library the app has, endpoint, tasks each request runs). "eager" is an app with
# `add_tasks(app, eager_start=True)`, measured on Python 3.12+ only (EAGER).
REQUEST_VARIANTS: dict[str, tuple[str, str, Callable[..., Any], int]] = {
    "bare": ("bare endpoint (plain app)", "plain", bare, 0),
    "bare_mw": ("bare endpoint, app with add_tasks", "ours", bare, 0),
    "dep": ("reference: plain async def dependency", "plain", dep, 0),
    "dep_mw": ("reference: plain async def dependency, app with add_tasks", "ours", dep, 0),
    "gendep": ("reference: async generator dependency", "plain", gendep, 0),
    "ss3": ("reference: 3 x task_group.start_soon", "ours", ss3, 3),
    "ct3": ("reference: 3 x loop.create_task", "ours", ct3, 3),
    "t0": ("Tasks parameter, no task", "ours", t0, 0),
    "t3": ("Tasks, 3 tasks (one per phase)", "ours", t3, 3),
    "t3e": ("Tasks, 3 tasks (one per phase), eager_start", "eager", t3, 3),
    "bg3": ("BackgroundTasks, 3 tasks", "plain", bg3, 3),
    "old0": ("fastapi-tasks 0.1.0, no task", "legacy", old0, 0),
    "old3": ("fastapi-tasks 0.1.0, 3 tasks", "legacy", old3, 3),
}


def _single_route_app(library: str, legacy: ModuleType | None, endpoint: Callable[..., Any]) -> FastAPI:
    app = FastAPI()
    if library == "ours":
        add_tasks(app)
    elif library == "eager":
        add_tasks(app, eager_start=True)
    elif library == "legacy":
        assert legacy is not None
        legacy.add_tasks(app)
    app.get("/")(endpoint)
    return app


# --- utility apps: many tasks, pending tasks, the recorder.


def _plain_app() -> FastAPI:
    app = FastAPI()

    @app.get("/many/bg")
    async def many_bg(n: int, background: BackgroundTasks) -> float:
        add = background.add_task
        start = time.perf_counter()
        for _ in range(n):
            add(work)
        return time.perf_counter() - start

    return app


def _our_app() -> FastAPI:
    app = FastAPI()
    add_tasks(app)

    @app.get("/signup/{user_id}")
    async def signup(user_id: int, tasks: Tasks) -> None:
        tasks.schedule(work_for, user_id)
        tasks.after_route.schedule(work_for, user_id)
        tasks.after_response.schedule(work_for, user_id)

    @app.get("/many/ours")
    async def many_ours(n: int, tasks: Tasks) -> float:
        schedule = tasks.schedule
        start = time.perf_counter()
        for _ in range(n):
            schedule(work)
        return time.perf_counter() - start

    @app.get("/many/floor")
    async def many_floor(n: int, request: Request) -> float:
        start_soon = request.state.fastapi_tasks_tg.start_soon
        start = time.perf_counter()
        for _ in range(n):
            start_soon(work)
        return time.perf_counter() - start

    @app.get("/many/create_task")
    async def many_create_task(n: int, request: Request) -> float:
        # The helper inlined, like `start_soon` bound above: the floor pays for no extra call.
        create, keep, discard = asyncio.get_running_loop().create_task, LIVE.add, LIVE.discard
        start = time.perf_counter()
        for _ in range(n):
            task = create(work())
            keep(task)
            task.add_done_callback(discard)
        return time.perf_counter() - start

    @app.get("/pending/ours")
    async def pending_ours(n: int, tasks: Tasks) -> float:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            tasks.schedule(hold)
        await STARTED.wait()
        return (tracemalloc.get_traced_memory()[0] - before) / n

    @app.get("/pending/floor")
    async def pending_floor(n: int, request: Request) -> float:
        start_soon = request.state.fastapi_tasks_tg.start_soon
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            start_soon(hold)
        await STARTED.wait()
        return (tracemalloc.get_traced_memory()[0] - before) / n

    @app.get("/pending/create_task")
    async def pending_create_task(n: int, request: Request) -> float:
        loop = asyncio.get_running_loop()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            create_task(loop, hold())
        await STARTED.wait()
        return (tracemalloc.get_traced_memory()[0] - before) / n

    return app


def _eager_app() -> FastAPI:
    """The per-task and memory endpoints of fastapi-tasks, on an app with `eager_start=True` (3.12+)."""
    app = FastAPI()
    add_tasks(app, eager_start=True)

    @app.get("/many/eager")
    async def many_eager(n: int, tasks: Tasks) -> float:
        schedule = tasks.schedule
        start = time.perf_counter()
        for _ in range(n):
            schedule(work)
        return time.perf_counter() - start

    @app.get("/pending/eager")
    async def pending_eager(n: int, tasks: Tasks) -> float:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            tasks.schedule(hold)
        await STARTED.wait()
        return (tracemalloc.get_traced_memory()[0] - before) / n

    return app


def _legacy_app(legacy: ModuleType) -> FastAPI:
    app = FastAPI()
    legacy.add_tasks(app)

    @app.get("/many/old")
    async def many_old(n: int, tasks: LegacyTasks) -> float:
        schedule = tasks.schedule
        start = time.perf_counter()
        for _ in range(n):
            schedule(work)
        return time.perf_counter() - start

    @app.get("/pending/old")
    async def pending_old(n: int, tasks: LegacyTasks) -> float:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            tasks.schedule(hold)
        await STARTED.wait()
        return (tracemalloc.get_traced_memory()[0] - before) / n

    return app


@dataclass
class Variant:
    key: str
    label: str
    client: httpx.AsyncClient
    path: str
    tasks: int


class Bench:
    """All apps running, each behind its own client, in one event loop."""

    def __init__(self, legacy: ModuleType | None) -> None:
        self.legacy = legacy
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.apps: dict[str, FastAPI] = {}
        self._variants: list[tuple[str, str, int]] = []
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Bench:
        # Annotations are strings here (PEP 563): FastAPI resolves `LegacyTasks` in this module's globals.
        global LegacyTasks
        apps = {"plain": _plain_app(), "ours": _our_app()}
        if self.legacy is not None:
            LegacyTasks = self.legacy.Tasks
            apps["legacy"] = _legacy_app(self.legacy)
        if EAGER:
            apps["eager"] = _eager_app()
        self._variants = []
        for key, (label, library, endpoint, tasks) in REQUEST_VARIANTS.items():
            if (library == "legacy" and self.legacy is None) or (library == "eager" and not EAGER):
                continue
            apps[key] = _single_route_app(library, self.legacy, endpoint)
            self._variants.append((key, label, tasks))
        self.apps = apps
        for name, app in apps.items():
            manager = await self._stack.enter_async_context(LifespanManager(app))
            transport = httpx.ASGITransport(app=manager.app)
            self.clients[name] = await self._stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://bench")
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    # --- per request ---------------------------------------------------------------------------

    def request_variants(self) -> list[Variant]:
        return [Variant(key, label, self.clients[key], "/", tasks) for key, label, tasks in self._variants]

    @staticmethod
    async def _chunk(variant: Variant, n: int) -> float:
        countdown, get, path, expected = COUNTDOWN, variant.client.get, variant.path, variant.tasks
        start = time.perf_counter()
        for _ in range(n):
            countdown.left = expected
            await get(path)
            if countdown.left:
                await countdown.wait()
        return (time.perf_counter() - start) / n

    async def check(self) -> None:
        """Every variant answers 200 and runs exactly its tasks."""
        for variant in self.request_variants():
            COUNTDOWN.left = variant.tasks
            response = await variant.client.get(variant.path)
            response.raise_for_status()
            with anyio.fail_after(5):
                await COUNTDOWN.wait()
            assert COUNTDOWN.left == 0, variant

    async def per_request(self, rounds: int, chunk: int) -> dict[str, dict[str, float]]:
        """Median seconds per request and median per-round ratio to the bare endpoint, for each variant.

        A full collection runs before every chunk, outside its clock: otherwise the garbage one variant
        leaves (a generation-2 collection it brought close) may be collected during the next one's chunk.
        """
        variants = self.request_variants()
        for variant in variants:  # warm-up: caches, code paths, allocator
            await self._chunk(variant, chunk)
        times: dict[str, list[float]] = {v.key: [] for v in variants}
        ratios: dict[str, list[float]] = {v.key: [] for v in variants}
        by_key = {v.key: v for v in variants}
        for round_no in range(rounds):
            this_round = {}
            for key in rotated(list(by_key), round_no):
                gc.collect()
                this_round[key] = await self._chunk(by_key[key], chunk)
            for key, seconds in this_round.items():
                times[key].append(seconds)
                ratios[key].append(seconds / this_round["bare"])
        out = {key: {"seconds": median(times[key]), "ratio": median(ratios[key])} for key in by_key}
        # Ratios between two non-bare variants, per round too (the BackgroundTasks target).
        for key in ("t3", "t3e", "ss3", "ct3", "old3"):
            if key in out:
                out[key]["vs_bg3"] = median([a / b for a, b in zip(times[key], times["bg3"], strict=True)])
        return out

    # --- per scheduled task --------------------------------------------------------------------

    def many_variants(self) -> dict[str, tuple[httpx.AsyncClient, str]]:
        variants = {
            "floor": (self.clients["ours"], "/many/floor"),
            "create_task": (self.clients["ours"], "/many/create_task"),
            "ours": (self.clients["ours"], "/many/ours"),
            "bg": (self.clients["plain"], "/many/bg"),
        }
        if "eager" in self.clients:
            variants["eager"] = (self.clients["eager"], "/many/eager")
        if "legacy" in self.clients:
            variants["old"] = (self.clients["legacy"], "/many/old")
        return variants

    @staticmethod
    async def _many(client: httpx.AsyncClient, path: str, n: int) -> tuple[float, float]:
        COUNTDOWN.left = n
        start = time.perf_counter()
        response = await client.get(path, params={"n": n})
        await COUNTDOWN.wait()
        total = time.perf_counter() - start
        response.raise_for_status()
        return total / n, float(response.json()) / n

    async def per_task(self, rounds: int, n: int) -> dict[str, dict[str, float]]:
        """Per task: schedule + run to completion, and schedule alone; ratios to the start_soon floor."""
        variants = self.many_variants()
        for client, path in variants.values():
            await self._many(client, path, min(n, 1000))
        totals: dict[str, list[float]] = {k: [] for k in variants}
        schedules: dict[str, list[float]] = {k: [] for k in variants}
        ratios: dict[str, list[float]] = {k: [] for k in variants}
        sched_ratios: dict[str, list[float]] = {k: [] for k in variants}
        for round_no in range(rounds):
            this_round = {}
            for key in rotated(list(variants), round_no):
                gc.collect()
                this_round[key] = await self._many(*variants[key], n)
            for key, (total, schedule) in this_round.items():
                totals[key].append(total)
                schedules[key].append(schedule)
                ratios[key].append(total / this_round["floor"][0])
                sched_ratios[key].append(schedule / this_round["floor"][1])
        return {
            key: {
                "total": median(totals[key]),
                "schedule": median(schedules[key]),
                "ratio": median(ratios[key]),
                "schedule_ratio": median(sched_ratios[key]),
            }
            for key in variants
        }

    # --- memory --------------------------------------------------------------------------------

    async def _pending(self, client: httpx.AsyncClient, path: str, n: int) -> float:
        GATE.event = anyio.Event()
        STARTED.left = n
        COUNTDOWN.left = n
        gc.collect()
        gc.disable()
        try:
            response = await client.get(path, params={"n": n})
        finally:
            gc.enable()
        GATE.event.set()
        await COUNTDOWN.wait()
        response.raise_for_status()
        return float(response.json())

    async def pending_memory(self, rounds: int, n: int) -> dict[str, dict[str, float]]:
        """Bytes per pending task (tracemalloc), and bytes above the start_soon floor and above
        `loop.create_task`, each the median of the per-round figures."""
        variants = {
            "floor": (self.clients["ours"], "/pending/floor"),
            "create_task": (self.clients["ours"], "/pending/create_task"),
            "ours": (self.clients["ours"], "/pending/ours"),
        }
        if "eager" in self.clients:
            variants["eager"] = (self.clients["eager"], "/pending/eager")
        if "legacy" in self.clients:
            variants["old"] = (self.clients["legacy"], "/pending/old")
        per_task: dict[str, list[float]] = {k: [] for k in variants}
        above: dict[str, list[float]] = {k: [] for k in variants}
        above_ct: dict[str, list[float]] = {k: [] for k in variants}
        tracemalloc.start()
        try:
            # Warm up with as many tasks as measured: the event loop's and anyio's sets and dicts never
            # shrink, so after this no variant pays for their growth inside a measurement.
            for client, path in variants.values():
                await self._pending(client, path, n)
            for round_no in range(rounds):
                this_round = {}
                for key in rotated(list(variants), round_no):
                    this_round[key] = await self._pending(*variants[key], n)
                for key, value in this_round.items():
                    per_task[key].append(value)
                    above[key].append(value - this_round["floor"])
                    above_ct[key].append(value - this_round["create_task"])
        finally:
            tracemalloc.stop()
        return {
            key: {"bytes": median(per_task[key]), "above": median(above[key]), "above_ct": median(above_ct[key])}
            for key in variants
        }

    async def growth(self, key: str, requests: int, warmup: int) -> dict[str, Any]:
        """Traced memory after `requests` requests of a variant, against the baseline taken after warm-up."""
        variant = {v.key: v for v in self.request_variants()}[key]
        return await self._traced_growth(lambda n: self._chunk(variant, n), requests, warmup)

    @staticmethod
    async def _traced_growth(run: Callable[[int], Awaitable[object]], requests: int, warmup: int) -> dict[str, Any]:
        """Traced memory after `run(requests)`, against the baseline taken after `run(warmup)`.

        `gc.collect()` before every reading: only what is still referenced counts, not garbage that
        a collection would free.
        """
        tracemalloc.start(1)
        try:
            # Warm up while tracing: objects made before tracing started and replaced since (cache
            # entries, containers that grew) would otherwise count as growth.
            await run(warmup)
            gc.collect()
            base_snapshot = tracemalloc.take_snapshot()
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            half = requests // 2
            await run(half)
            gc.collect()
            middle = tracemalloc.get_traced_memory()[0]
            await run(requests - half)
            gc.collect()
            end = tracemalloc.get_traced_memory()[0]
            top: list[str] = []
            if end - base > 0:
                stats = tracemalloc.take_snapshot().compare_to(base_snapshot, "lineno")
                for stat in stats[:5]:
                    if stat.size_diff > 0:
                        where = stat.traceback[0]
                        filename = where.filename.rsplit("/site-packages/", 1)[-1]
                        top.append(f"{stat.size_diff:+,} B in {stat.count_diff:+,} blocks at {filename}:{where.lineno}")
        finally:
            tracemalloc.stop()
        return {"base": base, "middle": middle, "end": end, "growth": end - base, "requests": requests, "top": top}

    # --- the recorder's own overhead ------------------------------------------------------------

    async def _signups(self, n: int, recorder: bool) -> float:
        client = self.clients["ours"]
        app = self.apps["ours"]
        start = time.perf_counter()
        for user_id in range(n):
            COUNTDOWN.left = 3
            if recorder:
                tasks_recorder = RecordingScheduler()
                tasks_recorder.install(app)
                await client.get(f"/signup/{user_id}")
                tasks_recorder.assert_scheduled_once(work_for, user_id, phase="immediate")
                tasks_recorder.assert_scheduled_once(work_for, user_id, phase="after_route")
                tasks_recorder.assert_scheduled_once(work_for, user_id, phase="after_response")
                tasks_recorder.uninstall()
            else:
                await client.get(f"/signup/{user_id}")
            if COUNTDOWN.left:
                await COUNTDOWN.wait()
        return (time.perf_counter() - start) / n

    async def recorder_overhead(self, rounds: int, chunk: int) -> dict[str, float]:
        """Per test: install a recorder, send the request, assert its 3 tasks, uninstall; minus the same
        request on the real scheduler (awaited until its tasks ran). Median of per-round differences."""
        await self._signups(chunk, True)
        await self._signups(chunk, False)
        real, recorded, extra = [], [], []
        for round_no in range(rounds):
            order = (True, False) if round_no % 2 else (False, True)
            this_round = {flag: await self._signups(chunk, flag) for flag in order}
            real.append(this_round[False])
            recorded.append(this_round[True])
            extra.append(this_round[True] - this_round[False])
        return {"real": median(real), "recorded": median(recorded), "overhead": median(extra)}

    async def recorder_growth(self, tests: int, warmup: int, rounds: int) -> dict[str, Any]:
        """Traced memory kept by `tests` recorder tests (install, request, assert, uninstall), and by as many
        of the same requests on the real scheduler, in alternating rounds; medians of the rounds.

        The recorder's own growth is the difference between the two, per round. Caches and free lists that
        are still filling leave a few KB now and then in either variant, bounded, while what a test kept
        would come back in every round: the median of the rounds keeps the latter and drops the former.

        The last request's objects (with a recorder, the recorder and its records: about 6 KB) stay alive
        until the next request: a few unmeasured requests of the same variant come first, so that a run
        neither frees what the other variant left nor counts as growth what the other variant would free.
        """
        runs = {"recorder": True, "real": False}
        growth: dict[str, list[int]] = {key: [] for key in runs}
        net: list[int] = []
        tracemalloc.start(1)
        try:
            for recorder in runs.values():  # warm up while tracing (see `_traced_growth`)
                await self._signups(warmup, recorder)
            for round_no in range(rounds):
                this_round = {}
                for key in rotated(list(runs), round_no):
                    await self._signups(10, runs[key])
                    gc.collect()
                    before = tracemalloc.get_traced_memory()[0]
                    await self._signups(tests, runs[key])
                    gc.collect()
                    this_round[key] = tracemalloc.get_traced_memory()[0] - before
                for key, value in this_round.items():
                    growth[key].append(value)
                net.append(this_round["recorder"] - this_round["real"])
        finally:
            tracemalloc.stop()
        return {
            "tests": tests,
            "rounds": rounds,
            "recorder": median(growth["recorder"]),
            "real": median(growth["real"]),
            "net": median(net),
            "net_rounds": net,
        }

    # --- profiles ------------------------------------------------------------------------------

    async def profile(self, what: str, n: int, limit: int = 25) -> str:
        """A cProfile of `n` requests of a per-request variant, or of scheduling `n` tasks ("many")."""
        profiler = cProfile.Profile()
        run: Callable[[], Any]
        if what == "many":
            client, path = self.many_variants()["ours"]

            def run() -> Any:
                return self._many(client, path, n)
        else:
            variant = {v.key: v for v in self.request_variants()}[what]

            def run() -> Any:
                return self._chunk(variant, n)

        await run()  # warm
        profiler.enable()
        await run()
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        out.write(f"Everything, by own time ({n:,} {'tasks' if what == 'many' else 'requests'}):\n")
        stats.sort_stats("tottime").print_stats(limit)
        out.write("fastapi-tasks' own functions and the exit stacks they use, by cumulative time:\n")
        stats.sort_stats("cumulative").print_stats(r"fastapi_tasks/|contextlib", limit)
        return out.getvalue()
