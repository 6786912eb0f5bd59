import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import v010


@pytest.fixture
def app() -> FastAPI:
    return v010.app


def test_update_user_syncs_the_crm(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/users/42")

    record = tasks_recorder.assert_succeeded("sync-crm", 42)
    assert record.shield  # inherited from the app-wide TaskConfig
