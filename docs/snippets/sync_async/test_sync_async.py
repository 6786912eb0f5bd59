import hashlib

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


@pytest.fixture
def app() -> FastAPI:
    return main.app


def test_sync_and_async_tasks(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    client = TestClient(app)

    client.put("/blobs/a", params={"data": "hello"})
    assert main.checksums == {"a": hashlib.sha256(b"hello").hexdigest()}
    tasks_recorder.assert_succeeded(main.notify_subscribers, "a")

    client.delete("/blobs/a")
    assert main.checksums == {}
