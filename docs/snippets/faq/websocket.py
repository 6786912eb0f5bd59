from fastapi import FastAPI, WebSocket
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)


async def store_message(room: str, text: str) -> None: ...


def close_room(room: str) -> None: ...


@app.websocket("/rooms/{room}")
async def chat(websocket: WebSocket, room: str, tasks: Tasks) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    tasks.schedule(store_message, room, text)  # starts now
    tasks.after_route.schedule(close_room, room)  # when this handler returns
    await websocket.close()
