from fastapi import FastAPI, HTTPException
from fastapi_tasks import Tasks, add_tasks
from taskiq import Context, TaskiqDepends
from taskiq_redis import ListQueueBroker

# The workers run `taskiq worker main:broker`.
broker = ListQueueBroker("redis://localhost:6379/0")

app = FastAPI()
add_tasks(app)


@broker.task
async def send_receipt(
    order_id: int,
    context: Context = TaskiqDepends(),  # noqa: B008
) -> str:
    """Runs on a worker, in another process or on another machine."""
    # The job id is the idempotency key: a queue may deliver the same job twice.
    return f"receipt {order_id}, key {context.message.task_id}"


class PaymentDeclinedError(Exception):
    pass


def charge(order_id: int) -> None:
    if order_id == 13:
        raise PaymentDeclinedError(order_id)


@app.post("/orders/{order_id}")
async def place_order(order_id: int, tasks: Tasks) -> dict[str, object]:
    # Handed to the queue once the response was sent; never if this raises.
    receipt = tasks.after_response.enqueue(send_receipt, order_id)
    try:
        charge(order_id)
    except PaymentDeclinedError:
        raise HTTPException(402, detail="payment declined") from None
    return {"order": order_id, "receipt_job": receipt.job_id}
