"""`enqueue()` through taskiq to a real Redis, with an in-process receiver running each job."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, HTTPException
from taskiq import Context, TaskiqDepends
from taskiq.receiver import Receiver
from taskiq_redis import ListQueueBroker

from fastapi_tasks import DispatchTask, Tasks, TaskStatus, add_tasks
from fastapi_tasks.errors import DispatchError

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]  # taskiq: asyncio only

TIMEOUT = 10.0


class Shop:
    """An app whose order endpoint enqueues `send_receipt` after the response."""

    def __init__(
        self,
        url: str,
        queue_name: str,
        *,
        dispatch_timeout: float | None = None,
        dispatch_deadline: float | None = None,
    ) -> None:
        self.broker = ListQueueBroker(url, queue_name=queue_name)
        self.receipts: dict[str, int] = {}
        self.arrived = asyncio.Event()
        self.handles: list[DispatchTask] = []
        self.errors: list[Exception] = []
        receipts, arrived = self.receipts, self.arrived

        @self.broker.task(task_name="shop.send_receipt")
        async def send_receipt(order_id: int, context: Context = TaskiqDepends()) -> None:  # noqa: B008
            receipts[context.message.task_id] = order_id
            arrived.set()

        self.send_receipt = send_receipt
        self.app = FastAPI()
        add_tasks(self.app)

        @self.app.post("/orders/{order_id}")
        async def place_order(order_id: int, tasks: Tasks) -> dict[str, Any]:
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


async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield client


@pytest.fixture
async def shop(redis_url: str, queue_name: str) -> AsyncIterator[Shop]:
    shop = Shop(redis_url, queue_name)
    await shop.broker.startup()
    receiver = Receiver(shop.broker, run_startup=False, max_async_tasks=1)

    async def work() -> None:
        # A worker in this process: taskiq's receiver runs each message the broker delivers.
        async for message in shop.broker.listen():
            await receiver.callback(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(work)
        try:
            yield shop
        finally:
            tg.cancel_scope.cancel()
    await shop.broker.shutdown()


async def test_an_order_enqueues_its_receipt_and_the_worker_runs_it(shop: Shop) -> None:
    async for client in serve(shop.app):
        response = await client.post("/orders/42")
        handle = await shop.dispatched()
        with anyio.fail_after(TIMEOUT):
            await shop.arrived.wait()

    assert response.status_code == 200
    assert response.json() == {"receipt_job": handle.job_id}
    assert handle.status is TaskStatus.DISPATCHED
    assert handle.result.task_id == handle.job_id
    assert shop.receipts == {handle.job_id: 42}  # the worker saw the job id fixed at enqueue time


async def test_a_failed_order_enqueues_nothing(shop: Shop) -> None:
    async for client in serve(shop.app):
        response = await client.post("/orders/13")
        handle = await shop.dispatched()

    assert response.status_code == 402
    assert handle.status is TaskStatus.DISCARDED
    assert shop.receipts == {}


@pytest.mark.parametrize("broker", ["refusing", "silent"])
async def test_a_broken_broker_gives_a_dispatch_error_and_the_response_stays_200(
    broker: str, refusing_url: str, silent_url: str, queue_name: str
) -> None:
    # One attempt: the deadline is the attempt's timeout (the retry is tested in test_outage.py).
    shop = Shop(
        refusing_url if broker == "refusing" else silent_url, queue_name, dispatch_timeout=0.5, dispatch_deadline=0.5
    )

    try:
        async for client in serve(shop.app):
            response = await client.post("/orders/7")
            handle = await shop.dispatched()
    finally:
        await shop.broker.shutdown()  # closes the connections it opened

    assert response.status_code == 200
    assert handle.status is TaskStatus.FAILED
    exc = handle.exception
    assert isinstance(exc, DispatchError)
    assert shop.errors == [exc]
    assert (exc.job_name, exc.job_id, exc.phase, exc.backend) == (
        "shop.send_receipt",
        handle.job_id,
        "after_response",
        "taskiq",
    )
    reached = "to taskiq: the broker could not be reached within the dispatch deadline of 0.5 s ("
    if broker == "refusing":
        # Refused at once: several attempts fit in the deadline. If the deadline comes while the last one is
        # under way, the message gives the refusal an earlier attempt met, and cannot rule out that it was sent.
        refused = r"SendTaskError caused by ConnectionError caused by ConnectionRefusedError"
        every_attempt_refused = rf"the last failed with {refused}\); the job was not sent\."
        last_cut_short = (
            rf"the latest error was {refused}, and the last attempt got no answer in the (\d+|less than 1) ms the "
            r"deadline left it\); outcome unknown: an attempt that got no answer may have reached the queue\."
        )
        match = re.search(rf"{re.escape(reached)}\d+ attempts?, ({every_attempt_refused}|{last_cut_short})$", str(exc))
        assert match, str(exc)
        assert exc.timed_out is ("outcome unknown" in match[1])
    else:
        assert exc.timed_out
        assert str(exc).endswith(
            f"{reached}1 attempt, the last got no answer within 0.5 s); outcome unknown: an attempt that got no "
            "answer may have reached the queue."
        ), str(exc)
