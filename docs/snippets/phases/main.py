from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)


async def reserve_stock(order_id: int) -> None: ...


async def write_audit_entry(order_id: int) -> None: ...


async def send_receipt(order_id: int) -> None: ...


@app.post("/orders/{order_id}")
async def place_order(order_id: int, tasks: Tasks) -> dict[str, int]:
    # Starts now, while this function runs:
    tasks.schedule(reserve_stock, order_id)
    # Starts when this function returns:
    tasks.after_route.schedule(write_audit_entry, order_id)
    # Starts once the client has the response:
    tasks.after_response.schedule(send_receipt, order_id)
    return {"order": order_id}
