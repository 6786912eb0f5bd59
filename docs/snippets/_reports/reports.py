import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler


async def send_email(to: str) -> None: ...


def audit(event: str, email: str) -> None: ...


async def sync_crm(email: str) -> None:
    raise ConnectionError("CRM is down")


async def send_reminder(email: str) -> None: ...


async def poll_prices() -> None:
    await anyio.sleep_forever()  # a poller: runs until the app stops


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

    @app.post("/checkout/{email}")
    async def checkout(email: str, tasks: Tasks) -> None:
        reminder = tasks.after_response.schedule(send_reminder, email)
        reminder.cancel()  # a bug: the reminder was for abandoned carts

    @app.post("/prices/watch")
    async def watch_prices(tasks: Tasks) -> None:
        tasks.schedule(poll_prices)  # runs until the app stops

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


# --8<-- [start:unfinished]
def test_checkout(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    response = TestClient(app).post("/checkout/a@b.c")

    # This passes, but a task ended cancelled: reported at teardown.
    assert response.status_code == 200


# --8<-- [end:unfinished]


# --8<-- [start:wait]
@pytest.mark.tasks_recorder(wait_timeout=0.5)
def test_watch_prices(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    TestClient(app).post("/prices/watch")  # fails after 0.5 s


# --8<-- [end:wait]
