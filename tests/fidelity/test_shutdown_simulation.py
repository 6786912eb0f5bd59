"""Issue 20 #6: the recorder's shutdown simulation honours the grace period and shielding as production does.

Not a row of the differential table: production's shutdown is the server's, the recorder's is
`shutdown()` / `shutdown_sync()`, which a test calls. So each test runs the same app, whose
`add_tasks(app, shutdown_timeout=GRACE)` gives running tasks a grace period, both ways, and checks
both against what production must do (`docs/shutdown.md`):

- `flush`, unshielded, and `capture`, shielded, wait until the shutdown has begun and then end: both
  succeed, within the grace period;
- `poll`, unshielded, never ends on its own: it is cancelled once the grace period is up (not
  before), and a WARNING names it.

The request that schedules them is still in flight when the shutdown begins: production answers at
once, and run mode holds the client's call until the request's tasks have ended, which the shutdown
brings about.
"""

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Literal

import anyio
import anyio.lowlevel
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_tasks import Task, Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler

from ._harness import HANG_GUARD, Probe, short_name

GRACE = 0.5
"""The app's `shutdown_timeout`: long enough for `flush` and `capture`, which end in milliseconds once
signalled; `poll` holds every shutdown this long."""

Driver = Literal["production", "recorder", "recorder-bare"]


class Shop:
    """The app, and what it reports: the handles of its tasks, and when the shutdown began."""

    def __init__(self) -> None:
        self.probe = Probe()
        self.scheduled = threading.Event()
        self.app = FastAPI()
        add_tasks(self.app, shutdown_timeout=GRACE)

        async def flush() -> str:
            await self.probe.signal("shutting down").wait()
            await anyio.lowlevel.checkpoint()
            return "flushed"

        async def capture() -> str:
            await self.probe.signal("shutting down").wait()
            await anyio.lowlevel.checkpoint()
            return "captured"

        async def poll() -> None:
            await anyio.sleep_forever()

        @self.app.get("/")
        async def endpoint(tasks: Tasks) -> None:
            for task in (
                tasks.task(name="flush").schedule(flush),
                tasks.task(name="capture", shield=True).schedule(capture),
                tasks.task(name="poll").schedule(poll),
            ):
                self.probe.keep(task)
            for task in self.probe.tasks.values():
                await task.started.wait()
            self.scheduled.set()

    def begin_shutdown(self) -> None:
        """What the tasks wait for (in the app's event loop)."""
        self.probe.signal("shutting down").set()

    @property
    def handles(self) -> dict[str, Task[..., object]]:
        return self.probe.tasks


def _check(shop: Shop, shutdown_took: float, logs: list[str], statuses: dict[str, str]) -> None:
    assert statuses == {"flush": "succeeded", "capture": "succeeded", "poll": "cancelled"}, logs
    assert shutdown_took >= GRACE * 0.9, f"the shutdown took {shutdown_took:.3f} s, less than its grace period"
    assert any(line.startswith("WARNING ") and "'poll'" in line for line in logs), logs


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def logs() -> Iterator[list[str]]:
    logger = logging.getLogger("fastapi_tasks")
    handler = _Lines()
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


@asynccontextmanager
async def _served(app: FastAPI, *, lifespan: bool) -> AsyncIterator[tuple[httpx.AsyncClient, LifespanManager | None]]:
    if not lifespan:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            yield client, None
        return
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        yield client, manager


def _statuses(shop: Shop) -> dict[str, str]:
    return {short_name(name): task.status.value for name, task in shop.handles.items()}


@pytest.mark.anyio
@pytest.mark.parametrize("driver", ["production", "recorder", "recorder-bare"])
async def test_shutdown_gives_running_tasks_the_grace_period(driver: Driver, logs: list[str]) -> None:
    shop = Shop()
    recorder = None
    if driver != "production":
        recorder = RecordingScheduler(mode="run")
        recorder.install(shop.app)
    responses: list[int] = []
    try:
        with anyio.fail_after(HANG_GUARD + GRACE):
            async with (
                _served(shop.app, lifespan=driver != "recorder-bare") as (client, manager),
                anyio.create_task_group() as tg,
            ):

                async def request() -> None:
                    responses.append((await client.get("/")).status_code)

                tg.start_soon(request)
                await anyio.to_thread.run_sync(shop.scheduled.wait, HANG_GUARD)
                shop.begin_shutdown()
                began = time.monotonic()
                if recorder is not None:
                    await recorder.shutdown()
                else:
                    assert manager is not None
                    await manager.shutdown()
                took = time.monotonic() - began
    finally:
        if recorder is not None:
            recorder.uninstall()
    assert responses == [200]
    _check(shop, took, logs, _statuses(shop))


def test_shutdown_sync_gives_running_tasks_the_grace_period(logs: list[str]) -> None:
    """`shutdown_sync()` in a sync test, with `TestClient` in a `with` block (the app's event loop)."""
    shop = Shop()
    recorder = RecordingScheduler(mode="run")
    recorder.install(shop.app)
    responses: list[int] = []
    took: list[float] = []

    def sync_test() -> None:
        with TestClient(shop.app) as client:
            portal = client.portal
            assert portal is not None
            request = threading.Thread(target=lambda: responses.append(client.get("/").status_code), daemon=True)
            request.start()
            assert shop.scheduled.wait(HANG_GUARD), "the endpoint did not schedule its tasks"
            portal.call(_call, shop.begin_shutdown)
            began = time.monotonic()
            recorder.shutdown_sync()
            took.append(time.monotonic() - began)
            request.join(HANG_GUARD)
            assert not request.is_alive(), "the client's call did not return once the tasks had ended"

    try:
        _bounded(sync_test, HANG_GUARD + 2 * GRACE)
    finally:
        recorder.uninstall()
    assert responses == [200]
    _check(shop, took[0], logs, _statuses(shop))


def _bounded(func: Callable[[], None], seconds: float) -> None:
    """Run `func` in a thread; fail if it has not returned after `seconds` (the thread is left behind)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            func()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="sync test", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the sync test did not end within {seconds} s: it hangs", pytrace=False)
    if failure:
        raise failure[0]


async def _call(func: Callable[[], None]) -> None:
    func()
