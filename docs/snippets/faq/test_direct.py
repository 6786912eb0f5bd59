import httpx
import pytest
from asgi_lifespan import LifespanManager

import direct


@pytest.mark.anyio
async def test_direct_use_runs_on_the_app_task_group() -> None:
    direct.started.clear()
    async with (
        LifespanManager(direct.app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://test",
        ) as client,
    ):
        await client.post("/albums/holidays/rebuild")
        [task] = direct.started
        # A Task is a handle: wait for it, then read how it ended.
        await task.wait()

    assert task.status == "succeeded"
