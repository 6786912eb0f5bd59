"""Issue 21's faults (`_faults_v3`), at CI size: the benchmark's fault matrix runs them at its own.

Failures that cannot be logged, cancels (and a shutdown) that hit shields and threads, and schedulers
built in helper tasks of a background task: in-process on asyncio and trio, and against uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import pytest

from ._apps import Ledger, ServerHooks
from ._faults_v3 import held_at_shutdown, held_cancels, helper_schedulers, make_v3_app, run_flood, unloggable_failures
from ._scenarios import Records, asgi_env, live_env

pytestmark = pytest.mark.anyio


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[Records]:
    """The `fastapi_tasks` log records, DEBUG and up."""
    with caplog.at_level(logging.DEBUG, logger="fastapi_tasks"):
        yield lambda: caplog.records


async def test_unloggable_failures_cancels_and_helper_schedulers_in_process(records: Records) -> None:
    ledger, hooks = Ledger(), ServerHooks()
    async with asgi_env(make_v3_app(ledger, hooks), hooks) as env:
        await unloggable_failures(env, ledger, records)
        await held_cancels(env, ledger, records)
        await helper_schedulers(env, ledger, records)


async def test_a_shutdown_that_hits_shields_and_threads_in_process(records: Records) -> None:
    ledger, hooks = Ledger(), ServerHooks()
    async with asgi_env(make_v3_app(ledger, hooks), hooks) as env:
        await held_at_shutdown(env, ledger, records)


class TestLiveServer:
    """Against uvicorn on 127.0.0.1 (asyncio, in a thread)."""

    @pytest.fixture
    def anyio_backend(self) -> Literal["asyncio"]:
        return "asyncio"

    async def test_unloggable_failures_cancels_and_helper_schedulers(self, records: Records) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        async with live_env(make_v3_app(ledger, hooks), hooks) as env:
            await unloggable_failures(env, ledger, records)
            await held_cancels(env, ledger, records)
            await helper_schedulers(env, ledger, records)

    async def test_a_shutdown_that_hits_shields_and_threads(self, records: Records) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        async with live_env(make_v3_app(ledger, hooks), hooks) as env:
            await held_at_shutdown(env, ledger, records)


async def test_a_flood_against_max_pending_loses_no_accepted_task(records: Records) -> None:
    # Every figure but the invariants depends on timing: only the invariants are checked.
    result = await run_flood(records, live=False, requests=200, concurrency=10, max_pending=5, seconds=0.01)
    assert result.requests == result.accepted + result.refused
    assert result.other == 0
    assert result.lost == 0
    assert result.accepted >= 5
    assert result.most_running <= 5
    assert result.accounting == {"succeeded": result.accepted}
