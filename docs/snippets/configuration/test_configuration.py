import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks import TaskConfig
from fastapi_tasks_testing import RecordingScheduler

import main
import per_task


@pytest.fixture
def app() -> FastAPI:
    return main.app


@pytest.mark.tasks_recorder(mode="record")
def test_each_task_gets_the_app_config_merged_with_its_own(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    client = TestClient(app)
    client.put("/users/1/avatar")
    client.post("/orders/2/pay")

    resize = tasks_recorder.assert_scheduled_once("resize-avatar", 1)
    assert resize.config == TaskConfig(
        name="resize-avatar", shield=None, on_error=main.alert_ops
    )
    assert not resize.shield

    capture = tasks_recorder.assert_scheduled_once("capture-payment", 2)
    assert capture.config == TaskConfig(
        name="capture-payment", shield=True, on_error=main.mark_unpaid
    )
    assert capture.shield


def test_merge() -> None:
    app_config = TaskConfig(shield=False, on_error=main.alert_ops)
    # on_error is None: inherited.
    task_config = TaskConfig(name="capture-payment", shield=True)

    assert app_config.merge(task_config) == TaskConfig(
        name="capture-payment", shield=True, on_error=main.alert_ops
    )


@pytest.mark.tasks_recorder(mode="record")
def test_per_task_settings(tasks_recorder: RecordingScheduler) -> None:
    # The `app` fixture above is main.app; this test uses another app.
    tasks_recorder.uninstall()
    tasks_recorder.install(per_task.app)

    TestClient(per_task.app).post("/orders/7")

    assert tasks_recorder.assert_scheduled_once(
        "warm-cache", "order:7", phase="immediate"
    )
    audit = tasks_recorder.assert_scheduled_once(
        per_task.write_audit_entry, phase="after_route"
    )
    assert audit.on_error is per_task.report
    assert tasks_recorder.assert_scheduled_once(
        per_task.capture_payment, 7, phase="after_response"
    ).shield
