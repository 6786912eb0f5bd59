"""A small shop: sign-up, orders, and the background work they start.

- Signing up writes an audit entry when the endpoint returns (`after_route`) and sends a
  welcome email once the response is out (`after_response`).
- Placing an order answers `202 Accepted` at once; the payment is captured after the response,
  shielded so that a restart in the middle does not lose it, and a failed capture is handled by
  `Shop.payment_failed` (the task's `on_error`).

Serve it with `uvicorn examples.shop.app:app`; its tests live in `examples/shop/tests/`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio.lowlevel
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from fastapi_tasks import Task, TaskConfig, Tasks, add_tasks

__all__ = ["AuditLog", "Email", "Mailer", "Order", "PaymentDeclined", "PaymentGateway", "Shop", "app", "create_app"]


class PaymentDeclined(Exception):
    """The payment provider refused to capture a payment."""


@dataclass(frozen=True)
class Email:
    """An email the shop sent."""

    to: str
    subject: str


class Mailer:
    """Sends emails. This one keeps them in `outbox`; a real one would talk to an SMTP server."""

    def __init__(self) -> None:
        self.outbox: list[Email] = []

    async def send(self, to: str, subject: str) -> None:
        """Send one email (an async task: it runs on the event loop)."""
        await anyio.lowlevel.checkpoint()  # where a real mailer awaits the network
        self.outbox.append(Email(to, subject))


class AuditLog:
    """An append-only log of what happened, for the compliance team."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def write(self, event: str, subject: str) -> None:
        """Write one entry (a sync task: it runs in a worker thread, like blocking file or database I/O)."""
        self.entries.append(f"{event}: {subject}")


class PaymentGateway:
    """Captures payments. This one records them; a real one would call the payment provider."""

    def __init__(self) -> None:
        self.captured: dict[int, int] = {}

    async def capture(self, order_id: int, amount_cents: int) -> str:
        """Capture `amount_cents` for the order and return the payment's reference.

        Raises:
            PaymentDeclined: the provider refused (a real gateway raises it; this one never does).
        """
        await anyio.lowlevel.checkpoint()  # where a real gateway awaits the provider's API
        self.captured[order_id] = amount_cents
        return f"pay_{order_id}"


@dataclass
class Order:
    """An order and where its payment stands."""

    id: int
    email: str
    amount_cents: int
    status: Literal["awaiting payment", "paid", "payment failed"] = "awaiting payment"
    problem: str | None = None


@dataclass
class Shop:
    """Everything the app works with, in one place so that each test can start from a fresh one."""

    mailer: Mailer = field(default_factory=Mailer)
    audit: AuditLog = field(default_factory=AuditLog)
    payments: PaymentGateway = field(default_factory=PaymentGateway)
    users: set[str] = field(default_factory=set)
    orders: dict[int, Order] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_order(self, email: str, amount_cents: int) -> Order:
        """Create an order awaiting payment."""
        order = Order(next(self._ids), email, amount_cents)
        self.orders[order.id] = order
        return order

    async def capture_payment(self, order_id: int) -> str:
        """Capture an order's payment and mark it paid (the shielded task)."""
        order = self.orders[order_id]
        reference = await self.payments.capture(order.id, order.amount_cents)
        order.status = "paid"
        return reference

    def alert_ops(self, task: Task[..., Any], exc: Exception) -> None:
        """The app-wide `on_error`: tell the people on call which task failed (sync, so it runs in a thread)."""
        self.alerts.append(f"{task.name} failed: {exc!r}")

    async def payment_failed(self, task: Task[..., Any], exc: Exception) -> None:
        """`on_error` of the capture task: mark the order and tell the customer."""
        order = self.orders[task.args[0]]
        order.status = "payment failed"
        order.problem = str(exc)
        await self.mailer.send(order.email, f"Order #{order.id}: we could not take your payment")


class SignUp(BaseModel):
    email: str


class NewOrder(BaseModel):
    email: str
    amount_cents: int


class OrderOut(BaseModel):
    id: int
    status: str
    problem: str | None = None


def create_app(shop: Shop | None = None) -> FastAPI:
    """Build the shop's app around `shop` (a fresh `Shop` by default)."""
    shop = Shop() if shop is None else shop
    app = FastAPI(title="Shop")
    app.state.shop = shop
    # Every task reports its failure to ops unless it brings its own on_error. At shutdown, running
    # tasks get 10 seconds to finish before the unshielded ones are cancelled.
    add_tasks(app, config=TaskConfig(on_error=shop.alert_ops), shutdown_timeout=10)

    @app.post("/signup", status_code=201)
    async def sign_up(body: SignUp, tasks: Tasks) -> dict[str, str]:
        if body.email in shop.users:
            raise HTTPException(status_code=409, detail="This email has already signed up.")
        shop.users.add(body.email)
        tasks.after_route.task(name="audit").schedule(shop.audit.write, "signup", body.email)
        tasks.after_response.task(name="welcome-email").schedule(shop.mailer.send, body.email, "Welcome to the shop!")
        return {"email": body.email}

    @app.post("/orders", status_code=202)
    def place_order(body: NewOrder, tasks: Tasks) -> OrderOut:
        # A sync endpoint (FastAPI runs it in a worker thread) schedules like an async one.
        order = shop.new_order(body.email, body.amount_cents)
        tasks.after_route.task(name="audit").schedule(shop.audit.write, "order", f"#{order.id}")
        capture = tasks.after_response.task(name="capture-payment", shield=True, on_error=shop.payment_failed)
        capture.schedule(shop.capture_payment, order.id)
        tasks.after_response.task(name="order-email").schedule(shop.mailer.send, body.email, f"Order #{order.id}")
        return OrderOut(id=order.id, status=order.status)

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int) -> OrderOut:
        order = shop.orders.get(order_id)
        if order is None:
            raise HTTPException(status_code=404, detail="No such order.")
        return OrderOut(id=order.id, status=order.status, problem=order.problem)

    return app


app = create_app()
"""The app `uvicorn examples.shop.app:app` serves."""
