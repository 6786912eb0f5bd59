import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main
from main import audit, send_email


@pytest.fixture
def app() -> FastAPI:
    return main.app


def test_signup(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    email = "a@b.c"
    response = TestClient(app).post("/signup", json={"email": email})

    assert response.status_code == 200
    tasks_recorder.assert_scheduled(send_email, email, phase="after_response")
    tasks_recorder.assert_scheduled(audit, "signup", email, phase="after_route")
    assert main.sent == [email]  # the tasks ran: no sleep needed
    assert main.audit_log == [f"signup: {email}"]
