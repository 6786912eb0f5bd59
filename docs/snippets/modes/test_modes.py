import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


@pytest.fixture
def app() -> FastAPI:
    main.sent.clear()
    return main.app


# --8<-- [start:run]
def test_run_mode(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    TestClient(app).post("/invite/a@b.c")

    # Every task of the request has ended by the time the client returns.
    tasks_recorder.assert_succeeded(main.send_email, "a@b.c")
    assert main.sent == ["a@b.c"]


# --8<-- [end:run]


# --8<-- [start:detach]
def test_a_poller_outlives_its_request(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    tasks_recorder.detach(main.watch_prices)

    with TestClient(app) as client:  # the app's lifespan runs
        client.post("/prices/watch")  # returns without waiting for it
        poller = tasks_recorder.wait_for_sync(
            main.watch_prices, status="running"
        )

    # The app's shutdown cancelled it, as in production.
    assert poller.status == "cancelled"


# --8<-- [end:detach]


# --8<-- [start:record]
@pytest.mark.tasks_recorder(mode="record")
def test_record_mode(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    TestClient(app).post("/invite/a@b.c")

    record = tasks_recorder.assert_scheduled_once(main.send_email, "a@b.c")
    assert record.status == "pending"
    assert main.sent == []

    tasks_recorder.run_pending_sync(phase="after_route")  # just the audit entry
    assert record.status == "pending"
    tasks_recorder.run_pending_sync()  # all that is pending, phase by phase
    assert main.sent == ["a@b.c"]


@pytest.mark.anyio
@pytest.mark.tasks_recorder(mode="record")
async def test_record_mode_in_an_async_test(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        await client.post("/invite/a@b.c")

    ran = await tasks_recorder.run_pending()
    assert [record.func for record in ran] == [main.audit, main.send_email]


# --8<-- [end:record]


# --8<-- [start:spy]
@pytest.mark.anyio
@pytest.mark.tasks_recorder(mode="spy")
async def test_spy_mode(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    # The app's real scheduler runs the tasks, so its lifespan must run.
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://test",
        ) as client,
    ):
        await client.post("/invite/a@b.c")
        await tasks_recorder.drain()  # wait until every recorded task has ended

    tasks_recorder.assert_succeeded(main.send_email, "a@b.c")


# --8<-- [end:spy]
