"""Bugs the reliability suite found in the library, each pinned by a test."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from fastapi_tasks import Task, TasksScheduler, TaskStatus

from ._apps import Ledger, ServerHooks, make_fault_app
from ._scenarios import asgi_env

pytestmark = pytest.mark.anyio


async def test_a_failed_task_is_not_done_until_its_on_error_handler_returned() -> None:
    # Found by the fault matrix: `await task.wait()` called while a (sync, worker-thread) on_error
    # handler was still running returned at once, because the status said "failed" already.
    entered, release = anyio.Event(), anyio.Event()
    order: list[str] = []

    async def handler(task: Task[..., Any], exc: Exception) -> None:
        entered.set()
        await release.wait()
        order.append("handler returned")

    async def fail() -> None:
        raise ValueError("boom")

    async with anyio.create_task_group() as tg:
        task = TasksScheduler(tg).task(name="failing", on_error=handler).schedule(fail)
        await entered.wait()
        assert task.exception is not None
        assert not task.done
        assert not task.finished.is_set()
        release.set()
        await task.wait()
        order.append("wait returned")

    assert order == ["handler returned", "wait returned"]
    assert task.status is TaskStatus.FAILED


async def test_the_shutdown_log_does_not_call_shielded_tasks_unshielded(caplog: pytest.LogCaptureFixture) -> None:
    # Found by the shutdown scenarios: with 3 shielded and 3 unshielded tasks in flight, the log said
    # "cancelling 6 unfinished unshielded background task(s)", and then only 3 were cancelled.
    ledger, hooks = Ledger(), ServerHooks()
    async with asgi_env(make_fault_app(ledger, hooks), hooks) as env:
        await env.client.get("/block/plain")
        await env.client.get("/block/shielded", params={"shield": True, "release": "shutdown"})
        await env.client.get("/started/plain")
        await env.client.get("/started/shielded")
        with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
            await env.stop()

    [summary] = [message for message in caplog.messages if message.startswith("Shutting down")]
    assert summary.startswith("Shutting down with 6 background task(s) unfinished: "), summary
    # Each task is named, the shielded ones marked as such; only the unshielded ones are cancelled.
    assert summary.count("(shielded") == 3, summary
    assert "Cancelling the unshielded ones; waiting without a time limit for the shielded ones" in summary
    assert {t.status for t in ledger.named("plain")} == {TaskStatus.CANCELLED}
    assert {t.status for t in ledger.named("shielded")} == {TaskStatus.SUCCEEDED}
