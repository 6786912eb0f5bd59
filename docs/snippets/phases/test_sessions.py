from unittest.mock import ANY

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import sessions


@pytest.fixture
def app() -> FastAPI:
    return sessions.app


def test_only_the_async_task_finds_the_session_open(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/orders/7")

    # The event loop decides, as in production: with Starlette 1.x the response
    # is sent first, and the request's session is still open when it begins.
    tasks_recorder.assert_succeeded(sessions.audit, ANY, 7)
    # A thread races the loop: the task loses, every time.
    tasks_recorder.assert_failed(
        sessions.audit_in_a_thread, RuntimeError, "session is closed"
    )
