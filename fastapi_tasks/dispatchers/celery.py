"""The Celery adapter: jobs are tasks made with `@app.task`, sent with `apply_async(task_id=...)`.

`apply_async` blocks, and blocks without limit on a broker that accepts connections but never
answers, so it runs on daemon threads of our own (reused: Celery keeps per-thread state that is
costly to build): the dispatch timeout abandons the thread instead of waiting for it, and a
thread stuck on a dead broker cannot hold up the process's exit. Those threads are bounded
(`CeleryDispatcher(max_threads=...)`, `DEFAULT_MAX_THREADS` by default): a thread stays counted
until its `apply_async` returns, even after the dispatch gave up on it, and a dispatch that finds
no free thread within its timeout fails with a `DispatchError`. Set Celery's
`broker_transport_options` socket timeouts so that threads stuck on a silent broker come back.

Each attempt fails fast, so that the dispatch core can retry it behind its gate: the thread takes
one of Celery's pooled producers with a time limit (no unbounded wait for one of the
`broker_pool_limit` producers), connects without kombu's own retry loop, and publishes with
`retry=False`. A thread whose attempt was given up before it began to publish publishes nothing.
Install with `pip install "fastapi-tasks[celery]"`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from celery import Task as CeleryTask
from celery.signals import task_postrun
from celery.utils import uuid
from kombu.serialization import dumps, loads

from .._compat import current_token, run_sync_on_loop
from .._dispatch import dispatch_waiting_for
from ._retry import DEFAULT_MAX_WAITING
from ._spool import Spool, open_spool

__all__ = ["DEFAULT_MAX_THREADS", "CeleryDispatcher"]

DEFAULT_MAX_THREADS = 40
"""Threads that may run `apply_async` at once, per event loop, unless `CeleryDispatcher(max_threads=...)` says
otherwise: as many as anyio's default thread pool, far more than a healthy broker needs (a dispatch takes
about a millisecond), and what a silent broker can hold at most."""


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
    """Dispatches Celery tasks; the job id is pre-assigned as `task_id`.

    The built-in instance allows `DEFAULT_MAX_THREADS` dispatch threads. For another bound,
    register your own: `register_dispatcher(CeleryDispatcher(max_threads=10))`.

    Parameters:
        max_threads: how many `apply_async` calls may run at once (per event loop), each on a
            thread of its own; a call abandoned at its dispatch timeout counts until it returns.
        max_waiting: how many dispatches may wait at once for a broker that is unreachable; past
            it a dispatch fails at once with a `DispatchError`.
        spool: a directory for the durable spool (off by default): a job that cannot be sent at
            once is written to a SQLite file there, and sent from it once the broker answers, also
            by the next process after this one died. See docs/scaling-out.md.

    Raises:
        ValueError: `max_threads` or `max_waiting` is not a positive int, or `spool` is not an
            existing directory.
        TypeError: `spool` is neither a path nor `None`.
    """

    backend: str = "celery"
    async_libraries: tuple[str, ...] = ("asyncio", "trio")

    def __init__(
        self,
        *,
        max_threads: int = DEFAULT_MAX_THREADS,
        max_waiting: int = DEFAULT_MAX_WAITING,
        spool: str | os.PathLike[str] | None = None,
    ) -> None:
        for option, value in (("max_threads", max_threads), ("max_waiting", max_waiting)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CeleryDispatcher({option}=...) must be a positive int, not {value!r}")
        self.max_threads = max_threads
        self.max_waiting = max_waiting
        self.spool: Spool | None = open_spool(spool, "CeleryDispatcher")
        # A CapacityLimiter belongs to one event loop: one per loop, made on first use.
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(f"fastapi_tasks celery dispatch threads {id(self)}")

    def __repr__(self) -> str:
        options = [
            f"{name}={value}"
            for name, value, default in (
                ("max_threads", self.max_threads, DEFAULT_MAX_THREADS),
                ("max_waiting", self.max_waiting, DEFAULT_MAX_WAITING),
            )
            if value != default
        ]
        if self.spool is not None:
            options.append(f"spool={str(self.spool.directory)!r}")
        return f"<CeleryDispatcher {' '.join(options)}>" if options else "<CeleryDispatcher>"

    def limiter(self) -> anyio.CapacityLimiter:
        """The running event loop's limiter of dispatch threads (its `borrowed_tokens` are the busy threads)."""
        try:
            return self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self.max_threads)
            self._limiter.set(limiter)
            return limiter

    def accepts(self, job: object) -> bool:
        """Whether `job` is a Celery task (`@app.task`, `@shared_task`)."""
        return isinstance(job, CeleryTask)

    def broker_of(self, job: Any) -> Any:
        """The Celery app the task is sent through: one gate per app's broker."""
        return job.app

    def find_job(self, name: str, like: Any) -> Any:
        """The task called `name` in the Celery app of `like`; `None`: no such task."""
        return like.app.tasks.get(name)

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
        """One attempt: `apply_async` on a daemon thread, once one of the `max_threads` is free.

        Returns:
            Celery's `AsyncResult`.
        """
        limiter = self.limiter()
        done = anyio.Event()  # also the borrower of the thread's token
        token = current_token()
        outcome: list[Any] = []
        # Given up with the attempt (its timeout, shutdown): a thread that has not begun to publish by
        # then publishes nothing, so a job reported as not sent is never sent later.
        attempt = _Attempt()
        dispatch_waiting_for(
            "free dispatch thread",
            why=f"all {self.max_threads} are busy sending to the broker (bound their wait with the socket "
            "timeouts of Celery's broker_transport_options, or allow more with CeleryDispatcher(max_threads=...))",
        )
        await limiter.acquire_on_behalf_of(done)
        dispatch_waiting_for(None)
        deadline = anyio.current_effective_deadline()
        # The thread waits for a pooled producer no longer than the attempt may take.
        wait = max(0.0, deadline - anyio.current_time()) if deadline != float("inf") else _PRODUCER_WAIT

        def finished() -> None:
            limiter.release_on_behalf_of(done)
            done.set()

        def send() -> None:
            try:
                outcome.append(_publish(job, job_id, args, kwargs, wait, attempt))
            except BaseException as exc:  # handed to the waiting task, which raises it
                outcome.append(exc)
            # The token goes back only now: a thread abandoned at the timeout still counts until here.
            # RuntimeError: the event loop is gone, and its limiter with it.
            with contextlib.suppress(RuntimeError):
                run_sync_on_loop(token, finished)

        try:
            _workers.submit(send)
        except BaseException:  # no thread could be started: the token was never handed over
            limiter.release_on_behalf_of(done)
            raise
        pool_limit = job.app.conf.broker_pool_limit
        # Until the thread begins to publish, a timeout finds it waiting for one of Celery's pooled producers or
        # for the broker to accept a connection: nothing was sent.
        dispatch_waiting_for(
            "connection to the broker",
            why=f"waiting for one of Celery's {pool_limit} pooled producers (broker_pool_limit) or for the broker "
            "to accept the connection",
        )
        try:
            await done.wait()
        except BaseException:
            if attempt.give_up():
                dispatch_waiting_for(None)  # it had begun to publish: the broker's answer is what we lacked
            raise
        dispatch_waiting_for(None)
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


_PRODUCER_WAIT = 5.0
"""Seconds a thread waits for one of Celery's pooled producers when its attempt has no deadline."""


class _GivenUp(Exception):
    """The attempt was given up before its thread began to publish: nothing was sent."""


class _Attempt:
    """One attempt shared by the event loop and its thread: given up, or publishing, whichever came first."""

    __slots__ = ("_lock", "given_up", "publishing")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.given_up = False
        self.publishing = False

    def give_up(self) -> bool:
        """From the event loop: nothing may be published from now on; return whether publishing had begun."""
        with self._lock:
            self.given_up = True
            return self.publishing

    def begin_publishing(self) -> None:
        """From the thread, just before it publishes.

        Raises:
            _GivenUp: the attempt was given up.
        """
        with self._lock:
            if self.given_up:
                raise _GivenUp
            self.publishing = True


def _publish(
    job: Any, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], wait: float, attempt: _Attempt
) -> Any:
    """`apply_async` as one attempt that fails fast: a producer within `wait` s, one connection try, no retry."""
    pool = job.app.producer_pool
    # kombu's pool raises LimitExceeded when no producer frees up within `wait`: an error, not a wait without end.
    with pool.acquire(block=True, timeout=wait) as producer:
        # One connection try (kombu's default retries for up to broker_connection_timeout), then publish
        # without kombu's retry policy: the dispatch core retries, behind its gate.
        producer.connection.ensure_connection(max_retries=0)
        attempt.begin_publishing()
        return job.apply_async(args, kwargs, task_id=job_id, producer=producer, retry=False)


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
