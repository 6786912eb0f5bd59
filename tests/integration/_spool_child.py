"""The app of tests/integration/test_spool_restart.py: it enqueues with a spool, then waits to be killed, or drains.

python _spool_child.py outage BACKEND URL QUEUE SPOOL_DIR COUNT
    enqueues COUNT jobs (over the three phases) while the broker is down; once every one is in
    the spool, prints `SPOOLED <job ids>` and waits for the test to kill it.
python _spool_child.py drain BACKEND URL QUEUE SPOOL_DIR 1
    enqueues one job with the broker up: its dispatch sends what the spool kept; prints
    `DRAINED <job id>` once that dispatch ended, then exits.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import anyio
import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from fastapi_tasks import DispatchTask, Tasks, TaskStatus, add_tasks, register_dispatcher


class Spooled(logging.Handler):
    """Sets `event` once `count` jobs were spooled (the spool logs each at DEBUG)."""

    def __init__(self, count: int) -> None:
        super().__init__(logging.DEBUG)
        self.left = count
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Spooled job "):
            self.left -= 1
            if self.left == 0:
                self.event.set()


def job_and_dispatcher(backend: str, url: str, queue: str, spool: str) -> tuple[Any, Any, Any]:
    if backend == "taskiq":
        from taskiq_redis import ListQueueBroker

        from fastapi_tasks.dispatchers.taskiq import TaskiqDispatcher

        broker = ListQueueBroker(url, queue_name=queue)

        @broker.task(task_name="spool.receipt")
        async def receipt(n: int) -> None: ...

        return receipt, TaskiqDispatcher(spool=spool), broker
    from celery import Celery

    from fastapi_tasks.dispatchers.celery import CeleryDispatcher

    celery = Celery("spool", broker=url, set_as_current=False)
    celery.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        broker_transport_options={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
    )

    @celery.task(name="spool.receipt")  # type: ignore[untyped-decorator]  # Celery ships no types
    def celery_receipt(n: int) -> None: ...

    return celery_receipt, CeleryDispatcher(spool=spool), None


async def main(mode: str, backend: str, url: str, queue: str, spool: str, count: int) -> None:
    job, dispatcher, broker = job_and_dispatcher(backend, url, queue, spool)
    register_dispatcher(dispatcher)
    spooled = Spooled(count)
    logger = logging.getLogger("fastapi_tasks")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(spooled)
    handles: list[DispatchTask] = []
    app = FastAPI()
    add_tasks(app)

    @app.post("/{n}")
    async def order(n: int, tasks: Tasks) -> None:
        handles.append((tasks, tasks.after_route, tasks.after_response)[n % 3].enqueue(job, n))

    if broker is not None:
        await broker.startup()
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            for n in range(count):
                assert (await client.post(f"/{n}")).status_code == 200
            if mode == "outage":
                await spooled.event.wait()
                print("SPOOLED", json.dumps([handle.job_id for handle in handles]), flush=True)
                await anyio.sleep_forever()  # until the test kills the process
            [handle] = handles
            await handle.wait()
            assert handle.status is TaskStatus.DISPATCHED, handle
            print("DRAINED", json.dumps(handle.job_id), flush=True)
    if broker is not None:
        await broker.shutdown()


if __name__ == "__main__":
    mode, backend, url, queue, spool, count = sys.argv[1:7]
    anyio.run(main, mode, backend, url, queue, spool, int(count))
