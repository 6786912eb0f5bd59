import anyio
from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)

sent: list[str] = []


async def send_email(to: str) -> None:
    sent.append(to)


def audit(event: str) -> None: ...


@app.post("/invite/{email}")
async def invite(email: str, tasks: Tasks) -> None:
    tasks.after_route.schedule(audit, "invite")
    tasks.after_response.schedule(send_email, email)


async def watch_prices() -> None:
    await anyio.sleep_forever()  # a poller: runs until the app stops


@app.post("/prices/watch")
async def watch(tasks: Tasks) -> None:
    tasks.schedule(watch_prices)
