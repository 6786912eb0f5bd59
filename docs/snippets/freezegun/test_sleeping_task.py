import anyio
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler
from freezegun import freeze_time

retries = FastAPI()
add_tasks(retries)


async def push_with_backoff(device: str) -> str:
    await anyio.sleep(0.01)  # a retry's backoff: it needs a clock that moves
    return f"pushed to {device}"


@retries.post("/push/{device}")
async def push(device: str, tasks: Tasks) -> None:
    tasks.after_response.schedule(push_with_backoff, device)


def test_a_task_that_sleeps_under_a_frozen_clock() -> None:
    recorder = RecordingScheduler()
    recorder.install(retries)
    # real_asyncio=True: the event loop keeps its real clock, so the
    # sleep ends; the recorded timestamps are still frozen.
    with freeze_time("2030-01-01 12:00:00", real_asyncio=True):
        TestClient(retries).post("/push/phone")
    recorder.uninstall()

    record = recorder.assert_succeeded(push_with_backoff, "phone")
    assert record.result == "pushed to phone"
    assert record.finished_at is not None
    assert record.finished_at.year == 2030
