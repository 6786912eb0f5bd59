import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


@pytest.fixture
def app() -> FastAPI:
    return main.app


@pytest.mark.tasks_recorder(mode="record")  # nothing runs before the shutdown
def test_shutdown_finishes_shielded_tasks_and_cancels_the_rest(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/orders/7")

    # In an async test: await tasks_recorder.shutdown()
    tasks_recorder.shutdown_sync()

    tasks_recorder.assert_succeeded(main.capture_payment, 7)
    tasks_recorder.assert_cancelled(main.send_receipt, 7)
