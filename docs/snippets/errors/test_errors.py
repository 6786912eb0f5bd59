import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


@pytest.fixture
def app() -> FastAPI:
    main.retry_queue.clear()
    return main.app


def test_a_failed_upload_is_retried_later(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    tasks_recorder.fail(
        main.upload_to_storage, ConnectionError("storage unreachable")
    )

    response = TestClient(app).post("/files/report.pdf")

    # The failure did not disturb the response.
    assert response.status_code == 200
    tasks_recorder.assert_error_handled(main.upload_to_storage, ConnectionError)
    assert main.retry_queue == ["report.pdf"]


def test_the_failure_is_logged_with_the_task_name(
    app: FastAPI,
    tasks_recorder: RecordingScheduler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks_recorder.fail(
        main.upload_to_storage, ConnectionError("storage unreachable")
    )

    with caplog.at_level(logging.ERROR, logger="fastapi_tasks"):
        TestClient(app).post("/files/report.pdf")

    assert caplog.messages == [
        "Background task 'upload_to_storage' failed: "
        "ConnectionError: storage unreachable"
    ]


def test_tasks_of_a_failed_request_are_discarded(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    response = TestClient(app).post("/files/setup.exe")

    assert response.status_code == 400
    tasks_recorder.assert_discarded(main.upload_to_storage, "setup.exe")
