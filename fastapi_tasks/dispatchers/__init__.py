"""Adapters between `enqueue()` and distributed queues.

`fastapi_tasks.dispatchers.taskiq` and `fastapi_tasks.dispatchers.celery` are imported on first
use by `enqueue()`, never by `import fastapi_tasks`: install the extra of the queue you use,
`fastapi-tasks[taskiq]` or `fastapi-tasks[celery]`.
"""
