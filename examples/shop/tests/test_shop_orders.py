"""Orders: the shielded payment capture after the response, and what happens when it fails."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from examples.shop.app import Email, PaymentDeclined, Shop
from fastapi_tasks_testing import RecordingScheduler

ORDER = {"email": "ada@example.com", "amount_cents": 4200}


def test_an_order_is_captured_after_the_response(
    client: TestClient, tasks_recorder: RecordingScheduler, shop: Shop
) -> None:
    response = client.post("/orders", json=ORDER)

    assert response.status_code == 202
    assert response.json()["status"] == "awaiting payment"
    capture = tasks_recorder.assert_scheduled_once("capture-payment", 1, phase="after_response")
    assert capture.shield
    assert capture.result == "pay_1"
    # The after_response tasks begin in the order they were scheduled (both async, on the event loop);
    # the audit, sync in a worker thread, is not ordered against them: production races its thread.
    tasks_recorder.assert_order("capture-payment", "order-email")
    assert client.get("/orders/1").json()["status"] == "paid"
    assert shop.payments.captured == {1: 4200}


def test_a_declined_payment_is_handled_by_on_error(
    client: TestClient, tasks_recorder: RecordingScheduler, shop: Shop
) -> None:
    tasks_recorder.fail("capture-payment", PaymentDeclined("card expired"))

    client.post("/orders", json=ORDER)

    task, exc = tasks_recorder.assert_error_handled("capture-payment", PaymentDeclined)
    assert task.args == (1,)
    assert str(exc) == "card expired"
    assert client.get("/orders/1").json() == {"id": 1, "status": "payment failed", "problem": "card expired"}
    assert Email("ada@example.com", "Order #1: we could not take your payment") in shop.mailer.outbox
    # The capture brings its own on_error, so the app-wide one (alerting ops) was not called.
    assert shop.alerts == []


def test_other_tasks_fall_back_to_the_app_wide_on_error(
    client: TestClient, tasks_recorder: RecordingScheduler, shop: Shop
) -> None:
    tasks_recorder.fail("order-email", ConnectionError("SMTP server unreachable"))

    client.post("/orders", json=ORDER)

    tasks_recorder.assert_error_handled("order-email", ConnectionError)
    assert shop.alerts == ["order-email failed: ConnectionError('SMTP server unreachable')"]
    assert client.get("/orders/1").json()["status"] == "paid"


@pytest.mark.tasks_recorder(mode="record")
def test_shutdown_finishes_the_shielded_capture_and_cancels_the_rest(
    client: TestClient, tasks_recorder: RecordingScheduler, shop: Shop
) -> None:
    client.post("/orders", json=ORDER)

    # The app stops before any of the order's tasks ran.
    tasks_recorder.shutdown_sync()

    tasks_recorder.assert_succeeded("capture-payment")
    tasks_recorder.assert_cancelled("order-email")
    tasks_recorder.assert_cancelled("audit")
    assert shop.orders[1].status == "paid"
    assert shop.mailer.outbox == []
