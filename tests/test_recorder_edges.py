"""The recorder's run mode at its edges: several sync after_route tasks of one request."""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler

Backend = Literal["asyncio", "trio"]


def test_sync_after_route_tasks_of_one_request_all_wait_for_the_app_to_return(anyio_backend: Backend) -> None:
    # Their worker threads wait on one gate per request, made for the first of them.
    order: list[str] = []

    def step(label: str) -> None:
        order.append(label)

    app = FastAPI()
    add_tasks(app)

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.after_route.schedule(step, "first")
        tasks.after_route.schedule(step, "second")
        tasks.after_route.schedule(step, "third")
        order.append("endpoint")

    recorder = RecordingScheduler()
    recorder.install(app)
    try:
        assert TestClient(app, backend=anyio_backend).post("/").status_code == 200
    finally:
        recorder.uninstall()

    assert order[0] == "endpoint"
    assert sorted(order[1:]) == ["first", "second", "third"]
    for label in ("first", "second", "third"):
        recorder.assert_succeeded(step, label)
