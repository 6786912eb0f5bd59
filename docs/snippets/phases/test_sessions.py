from unittest.mock import ANY

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import sessions


@pytest.fixture
def app() -> FastAPI:
    return sessions.app


# Whether the async task fails is the event loop's decision: accept either.
@pytest.mark.tasks_recorder(expect_failures=True)
def test_the_sync_task_never_finds_the_session_open(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/orders/7")

    # The event loop decides, as in production: whether the async task begins
    # before the session is closed depends on the Starlette and Python versions.
    tasks_recorder.assert_scheduled_once(sessions.audit, ANY, 7)
    # A thread races the loop: the task loses, every time.
    tasks_recorder.assert_failed(
        sessions.audit_in_a_thread, RuntimeError, "session is closed"
    )
