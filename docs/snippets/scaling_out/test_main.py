import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

from main import app as shop_app
from main import send_receipt


@pytest.fixture
def app() -> FastAPI:
    return shop_app


def test_an_order_sends_its_receipt_after_the_response(
    tasks_recorder: RecordingScheduler,
) -> None:
    response = TestClient(shop_app).post("/orders/42")

    record = tasks_recorder.assert_dispatched(
        send_receipt, 42, phase="after_response"
    )
    assert response.json() == {"order": 42, "receipt_job": record.job_id}


def test_a_declined_order_sends_nothing(
    tasks_recorder: RecordingScheduler,
) -> None:
    response = TestClient(shop_app).post("/orders/13")

    assert response.status_code == 402
    tasks_recorder.assert_not_dispatched(send_receipt)


def test_the_receipt_job_itself(tasks_recorder: RecordingScheduler) -> None:
    response = TestClient(shop_app).post("/orders/42")

    # Runs send_receipt(42) here, as its worker would.
    [record] = tasks_recorder.run_dispatched_sync()
    job_id = response.json()["receipt_job"]
    assert record.job_result == f"receipt 42, key {job_id}"


def test_a_broker_outage_is_ridden_out(
    tasks_recorder: RecordingScheduler,
) -> None:
    # Unreachable twice, then back: retried under the same job id.
    fault = tasks_recorder.fail_dispatch(
        send_receipt, ConnectionError("broker down"), times=2
    )

    response = TestClient(shop_app).post("/orders/42")

    assert response.status_code == 200
    record = tasks_recorder.assert_dispatched(send_receipt, 42)
    assert record.job_id == response.json()["receipt_job"]
    assert fault.records == [record, record]
