import importlib

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler


@pytest.fixture(params=["before", "after"])
def app(request: pytest.FixtureRequest) -> FastAPI:
    # One suite, run on the app before and after the move.
    app: FastAPI = importlib.import_module(request.param).app
    return app


def test_signup_sends_the_email_after_the_response(
    app: FastAPI,
    tasks_recorder: RecordingScheduler,
) -> None:
    TestClient(app).post("/signup/a@b.c")

    email = tasks_recorder.assert_scheduled_once(
        "send_email",
        "a@b.c",
        phase="after_response",
    )
    assert email.status == "succeeded"
