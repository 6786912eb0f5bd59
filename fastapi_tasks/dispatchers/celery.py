"""The Celery adapter: jobs are tasks made with `@app.task`, sent with `apply_async(task_id=...)`.

`apply_async` blocks, and blocks without limit on a broker that accepts connections but never
answers, so it runs in a daemon thread of its own: the dispatch timeout abandons the thread
instead of waiting for it, and a thread stuck on a dead broker cannot hold up the process's exit.
Set Celery's `broker_transport_options` socket timeouts so such threads end too.
Install with `pip install "fastapi-tasks[celery]"`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from celery import Task as CeleryTask
from celery.utils import uuid
from kombu.serialization import dumps, loads

__all__ = ["CeleryDispatcher"]


class CeleryDispatcher:
    """Dispatches Celery tasks; the job id is pre-assigned as `task_id`."""

    backend: str = "celery"
    async_libraries: tuple[str, ...] = ("asyncio", "trio")

    def __repr__(self) -> str:
        return "<CeleryDispatcher>"

    def accepts(self, job: object) -> bool:
        """Whether `job` is a Celery task (`@app.task`, `@shared_task`)."""
        return isinstance(job, CeleryTask)

    def job_name(self, job: Any) -> str:
        """The task's registered name."""
        return str(job.name)

    def job_function(self, job: Any) -> Callable[..., Any]:
        """The task's body (`Task.run`, bound to the task for `bind=True` tasks)."""
        run: Callable[..., Any] = job.run
        return run

    def new_job_id(self, job: Any) -> str:
        """A Celery task id (a UUID string)."""
        return str(uuid())

    async def dispatch(self, job: Any, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """`apply_async` in a daemon thread; returns Celery's `AsyncResult`."""
        done = anyio.Event()
        token = anyio.lowlevel.current_token()
        outcome: list[Any] = []

        def send() -> None:
            try:
                outcome.append(job.apply_async(args, kwargs, task_id=job_id))
            except BaseException as exc:  # handed to the waiting task, which raises it
                outcome.append(exc)
            # RuntimeError: the event loop is gone, so nobody waits for this dispatch any more.
            with contextlib.suppress(RuntimeError):
                anyio.from_thread.run_sync(done.set, token=token)

        threading.Thread(target=send, name=f"fastapi-tasks celery dispatch {job_id}", daemon=True).start()
        await done.wait()
        [result] = outcome
        if isinstance(result, BaseException):
            raise result
        return result

    def round_trip(
        self, job: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Serialize and load back the arguments with the task's serializer; no broker is contacted."""
        serializer = job.serializer or job.app.conf.task_serializer
        content_type, encoding, payload = dumps((list(args), dict(kwargs)), serializer=serializer)  # type: ignore[no-untyped-call]
        loaded_args, loaded_kwargs = loads(payload, content_type, encoding, accept={content_type})  # type: ignore[no-untyped-call]
        return tuple(loaded_args), dict(loaded_kwargs)
