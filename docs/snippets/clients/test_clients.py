import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


def test_with_testclient(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    assert TestClient(app).get("/").json() == {"hello": "world"}

    tasks_recorder.assert_succeeded(main.track, "home viewed")


@pytest.mark.anyio
async def test_with_asyncclient(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    # No lifespan manager needed with the recorder.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test"
    ) as client:
        assert (await client.get("/")).json() == {"hello": "world"}

    tasks_recorder.assert_succeeded(main.track, "home viewed")
