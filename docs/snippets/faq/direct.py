from typing import Any

from fastapi import FastAPI, Request
from fastapi_tasks import Task, TasksScheduler, add_tasks

app = FastAPI()
add_tasks(app)

started: list[Task[..., Any]] = []


async def rebuild_thumbnails(album: str) -> None: ...


@app.post("/albums/{album}/rebuild")
async def rebuild(album: str, request: Request) -> None:
    # No Tasks dependency: a scheduler on the task group of the app's lifespan.
    scheduler = TasksScheduler(request.state.fastapi_tasks_tg)
    started.append(scheduler.schedule(rebuild_thumbnails, album))
