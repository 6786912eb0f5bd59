from fastapi import BackgroundTasks, FastAPI

app = FastAPI()


def send_email(to: str) -> None: ...


@app.post("/signup/{email}")
async def signup(email: str, background_tasks: BackgroundTasks) -> None:
    background_tasks.add_task(send_email, email)
