from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)


def warm_cache(key: str) -> None: ...


@app.get("/items/{key}")
async def read_item(key: str, tasks: Tasks) -> None:
    tasks.schedule(warm_cache, key)
