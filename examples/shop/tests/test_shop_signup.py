"""Sign-up: an audit entry when the endpoint returns, a welcome email after the response."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from examples.shop.app import Email, Shop
from fastapi_tasks_testing import RecordingScheduler


def test_sign_up_audits_then_sends_the_welcome_email(
    client: TestClient, tasks_recorder: RecordingScheduler, shop: Shop
) -> None:
    response = client.post("/signup", json={"email": "ada@example.com"})

    assert response.status_code == 201
    tasks_recorder.assert_scheduled_once("audit", "signup", "ada@example.com", phase="after_route")
    tasks_recorder.assert_scheduled_once(
        "welcome-email", "ada@example.com", "Welcome to the shop!", phase="after_response"
    )
    # No assert_order() between them: the audit (sync, in a worker thread) is started when the endpoint
    # returns, but whether its body begins before the email's is a race in production.
    # In the default "run" mode every task of the request has ended when the client returns.
    assert shop.audit.entries == ["signup: ada@example.com"]
    assert shop.mailer.outbox == [Email("ada@example.com", "Welcome to the shop!")]


def test_signing_up_twice_schedules_nothing_the_second_time(
    client: TestClient, tasks_recorder: RecordingScheduler
) -> None:
    assert client.post("/signup", json={"email": "ada@example.com"}).status_code == 201
    assert client.post("/signup", json={"email": "ada@example.com"}).status_code == 409

    assert len(tasks_recorder.requests) == 1
    tasks_recorder.assert_scheduled_once("welcome-email")


@pytest.mark.tasks_recorder(mode="record")
def test_record_mode_runs_nothing_until_asked(
    client: TestClient, tasks_recorder: RecordingScheduler, shop: Shop
) -> None:
    client.post("/signup", json={"email": "ada@example.com"})

    assert [record.status for record in tasks_recorder.records] == ["pending", "pending"]
    assert shop.mailer.outbox == []

    ran = tasks_recorder.run_pending_sync(phase="after_route")

    assert [record.name for record in ran] == ["audit"]
    assert shop.audit.entries == ["signup: ada@example.com"]
    assert shop.mailer.outbox == []
    tasks_recorder.run_pending_sync()
    assert shop.mailer.outbox == [Email("ada@example.com", "Welcome to the shop!")]


@pytest.mark.anyio
async def test_sign_up_with_an_async_client(app: FastAPI, tasks_recorder: RecordingScheduler, shop: Shop) -> None:
    # No lifespan manager: the recorder stands in for the app's task group.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        response = await client.post("/signup", json={"email": "grace@example.com"})

    assert response.status_code == 201
    signup = tasks_recorder.for_request("POST", "/signup")
    signup.assert_scheduled_once("audit", phase="after_route")
    signup.assert_scheduled_once("welcome-email", phase="after_response")
    assert shop.audit.entries == ["signup: grace@example.com"]
    assert shop.mailer.outbox == [Email("grace@example.com", "Welcome to the shop!")]
