"""Simulating an unreachable broker under the recorder, through `fail_dispatch()`: retried, then delivered or failed.

The recorder sends through production's retry (`DispatchTask._deliver`), and each attempt meets
the injected fault as it would meet the broker (issue 23).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from taskiq import InMemoryBroker

from fastapi_tasks import TaskConfig, Tasks, add_tasks
from fastapi_tasks.errors import DispatchError
from fastapi_tasks_testing import RecordingScheduler

broker = InMemoryBroker()


@broker.task(task_name="outage.receipt")
async def receipt(order_id: int) -> None:
    """Sends the receipt of an order; never runs here."""


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    add_tasks(app, config=TaskConfig(dispatch_deadline=0.5))

    @app.post("/orders/{order_id}")
    async def order(order_id: int, tasks: Tasks) -> dict[str, Any]:
        return {"job_id": tasks.after_response.enqueue(receipt, order_id).job_id}

    return app


def test_an_unreachable_broker_is_retried_under_the_same_id_then_the_job_is_delivered(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    fault = tasks_recorder.fail_dispatch(receipt, ConnectionRefusedError, times=2)

    response = TestClient(app).post("/orders/7")

    record = tasks_recorder.assert_dispatched_once(receipt, 7)
    assert record.job_id == response.json()["job_id"]
    assert fault.records == [record, record]  # two attempts refused, the third delivered


def test_a_broker_unreachable_past_the_deadline_fails_the_job_with_its_id(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    tasks_recorder.fail_dispatch(receipt, ConnectionRefusedError)

    response = TestClient(app).post("/orders/7")

    record = tasks_recorder.assert_failed(receipt, DispatchError)
    exc = record.exception
    assert isinstance(exc, DispatchError)
    assert exc.job_id == tasks_recorder.dispatches[0].job_id == response.json()["job_id"]
    assert "could not be reached within the dispatch deadline of 0.5 s" in str(exc)
