import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import after
import before


def test_before_still_works() -> None:
    assert TestClient(before.app).post("/signup/a@b.c").status_code == 200


@pytest.fixture
def app() -> FastAPI:
    return after.app


def test_signup_sends_the_email_after_the_response(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/signup/a@b.c")

    tasks_recorder.assert_scheduled_once(
        after.send_email, "a@b.c", phase="after_response"
    )
