import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import websocket


@pytest.fixture
def app() -> FastAPI:
    return websocket.app


def test_chat(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    with TestClient(app).websocket_connect("/rooms/lobby") as ws:
        ws.send_text("hello")

    tasks_recorder.assert_scheduled_once(
        websocket.store_message, "lobby", "hello", phase="immediate"
    )
    tasks_recorder.assert_scheduled_once(
        websocket.close_room, "lobby", phase="after_route"
    )
