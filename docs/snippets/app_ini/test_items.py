from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

from main import app, warm_cache


def test_reading_an_item_warms_the_cache(
    tasks_recorder: RecordingScheduler,
) -> None:
    TestClient(app).get("/items/k1")

    tasks_recorder.assert_scheduled_once(warm_cache, "k1", phase="immediate")
