from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)

messages: list[str] = []
closed: list[str] = []


async def store_message(room: str, text: str) -> None:
    messages.append(f"{room}: {text}")


def close_room(room: str) -> None:
    closed.append(room)


@app.websocket("/rooms/{room}")
async def chat(websocket: WebSocket, room: str, tasks: Tasks) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            tasks.schedule(store_message, room, text)  # starts now
    except WebSocketDisconnect:
        # The client left: starts when this handler returns.
        tasks.after_route.schedule(close_room, room)
