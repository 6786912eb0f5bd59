"""A test suite's memory stays flat: a test's recorder, records and requests are gone after it.

Next to `test_engine.py::test_a_recorder_is_not_kept_alive_after_its_test`, which checks the
override FastAPI keeps for the life of the process; this one runs the whole cycle of a test many
times in one process and measures what stays.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc
import weakref

import anyio
import anyio.lowlevel
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler

WARM_UP = 400  # cycles before measuring: first-use caches (FastAPI's, the signatures', the loop's) fill up
HALF = 300  # cycles in each measured half
MAX_GROWTH = 200  # bytes a cycle may add in the second half


async def audit(user_id: int) -> None:
    pass


async def index(user_id: int) -> None:
    pass


async def welcome(user_id: int) -> None:
    pass


def signup_app() -> FastAPI:
    app = FastAPI()
    add_tasks(app)

    @app.post("/signup/{user_id}")
    async def signup(user_id: int, tasks: Tasks) -> dict[str, int]:
        tasks.schedule(audit, user_id)
        tasks.after_route.schedule(index, user_id)
        tasks.after_response.schedule(welcome, user_id)
        return {"id": user_id}

    return app


async def run_tests(
    app: FastAPI, client: httpx.AsyncClient, count: int, recorders: weakref.WeakSet[RecordingScheduler]
) -> None:
    """What `count` tests using the tasks_recorder fixture do: install, one request, three assertions, uninstall."""
    for test in range(count):
        user_id = test % 8  # few URLs: the client's own caches of the URLs it saw (urllib's) fill up in the warm-up
        recorder = RecordingScheduler()
        recorders.add(recorder)
        recorder.install(app)
        response = await client.post(f"/signup/{user_id}")
        assert response.json() == {"id": user_id}
        recorder.assert_scheduled_once(audit, user_id, phase="immediate")
        recorder.assert_scheduled_once(index, user_id, phase="after_route")
        recorder.assert_scheduled_once(welcome, user_id, phase="after_response")
        recorder.uninstall()


async def settled_memory() -> int:
    # The task group lets go of the last request's worker task at the next checkpoint.
    for _ in range(3):
        await anyio.lowlevel.checkpoint()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def measure() -> tuple[float, float, int]:
    """Bytes per test cycle in each measured half, and how many recorders are still alive at the end."""
    app = signup_app()
    recorders: weakref.WeakSet[RecordingScheduler] = weakref.WeakSet()
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://test") as client,
    ):
        await run_tests(app, client, WARM_UP, recorders)
        tracemalloc.start()
        try:
            start = await settled_memory()
            await run_tests(app, client, HALF, recorders)
            middle = await settled_memory()
            await run_tests(app, client, HALF, recorders)
            end = await settled_memory()
        finally:
            tracemalloc.stop()
        alive = len(recorders)
    return (middle - start) / HALF, (end - middle) / HALF, alive


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_memory_stays_flat_over_many_tests_and_no_recorder_stays_alive(backend: str) -> None:
    # In a process of its own: what other tests of this process left running (a server's thread, a
    # logging handler) would allocate during the measure, and count against the recorder.
    run = subprocess.run([sys.executable, __file__, backend], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    first, second, alive = json.loads(run.stdout.strip().splitlines()[-1])
    assert alive == 0
    assert second < MAX_GROWTH, f"{second:.0f} B per test in the second half ({first:.0f} B in the first)"


if __name__ == "__main__":
    print(json.dumps(anyio.run(measure, backend=sys.argv[1])))
