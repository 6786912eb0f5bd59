from typing import Any

from fastapi import FastAPI
from fastapi_tasks import Task, TaskConfig, Tasks, add_tasks

alerts: list[str] = []
unpaid: list[int] = []


def alert_ops(task: Task[..., Any], exc: Exception) -> None:
    alerts.append(f"{task.name} failed: {exc!r}")


async def mark_unpaid(task: Task[..., Any], exc: Exception) -> None:
    unpaid.append(task.args[0])


app = FastAPI()
# Every task inherits these settings; its own settings are merged over them.
add_tasks(app, config=TaskConfig(on_error=alert_ops))


async def resize_avatar(user_id: int) -> None: ...


async def capture_payment(order_id: int) -> None: ...


@app.put("/users/{user_id}/avatar")
async def upload_avatar(user_id: int, tasks: Tasks) -> None:
    # Named "resize-avatar" in logs and test reports; on_error is inherited.
    resize = tasks.after_response.task(name="resize-avatar")
    resize.schedule(resize_avatar, user_id)


@app.post("/orders/{order_id}/pay")
async def pay(order_id: int, tasks: Tasks) -> None:
    capture = tasks.after_response.task(
        name="capture-payment", shield=True, on_error=mark_unpaid
    )
    capture.schedule(capture_payment, order_id)
