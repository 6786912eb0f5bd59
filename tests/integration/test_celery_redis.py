"""`enqueue()` through Celery to a real Redis, with a solo worker in a thread running each job."""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from asgi_lifespan import LifespanManager
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi import FastAPI, HTTPException

from fastapi_tasks import DispatchTask, Tasks, TaskStatus, add_tasks
from fastapi_tasks.dispatchers.celery import _workers
from fastapi_tasks.errors import DispatchError

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0


class Shop:
    """An app whose order endpoint enqueues the Celery job `send_receipt` after the response."""

    def __init__(
        self,
        url: str,
        queue_name: str,
        *,
        dispatch_timeout: float | None = None,
        dispatch_deadline: float | None = None,
    ) -> None:
        self.celery = Celery(f"shop-{queue_name}", broker=url, set_as_current=False)
        self.celery.conf.update(
            task_default_queue=queue_name,
            task_ignore_result=True,
            broker_connection_retry_on_startup=True,
            # Bounds for the client sockets, so a dispatch thread stuck on a silent broker ends too.
            broker_transport_options={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
            worker_hijack_root_logger=False,
        )
        self.handles: list[DispatchTask] = []
        self.errors: list[Exception] = []
        self.receipts: dict[str, int] = {}
        self.arrived = threading.Event()
        receipts, arrived = self.receipts, self.arrived

        # Celery warns when one name is registered twice, even on two apps: one name per test.
        self.job_name = f"shop.send_receipt.{queue_name}"

        @self.celery.task(name=self.job_name, bind=True)  # type: ignore[untyped-decorator]  # Celery ships no types
        def send_receipt(job: Any, order_id: int) -> None:
            receipts[job.request.id] = order_id
            arrived.set()

        self.send_receipt = send_receipt
        self.app = FastAPI()
        add_tasks(self.app)

        @self.app.post("/orders/{order_id}")
        def place_order(order_id: int, tasks: Tasks) -> dict[str, Any]:
            receipt = tasks.after_response.task(
                dispatch_timeout=dispatch_timeout,
                dispatch_deadline=dispatch_deadline,
                on_error=lambda task, exc: self.errors.append(exc),
            ).enqueue(send_receipt, order_id)
            self.handles.append(receipt)
            if order_id == 13:
                raise HTTPException(status_code=402, detail="card declined")
            return {"receipt_job": receipt.job_id}

    async def dispatched(self) -> DispatchTask:
        with anyio.fail_after(TIMEOUT):
            for handle in self.handles:
                await handle.wait()
        return self.handles[-1]

    async def job_ran(self) -> None:
        assert await anyio.to_thread.run_sync(self.arrived.wait, TIMEOUT), "the worker never ran the job"


async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield client


@pytest.fixture
def shop(redis_url: str, queue_name: str) -> Iterator[Shop]:
    shop = Shop(redis_url, queue_name)
    with start_worker(shop.celery, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        yield shop
    shop.celery.close()


async def test_an_order_enqueues_its_receipt_and_the_worker_runs_it(shop: Shop) -> None:
    async for client in serve(shop.app):
        response = await client.post("/orders/42")
        handle = await shop.dispatched()

    assert response.status_code == 200
    assert response.json() == {"receipt_job": handle.job_id}
    assert handle.status is TaskStatus.DISPATCHED
    assert handle.result.id == handle.job_id
    await shop.job_ran()
    assert shop.receipts == {handle.job_id: 42}  # the worker saw the job id fixed at enqueue time


async def test_a_failed_order_enqueues_nothing(shop: Shop) -> None:
    async for client in serve(shop.app):
        response = await client.post("/orders/13")
        handle = await shop.dispatched()

    assert response.status_code == 402
    assert handle.status is TaskStatus.DISCARDED


@pytest.mark.parametrize("broker", ["refusing", "silent"])
async def test_a_broken_broker_gives_a_dispatch_error_and_the_response_stays_200(
    broker: str, refusing_url: str, silent_url: str, queue_name: str
) -> None:
    # One attempt: the deadline is the attempt's timeout (the retry is tested in test_outage.py).
    shop = Shop(
        refusing_url if broker == "refusing" else silent_url, queue_name, dispatch_timeout=1.0, dispatch_deadline=1.0
    )

    async for client in serve(shop.app):
        response = await client.post("/orders/7")
        handle = await shop.dispatched()

    assert response.status_code == 200
    assert handle.status is TaskStatus.FAILED
    exc = handle.exception
    assert isinstance(exc, DispatchError)
    assert shop.errors == [exc]
    assert (exc.job_name, exc.job_id, exc.phase, exc.backend) == (
        shop.job_name,
        handle.job_id,
        "after_response",
        "celery",
    )
    # Nothing was published either way: refused at once (one connection try each, no retry inside kombu, so
    # several attempts within the deadline), or still connecting to the silent broker when the attempt ended.
    assert not exc.timed_out
    reached = r"to celery: the broker could not be reached within the dispatch deadline of 1 s \("
    if broker == "refusing":
        # Each attempt is refused, unless the deadline comes while the last one is still connecting: then the
        # message gives the refusal an earlier attempt met.
        refused = r"OperationalError caused by ConnectionError\b.*"
        expected = (
            rf"{reached}\d+ attempts?, (the last failed with {refused}|the latest error was {refused}, and the last "
            r"attempt found no connection to the broker in the (\d+|less than 1) ms the deadline left it: .*)"
        )
    else:
        expected = (
            rf"{reached}1 attempt, the last found no connection to the broker within 1 s: waiting for one of Celery's "
            r"10 pooled producers \(broker_pool_limit\) or for the broker to accept the connection\)"
        )
    assert re.search(rf"{expected}; the job was not sent\.$", str(exc)), str(exc)
    # A dispatch abandoned at its timeout goes on in its daemon thread until the client's socket
    # timeout; let it end here rather than during a later test.
    assert await anyio.to_thread.run_sync(_workers.wait_idle, TIMEOUT), "the abandoned dispatch never ended"
    shop.celery.close()
