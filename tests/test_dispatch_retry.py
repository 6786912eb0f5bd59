"""Riding out a broker outage: the gated retry, its deadline and bound, and dispatches still waiting at shutdown.

A fake broker that the test takes down and brings back stands in for the queue; the outage
against a real Redis is in tests/integration/test_outage.py.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from fastapi_tasks import DispatchTask, TaskConfig, Tasks, TasksScheduler, TaskStatus, add_tasks, register_dispatcher
from fastapi_tasks._dispatch import dispatch_waiting_for
from fastapi_tasks.dispatchers._retry import unreachable
from fastapi_tasks.errors import DispatchError

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0


class Broker:
    """A broker that is down until `restore()`: it refuses connections, and counts the attempts."""

    def __init__(self) -> None:
        self.down = True
        self.attempts: list[str] = []  # job ids, one per attempt
        self.in_flight = 0
        self.crowded_attempts: list[int] = []  # attempts in flight when each one after the first failure began
        self.failed_once = False
        self.silent_after: int | None = None  # the attempts after this many wait for an answer that never comes
        self.waits_for: str | None = None  # what those attempts say they wait for (dispatch_waiting_for)
        self.sent: dict[str, int] = {}
        self._changed = anyio.Event()

    def restore(self) -> None:
        self.down = False

    async def attempted(self, count: int) -> None:
        """Wait until `count` attempts were made in all."""
        with anyio.fail_after(TIMEOUT):
            while len(self.attempts) < count:
                await self._changed.wait()

    async def take(self, job_id: str) -> str:
        self.attempts.append(job_id)
        self._changed.set()
        self._changed = anyio.Event()
        self.in_flight += 1
        if self.failed_once and self.down:
            self.crowded_attempts.append(self.in_flight)
        try:
            await anyio.lowlevel.checkpoint()  # a network call yields to the event loop
            if self.silent_after is not None and len(self.attempts) > self.silent_after:
                dispatch_waiting_for(self.waits_for, why="all 3 are taken")
                await anyio.sleep_forever()
            if self.down:
                self.failed_once = True
                raise ConnectionRefusedError(111, "Connection refused")
            self.sent[job_id] = self.sent.get(job_id, 0) + 1
            return f"handle {job_id}"
        finally:
            self.in_flight -= 1


class Parcel:
    """A job of the fake queue, sent to `broker`."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def __call__(self, n: int) -> int:
        return n


class ParcelQueue:
    """The `Dispatcher` of `Parcel`s; one gate per `Broker`."""

    backend = "parcelq"
    async_libraries = ("asyncio", "trio")

    def __init__(self, max_waiting: int = 10_000) -> None:
        self.max_waiting = max_waiting
        self.ids = 0

    def accepts(self, job: object) -> bool:
        return isinstance(job, Parcel)

    def broker_of(self, job: Parcel) -> Broker:
        return job.broker

    def job_name(self, job: Parcel) -> str:
        return "parcels.send"

    def job_signature(self, job: Parcel) -> inspect.Signature:
        return inspect.signature(job.__call__)

    def new_job_id(self, job: Parcel) -> str:
        self.ids += 1
        return f"p-{self.ids}"

    async def dispatch(self, job: Parcel, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return await job.broker.take(job_id)

    def round_trip(self, job: Parcel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return args, kwargs

    async def run_as_worker(self, job: Parcel, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        return job(*args, **kwargs)


QUEUE = ParcelQueue()
register_dispatcher(QUEUE)


async def ended(*handles: DispatchTask) -> None:
    with anyio.fail_after(TIMEOUT):
        for handle in handles:
            await handle.wait()


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_a_job_is_retried_under_the_same_id_until_the_broker_is_back_then_delivered() -> None:
    broker = Broker()
    async with anyio.create_task_group() as tg:
        handle = TasksScheduler(tg).enqueue(Parcel(broker), 1)
        await broker.attempted(3)
        broker.restore()
        await ended(handle)

    assert handle.status is TaskStatus.DISPATCHED
    assert handle.result == f"handle {handle.job_id}"
    assert set(broker.attempts) == {handle.job_id}  # at least once, and every attempt under one id
    assert broker.sent == {handle.job_id: 1}


@pytest.mark.parametrize("waits_for", [None, "free slot"])
async def test_an_attempt_the_deadline_cuts_short_leaves_the_error_an_earlier_one_met_in_the_message(
    waits_for: str | None,
) -> None:
    broker = Broker()
    broker.silent_after = 1  # the first attempt is refused; the next, after the backoff, waits until the deadline
    broker.waits_for = waits_for
    async with anyio.create_task_group() as tg:
        handle = TasksScheduler(tg).task(dispatch_timeout=TIMEOUT, dispatch_deadline=0.3).enqueue(Parcel(broker), 1)
        await ended(handle)

    assert len(broker.attempts) == 2
    exc = handle.exception
    assert isinstance(exc, DispatchError)
    assert isinstance(exc.__cause__, ConnectionRefusedError)  # the refusal, not the deadline, says why
    if waits_for is None:
        last = r"got no answer in the (\d+) ms the deadline left it\); outcome unknown: an attempt that got no answer "
        last += r"may have reached the queue\."
    else:
        last = r"found no free slot in the (\d+) ms the deadline left it: all 3 are taken\); the job was not sent\."
    assert re.fullmatch(
        rf"Could not dispatch 'parcels.send' \(job id {handle.job_id!r}, phase immediate\) to parcelq: the broker "
        rf"could not be reached within the dispatch deadline of 0.3 s \(2 attempts, the latest error was "
        rf"ConnectionRefusedError, and the last attempt {last}",
        str(exc),
    ), str(exc)
    assert exc.timed_out is (waits_for is None)  # the silent attempt may have reached the queue, unless it waited


async def test_a_first_attempt_bounded_by_a_shorter_deadline_is_described_with_the_deadline() -> None:
    broker = Broker()
    broker.silent_after = 0
    async with anyio.create_task_group() as tg:
        handle = TasksScheduler(tg).task(dispatch_timeout=TIMEOUT, dispatch_deadline=0.2).enqueue(Parcel(broker), 1)
        await ended(handle)

    assert isinstance(handle.exception, DispatchError)
    assert str(handle.exception).endswith(
        "within the dispatch deadline of 0.2 s (1 attempt, the last got no answer within 0.2 s); outcome unknown: "
        "an attempt that got no answer may have reached the queue."
    ), str(handle.exception)


async def test_while_the_broker_is_down_one_dispatch_probes_and_the_others_wait() -> None:
    broker = Broker()
    jobs = 50
    async with anyio.create_task_group() as tg:
        scheduler = TasksScheduler(tg)
        handles = [scheduler.enqueue(Parcel(broker), n) for n in range(jobs)]
        await broker.attempted(jobs + 4)  # every first attempt, then some probes
        broker.restore()
        await ended(*handles)

    assert [handle.status for handle in handles] == [TaskStatus.DISPATCHED] * jobs
    assert broker.sent == {handle.job_id: 1 for handle in handles}
    # After the first failure, while the broker was down, no attempt ever ran beside another: no herd.
    assert broker.crowded_attempts
    assert set(broker.crowded_attempts) == {1}
    probes = len(broker.attempts) - jobs - (jobs - 1)  # the failed probes and the one that found the broker back
    assert 4 <= probes <= 10


async def test_past_the_bound_of_waiting_dispatches_a_job_fails_at_once_naming_its_job_id() -> None:
    broker = Broker()
    queue = ParcelQueue(max_waiting=3)
    register_dispatcher(queue)
    try:
        async with anyio.create_task_group() as tg:
            scheduler = TasksScheduler(tg)
            first = scheduler.enqueue(Parcel(broker), 0)
            await broker.attempted(1)  # the broker is known to be down now: the first dispatch probes
            later = [scheduler.enqueue(Parcel(broker), n) for n in range(1, 6)]
            # Two more may wait; the other three fail at once (which ones: the order their first steps run in).
            three_ended = anyio.Event()
            ended_count = 0

            async def count_end(handle: DispatchTask) -> None:
                nonlocal ended_count
                await handle.wait()
                ended_count += 1
                if ended_count == 3:
                    three_ended.set()

            for handle in later:
                tg.start_soon(count_end, handle)
            with anyio.fail_after(TIMEOUT):
                await three_ended.wait()
            refused = [handle for handle in later if handle.status is TaskStatus.FAILED]
            waiting = [handle for handle in later if handle not in refused]
            assert len(refused) == 3
            assert not any(handle.done for handle in waiting)
            broker.restore()
            await ended(first, *later)
    finally:
        import fastapi_tasks.dispatchers._registry as registry

        registry._registered.remove(queue)
        registry._by_type.clear()

    assert [handle.status for handle in (first, *waiting)] == [TaskStatus.DISPATCHED] * 3
    assert len(refused) == 3
    for handle in refused:
        exc = handle.exception
        assert isinstance(exc, DispatchError)
        assert (exc.job_id, exc.phase, exc.timed_out) == (handle.job_id, "immediate", False)
        assert str(exc) == (
            f"Could not dispatch 'parcels.send' (job id {handle.job_id!r}, phase immediate) to parcelq: the broker is "
            "unreachable and 3 other dispatches already wait for it (the bound of parcelq's adapter, max_waiting); "
            "the job was not sent."
        )
        assert handle.job_id not in broker.attempts


async def test_past_the_deadline_every_lost_job_is_logged_by_job_id_and_phase(caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker()
    app = FastAPI()
    add_tasks(app, config=TaskConfig(dispatch_deadline=0.3))
    handles: list[DispatchTask] = []

    @app.post("/parcels/{n}")
    async def send(n: int, tasks: Tasks) -> dict[str, str]:
        handles.append(tasks.after_response.enqueue(Parcel(broker), n))
        return {"job_id": handles[-1].job_id}

    with caplog.at_level(logging.ERROR, logger="fastapi_tasks"):
        async with serve(app) as client:
            ids = [(await client.post(f"/parcels/{n}")).json()["job_id"] for n in range(5)]
            await ended(*handles)

    assert [handle.job_id for handle in handles] == ids
    assert broker.sent == {}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for handle in handles:
        exc = handle.exception
        assert isinstance(exc, DispatchError)
        assert (exc.job_id, exc.phase, exc.timed_out) == (handle.job_id, "after_response", False)
        assert isinstance(exc.__cause__, ConnectionRefusedError) or exc.__cause__ is None
        assert re.fullmatch(
            rf"Could not dispatch 'parcels.send' \(job id {handle.job_id!r}, phase after_response\) to parcelq: the "
            r"broker could not be reached within the dispatch deadline of 0.3 s \((\d+ attempts?, the last failed "
            r"with ConnectionRefusedError|0 attempts)\); the job was not sent.",
            str(exc),
        ), str(exc)
        assert f"job id {handle.job_id!r}, phase after_response" in logged


async def test_a_dispatch_waiting_at_shutdown_is_sent_if_the_broker_returns_within_the_grace_period() -> None:
    broker = Broker()
    app = FastAPI()
    add_tasks(app, shutdown_timeout=TIMEOUT)
    handles: list[DispatchTask] = []
    shutting_down = anyio.Event()

    @app.post("/parcels")
    async def send(tasks: Tasks) -> None:
        handles.append(tasks.after_response.enqueue(Parcel(broker), 1))

    async def restore_during_shutdown() -> None:
        await shutting_down.wait()
        await broker.attempted(len(broker.attempts) + 1)  # the dispatch still probes during the grace period
        broker.restore()

    async with anyio.create_task_group() as tg:
        tg.start_soon(restore_during_shutdown)
        async with serve(app) as client:
            await client.post("/parcels")
            await broker.attempted(1)
            shutting_down.set()
    assert handles[0].status is TaskStatus.DISPATCHED
    assert broker.sent == {handles[0].job_id: 1}


async def test_a_dispatch_still_waiting_after_the_grace_period_is_logged_with_its_job_id_and_phase(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker()
    app = FastAPI()
    add_tasks(app, shutdown_timeout=0.2)
    handles: list[DispatchTask] = []

    @app.post("/parcels")
    async def send(tasks: Tasks) -> None:
        handles.append(tasks.after_response.enqueue(Parcel(broker), 1))

    with caplog.at_level(logging.WARNING, logger="fastapi_tasks"):
        async with serve(app) as client:
            await client.post("/parcels")
            await broker.attempted(1)

    [handle] = handles
    assert handle.status is TaskStatus.CANCELLED
    exc = handle.exception
    assert isinstance(exc, DispatchError)
    assert (exc.job_id, exc.phase) == (handle.job_id, "after_response")
    # The shutdown cuts it short between attempts (not sent), or during one (the job may have reached the queue).
    prefix = rf"Could not dispatch 'parcels.send' \(job id {handle.job_id!r}, phase after_response\) to parcelq: "
    waited = (
        prefix + r"cancelled \(shutdown, or Task.cancel\(\)\) while it waited for the unreachable broker \(\d+ "
        r"attempts?, the last failed with ConnectionRefusedError\); the job was not sent\.",
        False,
    )
    in_attempt = (
        prefix + r"cancelled \(shutdown, or Task.cancel\(\)\) during attempt \d+; outcome unknown: an attempt that "
        r"got no answer may have reached the queue\.",
        True,
    )
    assert any(
        re.fullmatch(pattern, str(exc)) and exc.timed_out is unknown for pattern, unknown in (waited, in_attempt)
    ), (
        str(exc),
        exc.timed_out,
    )
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert errors == [str(exc)]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (type("OperationalError", (Exception,), {})("kombu"), True),
        (type("ConnectionError", (Exception,), {})("redis-py's, not an OSError"), True),
        (ValueError("cannot serialize"), False),
        (TypeError("not JSON serializable"), False),
    ],
)
async def test_only_an_unreachable_broker_is_retried(exc: BaseException, expected: bool) -> None:
    assert unreachable(exc) is expected
    wrapped = RuntimeError("send failed")
    wrapped.__cause__ = exc
    assert unreachable(wrapped) is expected  # taskiq's SendTaskError wraps the client's error


@pytest.mark.parametrize("bad", [0, -1, True, "5", float("inf"), float("nan")])
async def test_a_bad_dispatch_deadline_is_refused(bad: object) -> None:
    async with anyio.create_task_group() as tg:
        with pytest.raises(
            ValueError, match=rf"^dispatch_deadline must be a positive number of seconds or None, not {bad!r}$"
        ):
            TasksScheduler(tg).task(dispatch_deadline=bad)  # type: ignore[arg-type]


async def test_the_deadline_is_inherited_and_overridden_like_any_option() -> None:
    app_config = TaskConfig(dispatch_deadline=30.0, dispatch_timeout=2.0)
    assert app_config.merge(TaskConfig(name="x")).dispatch_deadline == 30.0
    assert app_config.merge(TaskConfig(dispatch_deadline=5.0)) == TaskConfig(
        dispatch_deadline=5.0, dispatch_timeout=2.0
    )
