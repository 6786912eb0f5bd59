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


# --8<-- [start:times]
def test_a_declined_card_then_a_retry_that_goes_through(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    async def fake_charge(order_id: int, amount_cents: int) -> str:
        return "ch_ok"

    tasks_recorder.replace(main.charge_card, fake_charge)
    # The first charge fails, the next one reaches the fake provider.
    declined = tasks_recorder.fail("charge", RuntimeError("declined"), times=1)
    client = TestClient(app)

    client.post("/orders/7/checkout")
    client.post("/orders/7/checkout")  # the customer tries again

    first, second = tasks_recorder.filter("charge")
    assert (first.status, second.status) == ("failed", "succeeded")
    assert declined.records == [first]
    assert main.refunds == [7]


# --8<-- [end:times]


# --8<-- [start:where]
def test_only_large_orders_fail(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    tasks_recorder.replace(main.charge_card, lambda order_id, amount: "ch_ok")
    tasks_recorder.fail(
        "charge",
        RuntimeError("limit exceeded"),
        where=lambda record: record.args[0] >= 100,
    )
    client = TestClient(app)

    client.post("/orders/7/checkout")
    client.post("/orders/100/checkout")

    tasks_recorder.assert_succeeded("charge", 7, partial=True)
    tasks_recorder.assert_error_handled("charge", RuntimeError)
    assert main.refunds == [100]


# --8<-- [end:where]


# --8<-- [start:hold]
def test_the_invoice_waits_for_the_charge(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    tasks_recorder.replace(main.charge_card, lambda order_id, amount: "ch_ok")
    # In run mode, keep the invoice pending: what does the order look like
    # before it is sent?
    tasks_recorder.hold(main.send_invoice)

    TestClient(app).post("/orders/7/checkout")

    tasks_recorder.assert_succeeded("charge")
    invoice = tasks_recorder.assert_scheduled_once(main.send_invoice)
    assert invoice.status == "pending"
    assert tasks_recorder.run_pending_sync(only=main.send_invoice) == [invoice]
    assert invoice.status == "succeeded"


@pytest.mark.tasks_recorder(mode="record")
def test_run_the_pending_tasks_one_by_one(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    client = TestClient(app)
    client.post("/orders/1/checkout")
    client.post("/orders/2/checkout")

    # Run one invoice, leave the charges alone.
    [first] = tasks_recorder.run_pending_sync(exclude="charge", limit=1)
    assert first.args == (1,)
    tasks_recorder.run_pending_sync(only=main.send_invoice)
    tasks_recorder.assert_succeeded(main.send_invoice, 2)
    assert len(tasks_recorder.filter("charge", status="pending")) == 2


# --8<-- [end:hold]


# --8<-- [start:spy]
@pytest.mark.tasks_recorder(mode="spy")
def test_with_the_real_scheduler(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    tasks_recorder.replace(main.charge_card, lambda order_id, amount: "ch_ok")

    with TestClient(app) as client:  # spy mode needs the lifespan
        client.post("/orders/7/checkout")
        # The tasks run concurrently, in the client's event loop thread.
        charge = tasks_recorder.wait_for_sync("charge", status="succeeded")
        tasks_recorder.drain_sync()  # every task has ended

    assert charge.result == "ch_ok"
    tasks_recorder.assert_succeeded(main.send_invoice, 7)


# --8<-- [end:spy]
