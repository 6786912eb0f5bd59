import uuid

from fastapi import FastAPI
from fastapi_tasks import Tasks, TasksScheduler, add_tasks

app = FastAPI()
add_tasks(app)

FOLLOWERS = {"ada": ["grace", "linus"], "grace": []}


async def send_push(user: str, *, text: str, trace_id: str) -> None: ...


async def index_post(post_id: str) -> None: ...


def track(event: str, *, phase: str) -> None:
    """A task with a parameter named like an assertion's option."""


def notify_followers(tasks: TasksScheduler, author: str) -> None:
    """Takes a scheduler: a unit test can pass a RecordingScheduler, no app."""
    trace_id = uuid.uuid4().hex
    for follower in FOLLOWERS[author]:
        tasks.after_response.schedule(
            send_push, follower, text=f"{author} posted", trace_id=trace_id
        )


@app.post("/posts/{author}")
async def publish(author: str, tasks: Tasks) -> dict[str, str]:
    post_id = uuid.uuid4().hex
    tasks.after_route.task(name="index").schedule(index_post, post_id)
    tasks.after_route.schedule(track, "post published", phase="beta")
    notify_followers(tasks, author)
    return {"id": post_id}
