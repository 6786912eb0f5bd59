"""Load and fault scenarios, shared by the tests (CI size) and `benchmarks/reliability.py` (larger runs).

Each scenario drives an app through an `Env` (a real uvicorn server, or in-process ASGI on any
anyio backend), then accounts for every task it made the app schedule.
"""

from __future__ import annotations

import gc
import inspect
import logging
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import httpx
import sniffio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from fastapi_tasks import Task, TasksBatch, TasksScheduler, TaskStatus

from ._apps import (
    ASYNCIO_ONLY_KINDS,
    BASE_FAULTS,
    FAULT_KINDS,
    Accounting,
    Ledger,
    ServerHooks,
    Tally,
    account,
    make_fault_app,
    make_load_app,
    make_starvation_app,
)
from ._server import LiveServer

__all__ = [
    "Env",
    "FaultResult",
    "LoadResult",
    "StarvationResult",
    "asgi_env",
    "live_env",
    "run_load",
    "run_starvation",
]

Records = Callable[[], Sequence[logging.LogRecord]]
"""The log records captured so far (pytest's `caplog.records`, or the benchmark's own handler)."""

_CLIENT_TIMEOUT = httpx.Timeout(60.0)  # a hang guard, not a measurement
_NO_KEEP_ALIVE = httpx.Limits(max_keepalive_connections=0)
"""A connection per request for httpx clients of a live server, which may close a kept-alive connection
(after an endpoint raised, or after 5 s idle) just as the next request reuses it."""


class Env:
    """An app being served and a client to it; `stop()` shuts the app down, `start()` serves it again."""

    live: bool

    def __init__(self, app: FastAPI, hooks: ServerHooks) -> None:
        self.app = app
        self.hooks = hooks
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "the app is not being served"
        return self._client

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


class _LiveEnv(Env):
    live = True

    def __init__(self, app: FastAPI, hooks: ServerHooks, graceful_timeout: int | None) -> None:
        super().__init__(app, hooks)
        self._graceful_timeout = graceful_timeout
        self.server: LiveServer | None = None

    async def start(self) -> None:
        self.server = LiveServer(self.app, self.hooks.started, graceful_timeout=self._graceful_timeout)
        await anyio.to_thread.run_sync(self.server.start)
        self._client = httpx.AsyncClient(base_url=self.server.url, timeout=_CLIENT_TIMEOUT, limits=_NO_KEEP_ALIVE)

    async def stop(self) -> None:
        assert self.server is not None
        assert self._client is not None
        # The server first: a request still in progress (`/hang`) must be cut off by the shutdown.
        await self.server.astop()
        await self._client.aclose()
        self.server = self._client = None


class _AsgiEnv(Env):
    live = False

    def __init__(self, app: FastAPI, hooks: ServerHooks) -> None:
        super().__init__(app, hooks)
        self._manager: LifespanManager | None = None

    async def start(self) -> None:
        self._manager = LifespanManager(self.app, startup_timeout=None, shutdown_timeout=None)
        await self._manager.__aenter__()
        transport = httpx.ASGITransport(app=self._manager.app, raise_app_exceptions=False)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=_CLIENT_TIMEOUT)

    async def stop(self) -> None:
        assert self._manager is not None
        assert self._client is not None
        await self._client.aclose()
        await self._manager.__aexit__(None, None, None)
        self._manager = self._client = None


@asynccontextmanager
async def live_env(app: FastAPI, hooks: ServerHooks, *, graceful_timeout: int | None = 0) -> AsyncIterator[Env]:
    """Serve `app` with uvicorn on 127.0.0.1; `graceful_timeout=0`: shutdown cuts off requests in progress."""
    env = _LiveEnv(app, hooks, graceful_timeout)
    await env.start()
    try:
        yield env
    finally:
        if env.server is not None:
            await env.stop()


@asynccontextmanager
async def asgi_env(app: FastAPI, hooks: ServerHooks) -> AsyncIterator[Env]:
    """Serve `app` in-process (httpx.ASGITransport + asgi_lifespan), on the running anyio backend."""
    env = _AsgiEnv(app, hooks)
    await env.start()
    try:
        yield env
    finally:
        if env._manager is not None:
            await env.stop()


# --- load ------------------------------------------------------------------------------------

_TRACKED = (Task, TasksScheduler, TasksBatch)


def live_objects() -> Counter[str]:
    """How many `Task`, `TasksScheduler` and `TasksBatch` objects are alive, after a full collection."""
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, _TRACKED))


@dataclass
class LoadResult:
    """What a load run did and what it left behind."""

    requests: int
    tasks_expected: int
    tasks_ran: int
    ran_twice: int
    failed_requests: int
    objects_before: Counter[str]
    objects_after: Counter[str]
    gc_objects_before: int
    gc_objects_after: int
    seconds: float
    """How long the counted requests and their tasks took (for scale only: nothing asserts it)."""
    faulty: Counter[str] = field(default_factory=Counter)
    """How the tasks that ended with a `BaseException` on purpose ended: "failed", or what went wrong."""
    retained: Counter[str] = field(init=False)

    def __post_init__(self) -> None:
        self.retained = self.objects_after - self.objects_before

    @property
    def tasks_lost(self) -> int:
        return self.tasks_expected - self.tasks_ran


class _Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1 over a plain socket.

    Rather than httpx: under coverage, httpx's own per-request work tripled the load run's CPU
    time, and what is under load here is the server.
    """

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    async def get(self, path: str) -> tuple[str, bytes]:
        """GET `path`; return the status line and the body."""
        await self.stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += await self.stream.receive()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in header_lines)
        length = int(headers["content-length"])
        while len(self._buffer) < length:
            self._buffer += await self.stream.receive()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return status_line, body


async def _client(port: int, rids: Iterable[int]) -> int:
    """One keep-alive connection sending one request per id, in turn; returns the failures."""
    failures = 0
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        connection = _Connection(stream)
        for rid in rids:
            status_line, body = await connection.get(f"/async/{rid}" if rid % 2 else f"/sync/{rid}")
            if status_line != "HTTP/1.1 200 OK" or body != f'{{"rid":{rid}}}'.encode():
                failures += 1
    return failures


async def _fire(port: int, rids: range, concurrency: int) -> int:
    """Send one request per id from `concurrency` concurrent connections; count the failures."""
    failures = 0

    async def client(share: range) -> None:
        nonlocal failures
        failures += await _client(port, share)

    async with anyio.create_task_group() as tg:
        for offset in range(concurrency):
            tg.start_soon(client, rids[offset::concurrency])
    return failures


async def run_load(requests: int, *, concurrency: int = 20, warmup: int = 200, fault_every: int = 0) -> LoadResult:
    """Send `requests` requests to a real server, each scheduling one task per phase; count every run.

    A warm-up (not counted) first starts the worker threads and warms the caches, so that the
    object counts taken before and after compare like with like. With `fault_every` (say 100:
    1% of the tasks), that share of the tasks count their run and then end with a `BaseException`
    of each of `BASE_FAULTS` in turn; each must end "failed", and nothing else may change.
    """
    tally, hooks = Tally(), ServerHooks()
    app = make_load_app(tally, hooks, fault_every=fault_every)
    with LiveServer(app, hooks.started) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=_CLIENT_TIMEOUT, limits=_NO_KEEP_ALIVE) as control:
            tally.expect(3 * warmup)
            failed = await _fire(server.port, range(-warmup, 0), concurrency)
            await anyio.to_thread.run_sync(tally.done.wait, 60.0)
            await control.get("/drain")
            tally.reset()
            objects_before = live_objects()
            gc_before = len(gc.get_objects())

            expected = 3 * requests
            tally.expect(expected)
            started = time.perf_counter()
            failed += await _fire(server.port, range(requests), concurrency)
            # after_response tasks may still be running when the last response arrives: wait for the
            # count, then for the last bodies to have returned (their tasks to have ended).
            await anyio.to_thread.run_sync(tally.done.wait, 60.0)
            seconds = time.perf_counter() - started
            await control.get("/drain")
            faulty = tally.faulty_outcomes()
            tally.forget_faulty()
            objects_after = live_objects()
            gc_after = len(gc.get_objects())
    counts = tally.counts
    return LoadResult(
        requests=requests,
        tasks_expected=expected,
        tasks_ran=len(counts),
        ran_twice=sum(1 for n in counts.values() if n != 1),
        failed_requests=failed,
        objects_before=objects_before,
        objects_after=objects_after,
        gc_objects_before=gc_before,
        gc_objects_after=gc_after,
        seconds=seconds,
        faulty=faulty,
    )


# --- starvation ------------------------------------------------------------------------------

_ANYIO_DEFAULT_THREADS = 40
"""The threads of anyio's default limiter, which FastAPI's sync endpoints use."""


def _task_threads() -> int:
    """How many sync tasks can run at once in an app made with `add_tasks(app)`."""
    from fastapi_tasks import add_tasks

    parameter = inspect.signature(add_tasks).parameters.get("max_threads")
    # Without `max_threads`, sync tasks share anyio's default limiter with the sync endpoints.
    return _ANYIO_DEFAULT_THREADS if parameter is None else int(parameter.default)


@dataclass
class StarvationResult:
    """Latencies of a trivial sync endpoint, idle and while slow sync tasks run (seconds per request)."""

    tasks: int
    running: int
    """How many of the `tasks` ran at once (the others waited for a thread)."""
    idle: list[float]
    busy: list[float]
    starved: int
    """Requests that got no answer within the timeout while the tasks ran (each ends its round's busy chunk)."""

    @staticmethod
    def percentile(latencies: Sequence[float], p: int) -> float:
        return statistics.quantiles(latencies, n=100, method="inclusive")[p - 1] if len(latencies) > 1 else latencies[0]

    @property
    def p99_ratio(self) -> float:
        """The busy p99 over the idle p99: 1.0 is no slowdown at all."""
        return self.percentile(self.busy, 99) / self.percentile(self.idle, 99)


async def run_starvation(
    *, tasks: int = 100, rounds: int = 40, chunk: int = 50, answer_timeout: float = 3.0
) -> StarvationResult:
    """Time `/ping` (a `def` endpoint) on a real server, idle and while `tasks` slow sync tasks run.

    The two variants alternate in chunks of `chunk` requests (which goes first alternates too),
    so that both see the same machine; each round's busy chunk starts once the tasks are running
    and they are released after it. A request that gets no answer within `answer_timeout` seconds
    counts as starved and ends its chunk. For a benchmark: timings are measured, never asserted.
    """
    hooks = ServerHooks()
    running = min(tasks, _task_threads())
    result = StarvationResult(tasks=tasks, running=running, idle=[], busy=[], starved=0)
    with LiveServer(make_starvation_app(hooks), hooks.started) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=_CLIENT_TIMEOUT, limits=_NO_KEEP_ALIVE) as control:

            async def timed_chunk(latencies: list[float]) -> None:
                async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
                    connection = _Connection(stream)
                    for _ in range(chunk):
                        with anyio.move_on_after(answer_timeout):
                            started = time.perf_counter()
                            status_line, _ = await connection.get("/ping")
                            latencies.append(time.perf_counter() - started)
                            assert status_line == "HTTP/1.1 200 OK", status_line
                            continue
                        result.starved += 1
                        return  # the connection still waits for that answer: this chunk is over

            await timed_chunk([])  # warm-up: the first connection, the endpoint's first thread
            for round_ in range(rounds):
                for variant in ("idle", "busy") if round_ % 2 else ("busy", "idle"):
                    if variant == "idle":
                        await timed_chunk(result.idle)
                        continue
                    await control.post(f"/block/{tasks}", params={"running": running})
                    try:
                        await timed_chunk(result.busy)
                    finally:
                        await control.get("/release")
    return result


# --- faults ----------------------------------------------------------------------------------


@dataclass
class FaultResult:
    """What a fault scenario injected and how every task it caused ended."""

    scenario: str
    faults: int = 0
    accounting: Accounting = field(default_factory=Accounting)
    probes: int = 0

    def add(self, accounting: Accounting) -> None:
        self.accounting.update(accounting)


async def probe(env: Env, ledger: Ledger, records: Records, result: FaultResult) -> None:
    """The app still serves and schedules: a fresh request's three tasks all succeed."""
    __tracebackhide__ = True
    key = f"probe-{result.scenario}-{result.probes}"
    result.probes += 1
    response = await env.client.get(f"/fault/ok/{key}")
    assert response.status_code == 200, response.text
    settled = (await env.client.get(f"/settle/{key}")).json()
    assert set(settled.values()) == {"succeeded"}, settled
    assert account(ledger, records(), [key]) == {"succeeded": 3}
    result.add(Accounting(succeeded=3))


async def task_faults(env: Env, ledger: Ledger, records: Records) -> FaultResult:
    """Tasks that raise (on the loop and in worker threads), handlers that raise, wrong arguments,
    endpoints that raise after scheduling, tasks and handlers that end with a `BaseException` (and,
    on asyncio, a foreign cancellation): from async and sync endpoints, in every phase."""
    result = FaultResult("task faults")
    server_library = "asyncio" if env.live else sniffio.current_async_library()
    for kind in FAULT_KINDS[1:]:
        if kind in ASYNCIO_ONLY_KINDS and server_library != "asyncio":
            continue
        for endpoint in ("fault", "sync-fault"):
            key = f"{kind}-{endpoint}"
            # A hang guard, not a measurement: a task whose handle never ends would block /settle for ever.
            with anyio.fail_after(_CLIENT_TIMEOUT.read):
                response = await env.client.get(f"/{endpoint}/{kind}/{key}")
                await env.client.get(f"/settle/{key}")
            accounting = account(ledger, records(), [key])
            if kind == "endpoint-raises":
                assert response.status_code == 500
                assert accounting == {"succeeded": 1, "discarded+logged": 2}, accounting
                result.faults += 1
            elif kind in BASE_FAULTS:
                assert response.status_code == 200, response.text
                assert accounting == {"failed+logged": 3}, accounting
                result.faults += 3
            else:
                assert response.status_code == 200, response.text
                assert accounting == {"failed+handled": 3}, accounting
                result.faults += 3
            if kind.startswith("sync-"):
                # Sync task bodies ran in worker threads, not on the event loop's thread.
                assert env.hooks.loop_thread is not None
                threads = {ledger.threads[task.name] for task in ledger.named(key)}
                assert env.hooks.loop_thread not in threads, "a sync task ran on the event loop's thread"
            if "handler-raises" in kind:
                messages = [r.getMessage() for r in records() if r.name == "fastapi_tasks"]
                for task in ledger.named(key):
                    assert any(
                        m.startswith("The on_error handler ") and f"of background task {task.name!r} raised: " in m
                        for m in messages
                    ), f"no log record of the failed on_error handler of {task.name!r}"
                result.faults += 3
            result.add(accounting)
            await probe(env, ledger, records, result)
    return result


async def external_cancel(env: Env, ledger: Ledger, records: Records) -> FaultResult:
    """`task.cancel()` from outside, on running tasks of every phase; shielded ones run on."""
    result = FaultResult("external cancel")
    await env.client.get("/block/cancel-plain")
    cancelled = (await env.client.get("/cancel/cancel-plain")).json()
    assert set(cancelled.values()) == {"cancelled"}, cancelled
    result.add(account(ledger, records(), ["cancel-plain"]))
    result.faults += 3

    await env.client.get("/block/cancel-shielded", params={"shield": True, "release": "key"})
    still = (await env.client.get("/cancel/cancel-shielded")).json()
    assert set(still.values()) == {"running"}, still
    await env.client.get("/release/cancel-shielded")
    settled = (await env.client.get("/settle/cancel-shielded")).json()
    assert set(settled.values()) == {"succeeded"}, settled
    result.add(account(ledger, records(), ["cancel-shielded"]))
    result.faults += 3
    await probe(env, ledger, records, result)
    assert result.accounting == {"cancelled+logged": 3, "succeeded": 3 + 3 * result.probes}, result.accounting
    return result


async def _raw_request(env: Env, path: str) -> anyio.abc.SocketStream:
    assert env.live, "a raw connection needs a real server"
    url = httpx.URL(str(env.client.base_url))
    assert url.port is not None
    stream = await anyio.connect_tcp("127.0.0.1", url.port)
    await stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return stream


async def disconnects(env: Env, ledger: Ledger, records: Records) -> FaultResult:
    """Clients that close the connection mid-request and mid-stream (a real server, a real socket)."""
    result = FaultResult("disconnects")
    # Mid-request: the endpoint has scheduled its tasks and is waiting when the client goes away.
    stream = await _raw_request(env, "/disconnect/gone-mid-request")
    await env.client.get("/entered/gone-mid-request")
    await stream.aclose()
    settled = (await env.client.get("/settle/gone-mid-request")).json()
    # The endpoint returns normally (it saw the disconnect), so every phase still runs.
    assert set(settled.values()) == {"succeeded"}, settled
    assert ledger.notes["gone-mid-request"] == "endpoint saw http.disconnect"
    result.add(account(ledger, records(), ["gone-mid-request"]))
    result.faults += 1
    await probe(env, ledger, records, result)

    # Mid-stream: the first chunk has arrived, the generator is blocked, the client goes away.
    stream = await _raw_request(env, "/stream/gone-mid-stream")
    received = b""
    while b"first chunk" not in received:
        received += await stream.receive()
    await stream.aclose()
    settled = (await env.client.get("/settle/gone-mid-stream")).json()
    assert settled == dict.fromkeys(
        [
            "gone-mid-stream/immediate",
            "gone-mid-stream/after_route",
            "gone-mid-stream/from-stream",
            "gone-mid-stream/after_response",
        ],
        "succeeded",
    ), settled
    assert ledger.notes["gone-mid-stream"] == "stream closed"
    result.add(account(ledger, records(), ["gone-mid-stream"]))
    result.faults += 1
    await probe(env, ledger, records, result)
    return result


async def shutdown_in_flight(env: Env, ledger: Ledger, records: Records, *, grace: str) -> FaultResult:
    """Shut the app down while tasks of every phase are in flight, then serve again.

    Parameters:
        grace: how the app was configured: "none" (`shutdown_timeout=None`), "ample" (a grace
            period the tasks finish within) or "expires" (a grace period that runs out).
    """
    result = FaultResult(f"shutdown, grace {grace}")
    prefix = f"shutdown-{grace}-{id(env)}"
    released, forever, shielded, late, hang = (
        f"{prefix}-{n}" for n in ("released", "forever", "shielded", "late", "hang")
    )
    # Unshielded tasks of every phase that finish as soon as shutdown begins.
    await env.client.get(f"/block/{released}", params={"release": "shutdown"})
    waiting = [released]
    if grace != "ample":
        # Unshielded tasks that never finish; shielded ones that finish once shutdown begins;
        # one that, cancelled, tries to schedule another task.
        await env.client.get(f"/block/{forever}")
        await env.client.get(f"/block/{shielded}", params={"shield": True, "release": "shutdown"})
        await env.client.get(f"/block-then-schedule/{late}")
        waiting += [forever, shielded, late]
    for key in waiting:
        await env.client.get(f"/started/{key}")

    if env.live:
        # A request still in progress, on a connection of its own: its after_route/after_response
        # tasks are collected, not started, and the shutdown cuts the request off (uvicorn answers 500).
        async def hanging_request(client: httpx.AsyncClient) -> None:
            response = await client.get(f"/hang/{hang}")
            assert response.status_code == 500

        async with (
            httpx.AsyncClient(base_url=env.client.base_url, timeout=_CLIENT_TIMEOUT) as hang_client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(hanging_request, hang_client)
            await env.client.get(f"/entered/{hang}")
            await env.client.get(f"/started/{hang}", params={"phase": "immediate"})
            await env.stop()
    else:
        await env.stop()
    result.faults += 1

    keys = [*waiting, hang] if env.live else waiting
    accounting = account(ledger, records(), keys)
    result.add(accounting)
    expected = Accounting()
    if grace == "ample":
        expected["succeeded"] += 3  # the grace period let them finish
    else:
        # The shielded ones finish; the forever ones and the late one are cancelled. The released
        # ones, woken as shutdown begins, may finish before the cancellation reaches them.
        finished = sum(1 for t in ledger.named(released) if t.status is TaskStatus.SUCCEEDED)
        expected["succeeded"] += 3 + finished
        expected["cancelled+logged"] += (3 - finished) + 3 + 1
        note = ledger.notes[f"{late}/immediate"]
        assert note == "Cannot start 'Ledger.ok': the app is shutting down and its tasks were cancelled.", note
    if env.live:
        expected["succeeded"] += 1
        expected["discarded+logged"] += 2
    assert accounting == expected, (accounting, expected)

    await env.start()
    await probe(env, ledger, records, result)
    return result


SHUTDOWN_GRACE = {"none": None, "ample": 60.0, "expires": 0.01}
"""`shutdown_timeout` per `grace` variant of `shutdown_in_flight`."""


async def fault_matrix(
    records: Records, *, live: bool = True, rounds: int = 1
) -> tuple[list[FaultResult], list[Ledger]]:
    """Every fault scenario, `rounds` times, each on a fresh app; returns the results and the ledgers."""
    results, ledgers = [], []
    for _ in range(rounds):
        ledger, hooks = Ledger(), ServerHooks()
        make_env = live_env if live else asgi_env
        async with make_env(make_fault_app(ledger, hooks), hooks) as env:
            results.append(await task_faults(env, ledger, records))
            results.append(await external_cancel(env, ledger, records))
            if live:
                results.append(await disconnects(env, ledger, records))
        ledgers.append(ledger)
        for grace, timeout in SHUTDOWN_GRACE.items():
            ledger, hooks = Ledger(), ServerHooks()
            async with make_env(make_fault_app(ledger, hooks, shutdown_timeout=timeout), hooks) as env:
                results.append(await shutdown_in_flight(env, ledger, records, grace=grace))
            ledgers.append(ledger)
    return results, ledgers
