from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks
from pydantic import BaseModel

app = FastAPI()
add_tasks(app)

sent: list[str] = []
audit_log: list[str] = []


async def send_email(to: str) -> None:
    sent.append(to)  # a real app talks to its mail server here


def audit(event: str, email: str) -> None:
    audit_log.append(f"{event}: {email}")  # sync: runs in a worker thread


class SignUp(BaseModel):
    email: str


@app.post("/signup")
async def signup(body: SignUp, tasks: Tasks) -> dict[str, str]:
    tasks.after_route.schedule(audit, "signup", body.email)
    tasks.after_response.schedule(send_email, body.email)
    return {"email": body.email}
