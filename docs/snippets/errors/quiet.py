from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
# Failure log lines name the exception's type and where it was raised,
# without its message or traceback, which may quote what the task handles.
add_tasks(app, log_exception_messages=False)


async def charge(card_number: str) -> None:
    raise ValueError(f"card {card_number} declined")


@app.post("/charges")
async def create_charge(tasks: Tasks) -> None:
    tasks.schedule(charge, "4111111111111111")
