from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)


async def expire_session(session_id: str) -> None: ...


@app.post("/logout/{session_id}")
async def logout(session_id: str, tasks: Tasks) -> None:
    tasks.after_response.schedule(expire_session, session_id)
