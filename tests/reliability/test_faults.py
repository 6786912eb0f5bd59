"""Faults: after each one the app still serves and schedules, and every task is accounted for.

Accounted for: succeeded; failed, logged and handed to `on_error`; failed with a `BaseException`
(not an `Exception`) and logged at ERROR; cancelled and logged; or discarded (the endpoint raised)
and logged. `account()` fails on any other end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import pytest

from ._apps import Ledger, ServerHooks, make_fault_app
from ._scenarios import (
    SHUTDOWN_GRACE,
    Records,
    asgi_env,
    disconnects,
    external_cancel,
    live_env,
    shutdown_in_flight,
    task_faults,
)

pytestmark = pytest.mark.anyio

# One request per fault kind from an async and one from a sync endpoint, each followed by a probe
# request whose three tasks succeed. Trio has no foreign cancellation (a cancelled future).
TASK_FAULTS = {
    "asyncio": {"failed+handled": 36, "failed+logged": 30, "succeeded": 2 + 3 * 24, "discarded+logged": 4},
    "trio": {"failed+handled": 36, "failed+logged": 24, "succeeded": 2 + 3 * 22, "discarded+logged": 4},
}


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[Records]:
    """The `fastapi_tasks` log records, DEBUG and up (discarded tasks are logged at DEBUG)."""
    with caplog.at_level(logging.DEBUG, logger="fastapi_tasks"):
        yield lambda: caplog.records


class TestLiveServer:
    """Against uvicorn on 127.0.0.1 (asyncio, in a thread), with real connections."""

    @pytest.fixture
    def anyio_backend(self) -> Literal["asyncio"]:
        return "asyncio"

    async def test_task_and_handler_faults(self, records: Records) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        async with live_env(make_fault_app(ledger, hooks), hooks) as env:
            result = await task_faults(env, ledger, records)
        assert result.accounting == TASK_FAULTS["asyncio"]

    async def test_external_cancel(self, records: Records) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        async with live_env(make_fault_app(ledger, hooks), hooks) as env:
            await external_cancel(env, ledger, records)

    async def test_client_disconnects_mid_request_and_mid_stream(self, records: Records) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        async with live_env(make_fault_app(ledger, hooks), hooks) as env:
            result = await disconnects(env, ledger, records)
        assert result.accounting == {"succeeded": 3 + 4 + 3 * 2}

    @pytest.mark.parametrize("grace", list(SHUTDOWN_GRACE))
    async def test_shutdown_with_tasks_of_every_phase_in_flight(self, grace: str, records: Records) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        app = make_fault_app(ledger, hooks, shutdown_timeout=SHUTDOWN_GRACE[grace])
        async with live_env(app, hooks) as env:
            await shutdown_in_flight(env, ledger, records, grace=grace)


class TestInProcess:
    """The same faults in-process (httpx.ASGITransport + asgi_lifespan), on asyncio and on trio."""

    async def test_task_and_handler_faults(self, records: Records, anyio_backend: str) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        async with asgi_env(make_fault_app(ledger, hooks), hooks) as env:
            result = await task_faults(env, ledger, records)
        assert result.accounting == TASK_FAULTS[anyio_backend]

    async def test_external_cancel(self, records: Records) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        async with asgi_env(make_fault_app(ledger, hooks), hooks) as env:
            await external_cancel(env, ledger, records)

    @pytest.mark.parametrize("grace", list(SHUTDOWN_GRACE))
    async def test_shutdown_with_tasks_of_every_phase_in_flight(self, grace: str, records: Records) -> None:
        ledger, hooks = Ledger(), ServerHooks()
        app = make_fault_app(ledger, hooks, shutdown_timeout=SHUTDOWN_GRACE[grace])
        async with asgi_env(app, hooks) as env:
            await shutdown_in_flight(env, ledger, records, grace=grace)
