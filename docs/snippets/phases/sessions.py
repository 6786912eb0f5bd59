from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)


class Session:
    """A database session, closed when the request ends."""

    def __init__(self) -> None:
        self.closed = False

    def add(self, row: str) -> None:
        if self.closed:
            raise RuntimeError("the session is closed")


async def get_session() -> AsyncIterator[Session]:
    session = Session()
    yield session
    session.closed = True


async def audit(session: Session, order_id: int) -> None:
    # Runs on the event loop, at the request's next checkpoint:
    # the session is still open.
    session.add(f"order {order_id}")


def audit_in_a_thread(session: Session, order_id: int) -> None:
    # Runs in a worker thread that races the request's teardown.
    session.add(f"order {order_id}")


@app.post("/orders/{order_id}")
async def place_order(
    order_id: int,
    session: Annotated[Session, Depends(get_session)],
    tasks: Tasks,
) -> None:
    tasks.after_route.schedule(audit, session, order_id)
    tasks.after_route.schedule(audit_in_a_thread, session, order_id)
