import smtplib

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler

import main


# --8<-- [start:scheduled]
def test_signup_schedules_the_welcome_email(
    client: TestClient,
    tasks_recorder: RecordingScheduler,
) -> None:
    client.post("/signup/ada@example.com")

    email = tasks_recorder.assert_scheduled_once(
        main.send_email,
        "ada@example.com",
        "Welcome!",
    )
    assert email.source == "BackgroundTasks"
    assert email.phase == "after_response"
    assert str(email.request) == "POST /signup/ada@example.com"
    # The dependency's task ran first, then the endpoint's, in order.
    tasks_recorder.assert_order("write_audit", main.send_email)


# --8<-- [end:scheduled]


# --8<-- [start:record]
@pytest.mark.tasks_recorder(mode="record")
def test_no_email_is_sent(
    client: TestClient,
    tasks_recorder: RecordingScheduler,
) -> None:
    client.post("/signup/ada@example.com")

    assert main.outbox == []  # nothing ran
    tasks_recorder.assert_scheduled_once(main.send_email)

    tasks_recorder.run_pending_sync()  # now they run, one after another
    assert main.outbox == ["ada@example.com: Welcome!"]


# --8<-- [end:record]


# --8<-- [start:replace]
def test_emails_go_to_a_fake(
    client: TestClient,
    tasks_recorder: RecordingScheduler,
) -> None:
    sent: list[str] = []
    tasks_recorder.replace(
        main.send_email,
        lambda to, subject: sent.append(to),
    )

    client.post("/signup/ada@example.com")

    assert sent == ["ada@example.com"]
    assert main.outbox == []
    assert main.audit_log == ["signup attempt", "signup ada@example.com"]


# --8<-- [end:replace]


# --8<-- [start:integration]
def test_signup_end_to_end(
    client: TestClient,
    tasks_recorder: RecordingScheduler,
) -> None:
    response = client.post("/signup/ada@example.com")

    # No sleep: every task of the request has ended when the client
    # returns, one after the other, after the response, as in production.
    assert response.status_code == 201
    assert main.outbox == ["ada@example.com: Welcome!"]
    assert main.audit_log == ["signup attempt", "signup ada@example.com"]
    tasks_recorder.assert_succeeded(main.send_email)


@pytest.mark.anyio
async def test_signup_end_to_end_async(
    app: FastAPI,
    tasks_recorder: RecordingScheduler,
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test",
    ) as client:
        await client.post("/signup/ada@example.com")

    assert main.outbox == ["ada@example.com: Welcome!"]


# --8<-- [end:integration]


# --8<-- [start:fail]
def test_a_failed_email_stops_the_tasks_after_it(
    client: TestClient,
    tasks_recorder: RecordingScheduler,
) -> None:
    tasks_recorder.fail(main.send_email, smtplib.SMTPException("down"))

    response = client.post("/signup/ada@example.com")

    assert response.status_code == 201  # the response was sent already
    tasks_recorder.assert_failed(main.send_email, smtplib.SMTPException)
    # As in Starlette, the first failure stops the tasks after it.
    audit = tasks_recorder.assert_discarded(
        "write_audit",
        "signup ada@example.com",
    )
    assert audit.reason == "'send_email' before it failed"
    assert main.audit_log == ["signup attempt"]


# --8<-- [end:fail]


# --8<-- [start:raised]
def test_a_refused_signup_runs_no_task(
    client: TestClient,
    tasks_recorder: RecordingScheduler,
) -> None:
    client.post("/signup/ada@example.com")
    tasks_recorder.clear()

    response = client.post("/signup/ada@example.com")

    assert response.status_code == 409
    audit = tasks_recorder.assert_discarded("write_audit", "signup attempt")
    assert audit.reason == "the request raised HTTPException"


# --8<-- [end:raised]
