from fastapi_tasks import TasksScheduler
from taskiq import InMemoryBroker, TaskiqDepends

broker = InMemoryBroker()
DELIVERED: list[int] = []


def worker_tasks() -> TasksScheduler:
    """On a worker, the scheduler its jobs dispatch follow-up jobs with."""
    raise NotImplementedError("provided by the worker's startup")


@broker.task
async def pack(
    order_id: int,
    tasks: TasksScheduler = TaskiqDepends(worker_tasks),  # noqa: B008
) -> str:
    tasks.enqueue(deliver, order_id)  # a job that dispatches the next one
    return f"packed {order_id}"


@broker.task
async def deliver(order_id: int) -> None:
    if order_id == 13:
        raise LookupError(f"no address for order {order_id}")
    DELIVERED.append(order_id)
