import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


@pytest.fixture
def app() -> FastAPI:
    return main.app


def test_signup(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    response = TestClient(app).post("/signup", json={"email": "a@b.c"})

    assert response.status_code == 200
    tasks_recorder.assert_scheduled(main.send_email, "a@b.c", phase="after_response")
    tasks_recorder.assert_scheduled(main.audit, "signup", "a@b.c", phase="after_route")
    tasks_recorder.assert_order(main.audit, main.send_email)
    assert main.sent == ["a@b.c"]  # the tasks ran: no sleep needed
