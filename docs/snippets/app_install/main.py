from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

public_app = FastAPI()
admin_app = FastAPI()
add_tasks(public_app)
add_tasks(admin_app)


def rebuild_index() -> None: ...


@admin_app.post("/reindex")
async def reindex(tasks: Tasks) -> None:
    tasks.after_response.schedule(rebuild_index)
