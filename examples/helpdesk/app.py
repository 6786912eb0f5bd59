"""A help desk: customers open tickets, agents close them, and the follow-up work runs in the background.

The app uses FastAPI's own `BackgroundTasks` only: it does not call `add_tasks` and imports
nothing from fastapi-tasks. Its tests (in `examples/helpdesk/tests/`) use the `tasks_recorder`
fixture all the same.

- Opening a ticket answers `201 Created` at once; then, after the response, a dependency's task
  writes an audit entry, the customer gets a confirmation email, the support channel is notified,
  and the ticket is indexed for search, one after the other.
- Closing a ticket sends the customer a satisfaction survey.

Serve it with `uvicorn examples.helpdesk.app:app`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Annotated

import anyio.lowlevel
from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel

__all__ = ["Email", "HelpDesk", "Ticket", "app", "create_app"]


@dataclass(frozen=True)
class Email:
    """An email the help desk sent."""

    to: str
    subject: str


@dataclass
class Ticket:
    """A customer's ticket."""

    id: int
    customer: str
    subject: str
    open: bool = True


@dataclass
class HelpDesk:
    """Everything the app works with, in one place so that each test can start from a fresh one."""

    tickets: dict[int, Ticket] = field(default_factory=dict)
    outbox: list[Email] = field(default_factory=list)
    channel: list[str] = field(default_factory=list)
    search_index: dict[str, set[int]] = field(default_factory=dict)
    audit: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def open_ticket(self, customer: str, subject: str) -> Ticket:
        """Create an open ticket."""
        ticket = Ticket(next(self._ids), customer, subject)
        self.tickets[ticket.id] = ticket
        return ticket

    def send_email(self, to: str, subject: str) -> None:
        """Send one email (a sync task: FastAPI runs it in a worker thread, like blocking SMTP I/O)."""
        self.outbox.append(Email(to, subject))

    async def notify_channel(self, message: str) -> None:
        """Post to the support team's chat channel (an async task: it runs on the event loop)."""
        await anyio.lowlevel.checkpoint()  # where a real client awaits the chat service
        self.channel.append(message)

    def index_ticket(self, ticket_id: int, subject: str) -> int:
        """Index the ticket's words for search; returns how many words were indexed."""
        words = {word.lower() for word in subject.split()}
        for word in words:
            self.search_index.setdefault(word, set()).add(ticket_id)
        return len(words)

    def write_audit(self, agent: str, action: str) -> None:
        """Write one entry of the audit log."""
        self.audit.append(f"{agent}: {action}")


class NewTicket(BaseModel):
    customer: str
    subject: str


class TicketOut(BaseModel):
    id: int
    open: bool


def _desk(request: Request) -> HelpDesk:
    desk: HelpDesk = request.app.state.desk
    return desk


def audited(
    request: Request,
    background_tasks: BackgroundTasks,
    desk: Annotated[HelpDesk, Depends(_desk)],
    x_agent: Annotated[str, Header()] = "customer",
) -> str:
    """A dependency that audits every call it guards; it adds its task to the request's BackgroundTasks."""
    background_tasks.add_task(desk.write_audit, x_agent, f"{request.method} {request.url.path}")
    return x_agent


def create_app(desk: HelpDesk | None = None) -> FastAPI:
    """Build the help desk's app around `desk` (a fresh `HelpDesk` by default)."""
    app = FastAPI(title="Help desk")
    app.state.desk = HelpDesk() if desk is None else desk

    @app.post("/tickets", status_code=201)
    async def open_ticket(
        body: NewTicket,
        background_tasks: BackgroundTasks,
        desk: Annotated[HelpDesk, Depends(_desk)],
        _: Annotated[str, Depends(audited)],
    ) -> TicketOut:
        ticket = desk.open_ticket(body.customer, body.subject)
        background_tasks.add_task(desk.send_email, ticket.customer, f"Ticket #{ticket.id}: we are on it")
        background_tasks.add_task(desk.notify_channel, f"New ticket #{ticket.id}: {ticket.subject}")
        background_tasks.add_task(desk.index_ticket, ticket.id, ticket.subject)
        return TicketOut(id=ticket.id, open=ticket.open)

    @app.post("/tickets/{ticket_id}/close")
    def close_ticket(
        ticket_id: int,
        background_tasks: BackgroundTasks,
        desk: Annotated[HelpDesk, Depends(_desk)],
        _: Annotated[str, Depends(audited)],
    ) -> TicketOut:
        # A sync endpoint (FastAPI runs it in a worker thread) adds tasks like an async one.
        ticket = desk.tickets.get(ticket_id)
        if ticket is None or not ticket.open:
            raise HTTPException(status_code=404, detail="No such open ticket.")
        ticket.open = False
        background_tasks.add_task(desk.send_email, ticket.customer, f"Ticket #{ticket.id}: how did we do?")
        return TicketOut(id=ticket.id, open=ticket.open)

    return app


app = create_app()
"""The app `uvicorn examples.helpdesk.app:app` serves."""
