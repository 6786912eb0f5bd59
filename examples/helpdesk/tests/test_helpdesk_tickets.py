"""Tickets: what opening and closing one does in the background, tested without sleeping and without SMTP."""

from __future__ import annotations

import smtplib

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from examples.helpdesk.app import Email, HelpDesk
from fastapi_tasks_testing import RecordingScheduler

TICKET = {"customer": "ada@example.com", "subject": "Printer on fire"}


def test_opening_a_ticket_runs_the_follow_up_after_the_response(
    client: TestClient, tasks_recorder: RecordingScheduler, desk: HelpDesk
) -> None:
    response = client.post("/tickets", json=TICKET)

    assert response.status_code == 201
    assert response.json() == {"id": 1, "open": True}
    # In the default "run" mode the tasks have run, after the response, when the client returns.
    assert desk.audit == ["customer: POST /tickets"]
    assert desk.outbox == [Email("ada@example.com", "Ticket #1: we are on it")]
    assert desk.channel == ["New ticket #1: Printer on fire"]
    assert desk.search_index == {"printer": {1}, "on": {1}, "fire": {1}}
    tasks_recorder.assert_order("HelpDesk.write_audit", "HelpDesk.send_email", "HelpDesk.notify_channel")
    indexed = tasks_recorder.assert_succeeded(HelpDesk.index_ticket, 1, "Printer on fire")
    assert indexed.result == 3
    assert {record.source for record in tasks_recorder.records} == {"BackgroundTasks"}
    assert {record.phase.value for record in tasks_recorder.records} == {"after_response"}


@pytest.mark.tasks_recorder(mode="record")
def test_record_mode_sends_nothing(client: TestClient, tasks_recorder: RecordingScheduler, desk: HelpDesk) -> None:
    client.post("/tickets", json=TICKET)

    tasks_recorder.assert_scheduled_once(HelpDesk.send_email, "ada@example.com", "Ticket #1: we are on it")
    assert desk.outbox == []
    assert desk.channel == []

    tasks_recorder.run_pending_sync()

    assert desk.outbox == [Email("ada@example.com", "Ticket #1: we are on it")]


def test_a_failed_email_stops_the_tasks_after_it(
    client: TestClient, tasks_recorder: RecordingScheduler, desk: HelpDesk
) -> None:
    tasks_recorder.fail(HelpDesk.send_email, smtplib.SMTPServerDisconnected("connection lost"))

    response = client.post("/tickets", json=TICKET)

    assert response.status_code == 201  # the response went out before the tasks ran
    tasks_recorder.assert_failed(HelpDesk.send_email, smtplib.SMTPServerDisconnected, match="connection lost")
    # As in production, Starlette runs no task after the one that failed.
    notify = tasks_recorder.assert_discarded(HelpDesk.notify_channel)
    assert notify.reason == "'HelpDesk.send_email' before it failed"
    tasks_recorder.assert_discarded(HelpDesk.index_ticket)
    assert desk.channel == []
    assert desk.search_index == {}


def test_closing_a_ticket_sends_the_survey(
    client: TestClient, tasks_recorder: RecordingScheduler, desk: HelpDesk
) -> None:
    client.post("/tickets", json=TICKET)

    response = client.post("/tickets/1/close", headers={"X-Agent": "grace"})

    assert response.json() == {"id": 1, "open": False}
    closing = tasks_recorder.for_request("POST", "/tickets/1/close")
    closing.assert_scheduled_once(HelpDesk.write_audit, "grace", "POST /tickets/1/close")
    closing.assert_succeeded(HelpDesk.send_email, "ada@example.com", "Ticket #1: how did we do?")
    assert desk.outbox[-1] == Email("ada@example.com", "Ticket #1: how did we do?")


def test_closing_an_unknown_ticket_runs_no_task(
    client: TestClient, tasks_recorder: RecordingScheduler, desk: HelpDesk
) -> None:
    response = client.post("/tickets/7/close")

    assert response.status_code == 404
    # The dependency had added its audit task; FastAPI runs none when the endpoint raises.
    audit = tasks_recorder.assert_discarded(HelpDesk.write_audit)
    assert audit.reason == "the request raised HTTPException"
    assert desk.audit == []


def test_notifications_go_to_a_fake_channel(client: TestClient, tasks_recorder: RecordingScheduler) -> None:
    posted: list[str] = []

    async def fake_notify(message: str) -> None:
        posted.append(message)

    tasks_recorder.replace(HelpDesk.notify_channel, fake_notify)

    client.post("/tickets", json=TICKET)

    assert posted == ["New ticket #1: Printer on fire"]


@pytest.mark.anyio
async def test_with_an_async_client(app: FastAPI, tasks_recorder: RecordingScheduler, desk: HelpDesk) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/tickets", json=TICKET)

    assert response.status_code == 201
    assert desk.channel == ["New ticket #1: Printer on fire"]
    assert [record.status.value for record in tasks_recorder.records] == ["succeeded"] * 4
