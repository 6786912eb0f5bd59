import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import websocket


@pytest.fixture
def app() -> FastAPI:
    websocket.messages.clear()
    websocket.closed.clear()
    return websocket.app


def test_chat(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    with TestClient(app).websocket_connect("/rooms/lobby") as ws:
        ws.send_text("hello")
        ws.send_text("bye")
    # Leaving the block closes the session; it ends once its tasks have.

    tasks_recorder.assert_succeeded(
        websocket.store_message, "lobby", "hello", phase="immediate"
    )
    tasks_recorder.assert_succeeded(
        websocket.store_message, "lobby", "bye", phase="immediate"
    )
    tasks_recorder.assert_succeeded(
        websocket.close_room, "lobby", phase="after_route"
    )
    assert websocket.messages == ["lobby: hello", "lobby: bye"]
    assert websocket.closed == ["lobby"]
