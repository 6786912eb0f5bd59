from typing import Any

from fastapi import FastAPI
from fastapi_tasks import Task, Tasks, add_tasks

app = FastAPI()
add_tasks(app)

refunds: list[int] = []


async def charge_card(order_id: int, amount_cents: int) -> str:
    raise RuntimeError("no payment provider in tests")


async def refund(task: Task[..., Any], exc: Exception) -> None:
    refunds.append(task.args[0])


async def send_invoice(order_id: int) -> None: ...


@app.post("/orders/{order_id}/checkout")
async def checkout(order_id: int, tasks: Tasks) -> None:
    charge = tasks.after_response.task(name="charge", on_error=refund)
    charge.schedule(charge_card, order_id, 1999)
    tasks.after_response.schedule(send_invoice, order_id)
