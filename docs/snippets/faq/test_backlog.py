import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager

import backlog


@pytest.mark.anyio
async def test_past_the_backlog_clients_get_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = anyio.Event()

    async def slow_report(report_id: int) -> None:
        await done.wait()  # every report stays in progress

    monkeypatch.setattr(backlog, "build_report", slow_report)
    async with (
        LifespanManager(backlog.app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://test",
        ) as client,
    ):
        for report_id in range(100):
            response = await client.post(f"/reports/{report_id}")
            assert response.status_code == 200

        refused = await client.post("/reports/100")

        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        done.set()
