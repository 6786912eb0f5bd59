"""A broker outage under load, against a real redis-server, for taskiq and Celery side by side.

An app takes 20 enqueue requests a second per queue for 12 s, spread over the three phases. Its
redis-server (our own, on a free port, with an append-only file so that a restart keeps what was
queued) is stopped by its PID at 3 s and started again on the same port at 8 s. With the default
dispatch deadline no accepted job is lost; with a 2 s deadline, every job that did not reach its
queue is reported by job id, and none reported as not sent reached it.

It runs for about 15 s per deadline, so CI runs it once: `FASTAPI_TASKS_OUTAGE_TEST=skip` leaves it
out of the repeated runs (the flakiness check, the other Pythons).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager
from celery import Celery
from fastapi import FastAPI
from taskiq_redis import ListQueueBroker

from fastapi_tasks import DispatchTask, TaskConfig, Tasks, TaskStatus, add_tasks
from fastapi_tasks.dispatchers.celery import _workers
from fastapi_tasks.errors import DispatchError

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),  # taskiq: asyncio only
    pytest.mark.skipif(
        os.environ.get("FASTAPI_TASKS_OUTAGE_TEST") == "skip", reason="FASTAPI_TASKS_OUTAGE_TEST=skip: run once in CI"
    ),
]

RATE = 20  # requests a second, per queue
DURATION = 12.0
STOP_AT, START_AT = 3.0, 8.0
DRAIN_TIMEOUT = 60.0  # every dispatch ends within its deadline (60 s at most) once the load stops
STARTUP_TIMEOUT = 10.0


class RedisServer:
    """A redis-server of the test's own on 127.0.0.1, stopped and started again by its PID on the same port."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("no redis-server to start and stop (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # appendfsync always: every job pushed before the stop is still queued after the restart.
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        process = self.process

        def watch() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if "Ready to accept connections" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        if not ready.wait(STARTUP_TIMEOUT):
            pytest.fail(f"redis-server did not start on port {self.port}", pytrace=False)

    def stop(self) -> None:
        if self.process is None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(STARTUP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def queued(self, key: str) -> bytes:
        """Everything queued under `key`, as one blob to look job ids up in."""
        client = redis.Redis.from_url(self.url)
        try:
            items: list[bytes] = client.lrange(key, 0, -1)  # type: ignore[assignment]  # redis-py's sync/async union
            return b"\n".join(items)
        finally:
            client.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Shop:
    """One app enqueueing to taskiq and Celery, in every phase, keeping every handle."""

    def __init__(self, url: str, deadline: float | None) -> None:
        self.taskiq_queue, self.celery_queue = "outage-taskiq", "outage-celery"
        self.broker = ListQueueBroker(url, queue_name=self.taskiq_queue)
        self.celery = Celery("outage", broker=url, set_as_current=False)
        self.celery.conf.update(
            task_default_queue=self.celery_queue,
            task_ignore_result=True,
            broker_transport_options={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
        )
        self.handles: dict[str, list[DispatchTask]] = {"taskiq": [], "celery": []}

        @self.broker.task(task_name="outage.receipt")
        async def receipt(n: int) -> None: ...

        # shared=False: a shared task would be added to every Celery app the process makes afterwards, where a
        # second one of this name (the next test's) makes Celery warn, which filterwarnings turns into an error.
        @self.celery.task(name="outage.receipt", shared=False)  # type: ignore[untyped-decorator]  # no types
        def celery_receipt(n: int) -> None: ...

        jobs: dict[str, Any] = {"taskiq": receipt, "celery": celery_receipt}
        self.app = FastAPI()
        add_tasks(self.app, config=TaskConfig(dispatch_deadline=deadline))

        @self.app.post("/{queue}/{n}")
        async def order(queue: str, n: int, tasks: Tasks) -> dict[str, str]:
            phase = (tasks, tasks.after_route, tasks.after_response)[n % 3]
            handle = phase.enqueue(jobs[queue], n)
            self.handles[queue].append(handle)
            return {"job_id": handle.job_id}


async def load(client: httpx.AsyncClient, queue: str, accepted: list[str]) -> None:
    """`RATE` requests a second for `DURATION` s, paced; keeps the job id of every accepted request."""
    start = anyio.current_time()
    for n in range(int(RATE * DURATION)):
        await anyio.sleep(max(0.0, start + n / RATE - anyio.current_time()))  # pacing the load, not a wait for work
        response = await client.post(f"/{queue}/{n}")
        assert response.status_code == 200
        accepted.append(response.json()["job_id"])


async def outage(server: RedisServer) -> None:
    await anyio.sleep(STOP_AT)  # the outage's schedule
    await anyio.to_thread.run_sync(server.stop)
    await anyio.sleep(START_AT - STOP_AT)
    await anyio.to_thread.run_sync(server.start)


async def run_outage(server: RedisServer, deadline: float | None) -> tuple[Shop, dict[str, list[str]]]:
    shop = Shop(server.url, deadline)
    accepted: dict[str, list[str]] = {"taskiq": [], "celery": []}
    await shop.broker.startup()
    try:
        async with LifespanManager(shop.app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outage, server)
                    for queue in accepted:
                        tg.start_soon(load, client, queue, accepted[queue])
                with anyio.fail_after(DRAIN_TIMEOUT):
                    for handles in shop.handles.values():
                        for handle in handles:
                            await handle.wait()
    finally:
        await shop.broker.shutdown()
        # A Celery thread stuck on the stopped broker comes back at its socket timeout.
        assert await anyio.to_thread.run_sync(_workers.wait_idle, DRAIN_TIMEOUT)
        shop.celery.close()
    return shop, accepted


async def test_no_accepted_job_is_lost_across_the_outage_with_the_default_deadline(redis_server: RedisServer) -> None:
    shop, accepted = await run_outage(redis_server, None)

    for queue, key in (("taskiq", shop.taskiq_queue), ("celery", shop.celery_queue)):
        assert len(accepted[queue]) == RATE * DURATION
        queued = redis_server.queued(key)
        lost = [job_id for job_id in accepted[queue] if job_id.encode() not in queued]
        assert lost == [], f"{queue}: {len(lost)} accepted jobs never reached the queue"
        assert [handle.status for handle in shop.handles[queue]] == [TaskStatus.DISPATCHED] * len(accepted[queue])


async def test_with_a_2_s_deadline_every_lost_job_is_reported_by_its_job_id(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="fastapi_tasks"):
        shop, accepted = await run_outage(redis_server, 2.0)

    logged = "\n".join(record.getMessage() for record in caplog.records)
    for queue, key in (("taskiq", shop.taskiq_queue), ("celery", shop.celery_queue)):
        queued = redis_server.queued(key)
        handles = {handle.job_id: handle for handle in shop.handles[queue]}
        lost = [job_id for job_id in accepted[queue] if job_id.encode() not in queued]
        assert lost, f"{queue}: a 5 s outage with a 2 s deadline lost nothing; the test did not test"
        for job_id in lost:
            handle = handles[job_id]
            assert handle.status is TaskStatus.FAILED, handle
            assert isinstance(handle.exception, DispatchError)
            assert handle.exception.job_id == job_id
            assert f"job id {job_id!r}" in logged
        # No job reported as not sent reached the queue later (Celery's abandoned threads publish nothing).
        not_sent = [
            job_id
            for job_id, handle in handles.items()
            if isinstance(handle.exception, DispatchError) and not handle.exception.timed_out
        ]
        assert [job_id for job_id in not_sent if job_id.encode() in queued] == []
