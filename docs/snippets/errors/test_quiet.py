import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import quiet


@pytest.fixture
def app() -> FastAPI:
    return quiet.app


def test_the_log_line_leaves_the_message_out(
    app: FastAPI,
    tasks_recorder: RecordingScheduler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="fastapi_tasks"):
        TestClient(app).post("/charges")

    tasks_recorder.assert_failed(quiet.charge, ValueError)
    [record] = caplog.records
    # Background task 'charge' failed: ValueError (raised at
    # /srv/app/quiet.py:11 in charge)
    assert record.getMessage().startswith(
        "Background task 'charge' failed: ValueError (raised at "
    )
    assert record.getMessage().endswith(":11 in charge)")
    assert "4111" not in record.getMessage()
    assert record.exc_info is None  # no traceback either
