from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
# At shutdown, running tasks get up to 30 seconds to finish; then the
# unshielded ones are cancelled.
add_tasks(app, shutdown_timeout=30)


async def capture_payment(order_id: int) -> None: ...


async def send_receipt(order_id: int) -> None: ...


@app.post("/orders/{order_id}")
async def place_order(order_id: int, tasks: Tasks) -> None:
    # Shielded: never cancelled. A deploy must not leave an order half paid.
    tasks.after_response.task(shield=True).schedule(capture_payment, order_id)
    # Not shielded: a receipt can be sent again, so it is cancelled if the
    # grace period runs out.
    tasks.after_response.schedule(send_receipt, order_id)
