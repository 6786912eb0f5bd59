import hashlib

from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)

checksums: dict[str, str] = {}


def compute_checksum(name: str, data: bytes) -> None:
    # Sync, CPU- or I/O-bound: it runs in a worker thread, and does not block
    # the event loop.
    checksums[name] = hashlib.sha256(data).hexdigest()


async def notify_subscribers(name: str) -> None:
    # Async: it runs on the event loop. Never call blocking code in here.
    ...


@app.put("/blobs/{name}")
def put_blob(name: str, data: str, tasks: Tasks) -> None:
    # A sync endpoint (FastAPI runs it in a worker thread) schedules in every
    # phase too.
    tasks.schedule(compute_checksum, name, data.encode())
    tasks.after_response.schedule(notify_subscribers, name)


@app.delete("/blobs/{name}")
async def delete_blob(name: str, tasks: Tasks) -> None:
    tasks.after_route.schedule(checksums.pop, name, None)  # any callable
