from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

from main import admin_app, rebuild_index


def test_reindex(tasks_recorder: RecordingScheduler) -> None:
    tasks_recorder.install(admin_app)  # undone at teardown

    TestClient(admin_app).post("/reindex")

    tasks_recorder.assert_scheduled_once(rebuild_index)
