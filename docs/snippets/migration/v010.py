# Written for fastapi-tasks 0.1.0; it runs unchanged on this version.
from fastapi import FastAPI
from fastapi_tasks import TaskConfig, Tasks, add_tasks

app = FastAPI()
add_tasks(app, config=TaskConfig(shield=True))


async def sync_crm(user_id: int) -> None: ...


@app.post("/users/{user_id}")
async def update_user(user_id: int, tasks: Tasks) -> dict[str, bool]:
    task = tasks.task(name="sync-crm").schedule(sync_crm, user_id)
    return {"started": task.started.is_set()}
