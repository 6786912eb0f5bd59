import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler


async def send_email(to: str) -> None: ...


def audit(event: str, email: str) -> None: ...


async def sync_crm(email: str) -> None:
    raise ConnectionError("CRM is down")


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    add_tasks(app)

    @app.post("/signup/{email}")
    async def signup(email: str, tasks: Tasks) -> None:
        tasks.after_route.schedule(audit, "signup", email)
        tasks.after_response.schedule(send_email, email)

    @app.post("/unsubscribe/{email}")
    async def unsubscribe(email: str, tasks: Tasks) -> None:
        tasks.after_response.schedule(sync_crm, email)

    return app


# --8<-- [start:assertion]
def test_wrong_address(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/signup/a@b.c")

    tasks_recorder.assert_scheduled(send_email, "x@y.z", phase="after_response")


# --8<-- [end:assertion]


# --8<-- [start:teardown]
def test_unsubscribe(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    response = TestClient(app).post("/unsubscribe/a@b.c")

    # This passes, but a task failed: the test is reported at teardown.
    assert response.status_code == 200


# --8<-- [end:teardown]
