import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


@pytest.fixture
def app() -> FastAPI:
    main.refunds.clear()
    return main.app


# --8<-- [start:fail]
def test_a_declined_card_is_refunded(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    tasks_recorder.fail("charge", RuntimeError("card declined"))

    TestClient(app).post("/orders/7/checkout")

    task, exc = tasks_recorder.assert_error_handled("charge", RuntimeError)
    assert task.args == (7, 1999)
    assert str(exc) == "card declined"
    assert main.refunds == [7]
    # The other tasks were not disturbed.
    tasks_recorder.assert_succeeded(main.send_invoice, 7)


# --8<-- [end:fail]


# --8<-- [start:replace]
def test_checkout_with_a_fake_provider(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    async def fake_charge(order_id: int, amount_cents: int) -> str:
        return f"ch_{order_id}_{amount_cents}"

    # Same arguments, another body.
    tasks_recorder.replace(main.charge_card, fake_charge)

    TestClient(app).post("/orders/7/checkout")

    assert tasks_recorder.assert_succeeded("charge").result == "ch_7_1999"


# --8<-- [end:replace]


# --8<-- [start:allow]
@pytest.mark.tasks_recorder(mode="record")
def test_only_the_invoice_runs(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    # In record mode: run these, only record the rest.
    tasks_recorder.allow(main.send_invoice)

    TestClient(app).post("/orders/7/checkout")

    tasks_recorder.assert_succeeded(main.send_invoice, 7)
    assert tasks_recorder.assert_scheduled_once("charge").status == "pending"


# --8<-- [end:allow]
