from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)  # (1)


def send_email(to: str) -> None: ...


@app.post("/signup/{email}")
async def signup(email: str, tasks: Tasks) -> None:  # (2)
    tasks.after_response.schedule(send_email, email)  # (3)
