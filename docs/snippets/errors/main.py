from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi_tasks import Task, Tasks, add_tasks

app = FastAPI()
add_tasks(app)

retry_queue: list[str] = []


async def upload_to_storage(name: str) -> None: ...


async def retry_later(task: Task[..., Any], exc: Exception) -> None:
    # Called, after the failure was logged, with the task (its name, args and
    # kwargs) and what it raised.
    retry_queue.append(task.args[0])


@app.post("/files/{name}")
async def store_file(name: str, tasks: Tasks) -> dict[str, str]:
    upload = tasks.after_response.task(on_error=retry_later)
    upload.schedule(upload_to_storage, name)
    if name.endswith(".exe"):
        # The endpoint raises: the upload above is discarded, never started.
        raise HTTPException(status_code=400, detail="No executables, please.")
    return {"stored": name}
