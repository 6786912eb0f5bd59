from typing import Any

from fastapi import FastAPI
from fastapi_tasks import Task, Tasks, add_tasks

app = FastAPI()
add_tasks(app)


def warm_cache(key: str) -> None: ...


def write_audit_entry(event: str) -> None: ...


async def capture_payment(order_id: int) -> None: ...


def report(task: Task[..., Any], exc: Exception) -> None: ...


@app.post("/orders/{order_id}")
async def place_order(order_id: int, tasks: Tasks) -> None:
    # --8<-- [start:calls]
    tasks.task(name="warm-cache").schedule(warm_cache, f"order:{order_id}")
    tasks.after_route.task(on_error=report).schedule(
        write_audit_entry, "order placed"
    )
    tasks.after_response.task(shield=True).schedule(capture_payment, order_id)
    # --8<-- [end:calls]
