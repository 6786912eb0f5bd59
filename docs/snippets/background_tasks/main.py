from typing import Annotated

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException

app = FastAPI()

users: set[str] = set()
outbox: list[str] = []
audit_log: list[str] = []


def send_email(to: str, subject: str) -> None:
    # A real app talks to an SMTP server here: slow, and not in tests.
    outbox.append(f"{to}: {subject}")


async def write_audit(event: str) -> None:
    audit_log.append(event)


def audited(background_tasks: BackgroundTasks) -> None:
    # A dependency can add tasks too: the request has one BackgroundTasks.
    background_tasks.add_task(write_audit, "signup attempt")


@app.post("/signup/{email}", status_code=201)
async def signup(
    email: str,
    background_tasks: BackgroundTasks,
    _: Annotated[None, Depends(audited)],
) -> dict[str, str]:
    if email in users:
        raise HTTPException(status_code=409, detail="Already signed up.")
    users.add(email)
    background_tasks.add_task(send_email, email, "Welcome!")
    background_tasks.add_task(write_audit, f"signup {email}")
    return {"email": email}
