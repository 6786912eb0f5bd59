"""Load: a real uvicorn server, 5,000 requests from 20 concurrent clients, 15,000 tasks each run once;
then 2,000 requests of which 1% of the tasks end with a `BaseException`."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

import pytest

from ._scenarios import run_load

pytestmark = pytest.mark.anyio

REQUESTS = 5_000
CONCURRENCY = 20
FAULTY_REQUESTS = 2_000


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


@pytest.fixture
def unlogged(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `fastapi_tasks` log records during the test (the fault matrix checks what is logged).

    pytest's log capture keeps every record until the test ends, and a failed task's record keeps
    its traceback: its frames, and with them the task's handle, would count as retained objects.
    """
    monkeypatch.setattr(logging.getLogger("fastapi_tasks"), "disabled", True)


@pytest.mark.usefixtures("unlogged")
async def test_tasks_ending_with_base_exceptions_and_foreign_cancellations_disturb_nothing() -> None:
    # One task in 100 counts its run, then ends with an Abort (on the loop or in its worker thread),
    # a GeneratorExit, a BaseExceptionGroup or a CancelledError from a future something else cancelled.
    result = await run_load(FAULTY_REQUESTS, concurrency=CONCURRENCY, fault_every=100)

    assert result.failed_requests == 0
    assert result.tasks_ran == result.tasks_expected, f"{result.tasks_lost} task(s) lost"
    assert result.ran_twice == 0
    assert result.faulty == {"failed": 3 * FAULTY_REQUESTS // 100}, result.faulty
    assert result.retained == Counter(), result.retained
