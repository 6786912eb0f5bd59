import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


@pytest.fixture
def app() -> FastAPI:
    return main.app


def test_the_three_phases(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/orders/7")

    assert tasks_recorder.timeline() == (
        "#  phase           task                  status     request\n"
        "1  immediate       reserve_stock(7)      succeeded  POST /orders/7\n"
        "2  after_route     write_audit_entry(7)  succeeded  POST /orders/7\n"
        "3  after_response  send_receipt(7)       succeeded  POST /orders/7"
    )
    tasks_recorder.assert_order(
        main.reserve_stock, main.write_audit_entry, main.send_receipt
    )
