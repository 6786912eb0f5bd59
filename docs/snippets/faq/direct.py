from typing import Any

from fastapi import FastAPI, Request
from fastapi_tasks import Task, TasksScheduler, add_tasks

app = FastAPI()
add_tasks(app)

started: list[Task[..., Any]] = []


async def rebuild_thumbnails(album: str) -> None: ...


@app.post("/albums/{album}/rebuild")
async def rebuild(album: str, request: Request) -> None:
    # Without the Tasks dependency: a scheduler on the app's task group, kept by its lifespan.
    scheduler = TasksScheduler(request.state.fastapi_tasks_tg)
    started.append(scheduler.schedule(rebuild_thumbnails, album))
