from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)


async def track(event: str) -> None: ...


@app.get("/")
async def home(tasks: Tasks) -> dict[str, str]:
    tasks.after_response.schedule(track, "home viewed")
    return {"hello": "world"}
