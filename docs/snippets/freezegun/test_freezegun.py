import datetime as dt

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler
from freezegun import freeze_time

import main


@pytest.fixture
def app() -> FastAPI:
    return main.app


def test_timestamps_follow_the_frozen_clock(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    with freeze_time("2030-01-01 12:00:00"):
        TestClient(app).post("/logout/s1")

    record = tasks_recorder.assert_succeeded(main.expire_session, "s1")
    frozen = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert (
        record.scheduled_at == record.started_at == record.finished_at == frozen
    )
