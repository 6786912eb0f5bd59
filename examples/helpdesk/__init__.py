"""A small help desk API that uses FastAPI's own `BackgroundTasks`, tested with the `tasks_recorder` fixture."""
