"""Load: a real uvicorn server, 5,000 requests from 20 concurrent clients, 15,000 tasks each run once."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import pytest

from ._scenarios import run_load

pytestmark = pytest.mark.anyio

REQUESTS = 5_000
CONCURRENCY = 20


@pytest.fixture
def anyio_backend() -> Literal["asyncio"]:
    """The clients' backend; uvicorn serves on asyncio in its own thread either way."""
    return "asyncio"


async def test_every_task_runs_exactly_once_and_nothing_is_retained() -> None:
    result = await run_load(REQUESTS, concurrency=CONCURRENCY)

    assert result.failed_requests == 0
    assert result.tasks_expected == 3 * REQUESTS
    assert result.tasks_ran == result.tasks_expected, f"{result.tasks_lost} task(s) lost"
    assert result.ran_twice == 0
    # No task, scheduler or batch outlives its request...
    assert result.retained == Counter(), result.retained
    # ...and the process holds about as many objects as before: a leak of even one object per
    # request would add 5,000; what varies is connection and worker-thread bookkeeping, in the tens.
    assert result.gc_objects_after - result.gc_objects_before < REQUESTS // 2, result
