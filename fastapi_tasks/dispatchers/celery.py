"""The Celery adapter: jobs are tasks made with `@app.task`, sent with `apply_async(task_id=...)`.

`apply_async` blocks, and blocks without limit on a broker that accepts connections but never
answers, so it runs on daemon threads of our own (reused: Celery keeps per-thread state that is
costly to build): the dispatch timeout abandons the thread instead of waiting for it, and a
thread stuck on a dead broker cannot hold up the process's exit. Set Celery's
`broker_transport_options` socket timeouts so that such threads come back too.
Install with `pip install "fastapi-tasks[celery]"`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from celery import Task as CeleryTask
from celery.signals import task_postrun
from celery.utils import uuid
from kombu.serialization import dumps, loads

__all__ = ["CeleryDispatcher"]


class _DaemonWorkers:
    """Daemon threads that run blocking calls, reused while busy ones stay stuck on a silent broker.

    A call finds an idle thread or starts a new one, so a stuck thread never delays later
    dispatches; a thread idle for `idle_timeout` seconds ends.
    """

    def __init__(self, idle_timeout: float = 60.0) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._condition = threading.Condition()
        self._idle = 0
        self._busy = 0
        self._idle_timeout = idle_timeout

    def submit(self, call: Callable[[], None]) -> None:
        """Run `call` (which must not raise) on an idle thread, or on a new one."""
        with self._condition:
            self._busy += 1
            start = not self._idle
            if not start:
                self._idle -= 1
        self._calls.put(call)
        if start:
            threading.Thread(target=self._work, name="fastapi-tasks celery dispatch", daemon=True).start()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is running (for tests); return whether that happened within `timeout` s."""
        with self._condition:
            return self._condition.wait_for(lambda: self._busy == 0, timeout)

    def _work(self) -> None:
        while True:
            try:
                call = self._calls.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._condition:
                    if self._idle:
                        self._idle -= 1
                        return
                # Every idle slot, this thread's included, was claimed: a call is on its way.
                continue  # pragma: no cover - a race between the idle timeout and a submit
            call()
            with self._condition:
                self._busy -= 1
                self._idle += 1
                self._condition.notify_all()


_workers = _DaemonWorkers()


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

    def job_signature(self, job: Any) -> inspect.Signature:
        """The parameters of the task's body (`Task.run`; a `bind=True` task's `self` excluded)."""
        return inspect.signature(job.run)

    def new_job_id(self, job: Any) -> str:
        """A Celery task id (a UUID string)."""
        return str(uuid())

    async def dispatch(self, job: Any, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """`apply_async` on a daemon thread; returns Celery's `AsyncResult`."""
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

        _workers.submit(send)
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

    async def run_as_worker(self, job: Any, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the task with Celery's `apply(task_id=job_id)`, as eager mode does, in a worker thread.

        The task's request is set as on a worker (`self.request.id` is `job_id` in a bound task),
        and a failure is handled as a worker handles it (`on_failure`, the `task_failure`
        signal, retries); no broker is contacted. The exception the task raised is raised as is,
        even one that Celery could only report as an `UnpickleableExceptionWrapper`.
        """
        return await anyio.to_thread.run_sync(functools.partial(_apply, job, job_id, list(args), dict(kwargs)))


def _apply(job: Any, job_id: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    raised: list[BaseException] = []

    def keep_raised(task_id: str, retval: Any, **_: Any) -> None:
        # Celery's result holds a picklable stand-in for an exception that does not pickle; the
        # postrun signal still sees what the task raised. The last attempt comes last.
        if task_id == job_id and isinstance(retval, BaseException):
            raised.append(retval)

    task_postrun.connect(keep_raised, weak=False)
    try:
        # throw=False: Celery handles a failure as a worker does, and a retry runs again here.
        result = job.apply(args=args, kwargs=kwargs, task_id=job_id, throw=False)
    finally:
        task_postrun.disconnect(keep_raised)
    if result.failed():
        raise raised[-1] if raised else result.result
    return result.result
