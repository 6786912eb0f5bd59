"""The durable spool: jobs that could not be sent at once wait in a SQLite file, and are sent once the broker answers.

A fake broker that the test takes down and brings back stands in for the queue; a process killed
during an outage against a real Redis is in tests/integration/test_spool_restart.py.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest

import fastapi_tasks.dispatchers._registry as registry
from fastapi_tasks import DispatchTask, TasksScheduler, TaskStatus, register_dispatcher
from fastapi_tasks.dispatchers._spool import UnknownJobError, open_spool
from fastapi_tasks.dispatchers.celery import CeleryDispatcher
from fastapi_tasks.dispatchers.taskiq import TaskiqDispatcher
from fastapi_tasks.errors import DispatchError

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0
JOB_IDS = itertools.count(1)


class Broker:
    """A broker that refuses connections while `down`; counts what it took."""

    def __init__(self, *, down: bool = True) -> None:
        self.down = down
        self.attempts = 0
        self.sent: list[str] = []
        self.refuse: set[str] = set()  # job ids it rejects for good
        self.down_after: int | None = None  # goes down once it took this many jobs
        self._changed = anyio.Event()

    async def attempted(self, count: int) -> None:
        with anyio.fail_after(TIMEOUT):
            while self.attempts < count:
                await self._changed.wait()

    async def take(self, job_id: str) -> str:
        self.attempts += 1
        self._changed.set()
        self._changed = anyio.Event()
        await anyio.lowlevel.checkpoint()
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        if job_id in self.refuse:
            raise ValueError("message too large")
        self.sent.append(job_id)
        if len(self.sent) == self.down_after:
            self.down = True
        return f"handle {job_id}"


class Parcel:
    """A job of the fake queue."""

    def __init__(self, broker: Broker, name: str = "parcels.send") -> None:
        self.broker = broker
        self.name = name

    def __call__(self, n: int) -> int:
        return n


class SpooledQueue:
    """The `Dispatcher` of `Parcel`s, with a spool; its jobs are found by name among `known`."""

    backend = "parcelq"
    async_libraries = ("asyncio", "trio")

    def __init__(self, spool: Path | None) -> None:
        self.spool = open_spool(spool, "SpooledQueue")
        self.known: dict[str, Parcel] = {}

    def accepts(self, job: object) -> bool:
        return isinstance(job, Parcel)

    def broker_of(self, job: Parcel) -> Broker:
        return job.broker

    def find_job(self, name: str, like: Parcel) -> Parcel | None:
        return self.known.get(name)

    def job_name(self, job: Parcel) -> str:
        self.known.setdefault(job.name, job)
        return job.name

    def job_signature(self, job: Parcel) -> inspect.Signature:
        return inspect.signature(job.__call__)

    def new_job_id(self, job: Parcel) -> str:
        return f"p-{next(JOB_IDS)}"  # unique across the queues of a test, as across processes

    async def dispatch(self, job: Parcel, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return await job.broker.take(job_id)

    def round_trip(self, job: Parcel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return args, kwargs

    async def run_as_worker(self, job: Parcel, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        return job(*args, **kwargs)


@contextmanager
def spooled(count: int) -> Iterator[anyio.Event]:
    """An event set once `count` jobs were written to a spool (it logs each at DEBUG, on the event loop)."""
    event = anyio.Event()
    seen = 0

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal seen
            if record.getMessage().startswith("Spooled job "):
                seen += 1
                if seen == count:
                    event.set()

    logger = logging.getLogger("fastapi_tasks")
    handler, level = Counter(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield event
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    registry._registered[:] = [d for d in registry._registered if not isinstance(d, SpooledQueue)]
    registry._by_type.clear()


def queue_in(directory: Path) -> SpooledQueue:
    queue = SpooledQueue(directory)
    register_dispatcher(queue)  # asked first: the latest registered queue takes the Parcels
    return queue


def enqueue(tg: anyio.abc.TaskGroup, job: Parcel, *ns: int, deadline: float = 60.0) -> list[DispatchTask]:
    definition = TasksScheduler(tg).task(dispatch_deadline=deadline)
    return [definition.enqueue(job, n) for n in ns]


async def ended(*handles: DispatchTask) -> None:
    with anyio.fail_after(TIMEOUT):
        for handle in handles:
            await handle.wait()


async def test_jobs_spooled_during_an_outage_are_delivered_once_the_broker_answers(spool_dir: Path) -> None:
    queue = queue_in(spool_dir)
    assert queue.spool is not None
    broker = Broker()
    async with anyio.create_task_group() as tg:
        with spooled(20) as all_spooled:
            handles = enqueue(tg, Parcel(broker), *range(20))
            with anyio.fail_after(TIMEOUT):
                await all_spooled.wait()
        assert await anyio.to_thread.run_sync(queue.spool.count) == 20
        broker.down = False
        await ended(*handles)

    assert [handle.status for handle in handles] == [TaskStatus.DISPATCHED] * 20
    assert sorted(broker.sent) == sorted(handle.job_id for handle in handles)
    assert queue.spool.count() == 0
    queue.spool.close()


async def test_a_healthy_broker_never_touches_the_spool(spool_dir: Path) -> None:
    queue = queue_in(spool_dir)
    assert queue.spool is not None
    queue.spool.close()  # any SQLite call would now fail
    async with anyio.create_task_group() as tg:
        [handle] = enqueue(tg, Parcel(Broker(down=False)), 1)
    assert handle.status is TaskStatus.DISPATCHED


async def test_a_job_past_its_deadline_stays_in_the_spool_and_the_next_dispatch_sends_it(
    spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = queue_in(spool_dir)
    assert queue.spool is not None
    broker = Broker()
    job = Parcel(broker)
    async with anyio.create_task_group() as tg:
        [late] = enqueue(tg, job, 1, deadline=0.2)
    assert late.status is TaskStatus.FAILED
    assert isinstance(late.exception, DispatchError)
    assert str(late.exception).endswith(
        "the job was not sent; the spool keeps the job and sends it once the broker answers."
    )
    assert queue.spool.count() == 1

    broker.down = False
    with caplog.at_level(logging.INFO, logger="fastapi_tasks"):
        async with anyio.create_task_group() as tg:
            [later] = enqueue(tg, job, 2)
    assert later.status is TaskStatus.DISPATCHED
    assert broker.sent == [later.job_id, late.job_id]  # under the id of the dispatch that gave up
    assert queue.spool.count() == 0
    assert f"Sent spooled job 'parcels.send' (job id {late.job_id!r})." in caplog.messages
    queue.spool.close()


async def test_a_new_process_adopts_the_jobs_of_one_that_died_and_sends_them(spool_dir: Path) -> None:
    dead = queue_in(spool_dir)
    assert dead.spool is not None
    broker = Broker()
    job = Parcel(broker)
    async with anyio.create_task_group() as tg:
        handles = enqueue(tg, job, 0, 1, 2, deadline=0.1)
    live = SpooledQueue(spool_dir)  # another process in the same directory: the first one still holds its file
    assert live.spool is not None
    assert (live.spool.adopted, live.spool.count()) == (0, 0)
    dead.spool.close()  # the process ends: its lock goes with it, its rows stay

    restarted = queue_in(spool_dir)
    assert restarted.spool is not None
    assert (restarted.spool.adopted, restarted.spool.count()) == (3, 3)
    kept = {spool.path.name for spool in (live.spool, restarted.spool)}
    files = await anyio.to_thread.run_sync(lambda: {path.name for path in spool_dir.iterdir()})
    assert files == kept | {name.replace(".sqlite3", ".lock") for name in kept}
    broker.down = False
    async with anyio.create_task_group() as tg:
        [trigger] = enqueue(tg, job, 9)
    assert broker.sent[0] == trigger.job_id
    assert sorted(broker.sent[1:]) == sorted(handle.job_id for handle in handles)  # in the order they were spooled
    assert restarted.spool.count() == 0
    live.spool.close()
    restarted.spool.close()


async def test_a_drain_keeps_the_jobs_it_does_not_know_and_drops_the_ones_refused_for_good(
    spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = queue_in(spool_dir)
    assert queue.spool is not None
    broker = Broker()
    known, other = Parcel(broker), Parcel(broker, name="parcels.other")
    async with anyio.create_task_group() as tg:
        handles = [*enqueue(tg, known, 1, deadline=0.1), *enqueue(tg, other, 2, deadline=0.1)]
        handles += enqueue(tg, known, 3, deadline=0.1)
    del queue.known["parcels.other"]  # a job this process does not know (yet)
    broker.refuse.add(handles[2].job_id)
    broker.down = False
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastapi_tasks"):
        async with anyio.create_task_group() as tg:
            [trigger] = enqueue(tg, known, 4)

    assert broker.sent == [trigger.job_id, handles[0].job_id]
    assert queue.spool.count() == 1  # the unknown one
    assert sorted(caplog.messages) == [  # in the order they were spooled, which the test does not fix
        f"Could not send spooled job 'parcels.send' (job id {handles[2].job_id!r}): ValueError; it is removed "
        "from the spool.",
        f"The spool keeps job 'parcels.other' (job id {handles[1].job_id!r}), which no queue of this process "
        f"knows: it stays in {queue.spool.path}.",
    ]
    queue.spool.close()


async def test_a_drain_stops_when_the_broker_goes_down_again_and_the_next_one_goes_on(spool_dir: Path) -> None:
    queue = queue_in(spool_dir)
    assert queue.spool is not None
    broker = Broker()
    job = Parcel(broker)
    async with anyio.create_task_group() as tg:
        kept = enqueue(tg, job, 1, 2, 3, deadline=0.1)
    broker.down, broker.down_after = False, 2  # takes the trigger's job and one kept job, then goes down
    async with anyio.create_task_group() as tg:
        [first] = enqueue(tg, job, 4)
    assert first.status is TaskStatus.DISPATCHED
    assert (len(broker.sent), queue.spool.count(), queue.spool.maybe_pending) == (2, 2, True)

    broker.down, broker.down_after = False, None
    async with anyio.create_task_group() as tg:
        [second] = enqueue(tg, job, 5)
    assert sorted(broker.sent) == sorted([first.job_id, second.job_id, *(handle.job_id for handle in kept)])
    assert queue.spool.count() == 0
    queue.spool.close()


async def test_a_job_whose_arguments_do_not_pickle_waits_in_memory_only(
    spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = queue_in(spool_dir)
    assert queue.spool is not None
    broker = Broker()
    async with anyio.create_task_group() as tg:
        [handle] = enqueue(tg, Parcel(broker), threading.Lock())  # type: ignore[arg-type]
        await broker.attempted(2)
        broker.down = False

    assert handle.status is TaskStatus.DISPATCHED
    assert caplog.messages == [
        f"Cannot spool job 'parcels.send' (job id {handle.job_id!r}): its arguments do not pickle "
        "(TypeError); it waits in memory only."
    ]
    assert queue.spool.count() == 0
    queue.spool.close()


def test_the_spool_option_is_checked_where_it_is_given(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError,
        match=r"^TaskiqDispatcher\(spool=\.\.\.\) takes the path of a directory, or None \(no spool\), not 1$",
    ):
        TaskiqDispatcher(spool=1)  # type: ignore[arg-type]
    missing = tmp_path / "missing"
    with pytest.raises(
        ValueError,
        match=rf"^CeleryDispatcher\(spool=\.\.\.\) must be an existing directory, not {re.escape(repr(str(missing)))}: "
        r"create it first, on a disk that outlives the process \(not a tmpfs if the spool must survive a reboot\)\.$",
    ):
        CeleryDispatcher(spool=missing)
    dispatcher = TaskiqDispatcher(spool=tmp_path)
    assert repr(dispatcher) == f"<TaskiqDispatcher spool={str(tmp_path)!r}>"
    assert dispatcher.spool is not None
    dispatcher.spool.close()
    assert TaskiqDispatcher().spool is None


async def test_a_job_its_broker_refuses_for_good_fails_at_once_and_leaves_nothing_in_the_spool(
    spool_dir: Path,
) -> None:
    queue = queue_in(spool_dir)
    assert queue.spool is not None
    broker = Broker(down=False)
    async with anyio.create_task_group() as tg:
        [handle] = enqueue(tg, Parcel(broker), 1)
        broker.refuse.add(handle.job_id)  # before its first attempt: the task starts at the next checkpoint

    assert handle.status is TaskStatus.FAILED
    assert isinstance(handle.exception, DispatchError)
    assert str(handle.exception) == (
        f"Could not dispatch 'parcels.send' (job id {handle.job_id!r}, phase immediate) to parcelq: ValueError."
    )
    assert (broker.attempts, queue.spool.count()) == (1, 0)
    queue.spool.close()


async def test_a_dispatch_cancelled_during_its_attempt_says_the_job_may_have_been_sent(
    spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = queue_in(spool_dir)
    assert queue.spool is not None
    in_attempt = anyio.Event()

    class Hanging(Broker):
        async def take(self, job_id: str) -> str:
            in_attempt.set()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")  # pragma: no cover

    async with anyio.create_task_group() as tg:
        [handle] = enqueue(tg, Parcel(Hanging(down=False)), 1)
        with anyio.fail_after(TIMEOUT):
            await in_attempt.wait()
        handle.cancel()
        await ended(handle)

    message = (
        f"Could not dispatch 'parcels.send' (job id {handle.job_id!r}, phase immediate) to parcelq: cancelled "
        "(shutdown, or Task.cancel()) during attempt 1; outcome unknown: an attempt that got no answer may have "
        "reached the queue."
    )
    assert handle.status is TaskStatus.CANCELLED
    assert isinstance(handle.exception, DispatchError)
    assert (str(handle.exception), handle.exception.timed_out) == (message, True)
    assert message in caplog.messages
    assert queue.spool.count() == 0  # never written: it was cancelled before it waited for the broker
    queue.spool.close()


async def test_a_spool_whose_file_fails_keeps_the_job_in_memory_only(
    spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = open_spool(spool_dir, "SpooledQueue")
    assert spool is not None
    assert repr(spool) == f"<Spool {str(spool_dir)!r}>"
    with contextlib.closing(sqlite3.connect(spool.path)) as other:  # the file is damaged under it (or replaced)
        other.execute("DROP TABLE jobs")
        other.commit()

    assert await spool.keep("p-lost", "parcels.send", (1,), {}) is False
    assert caplog.messages == [
        f"Cannot spool job 'parcels.send' (job id 'p-lost'): OperationalError in {spool.path}; it waits in memory only."
    ]
    spool.close()


async def test_a_job_no_queue_knows_is_warned_about_once_however_many_drains_find_it(
    spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = open_spool(spool_dir, "SpooledQueue")
    assert spool is not None
    assert await spool.keep("p-unknown", "parcels.gone", (1,), {})
    spool.release("p-unknown")  # its dispatch gave up: the row is the drain's

    async def send(job_name: str, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise UnknownJobError(job_name)

    assert [await spool.drain(send), await spool.drain(send)] == [0, 0]
    assert caplog.messages == [
        f"The spool keeps job 'parcels.gone' (job id 'p-unknown'), which no queue of this process knows: it stays "
        f"in {spool.path}."
    ]
    assert spool.count() == 1
    spool.close()


async def test_a_drain_called_while_another_drains_returns_at_once(spool_dir: Path) -> None:
    spool = open_spool(spool_dir, "SpooledQueue")
    assert spool is not None
    assert await spool.keep("p-1", "parcels.send", (1,), {})
    spool.release("p-1")
    sending, release = anyio.Event(), anyio.Event()
    sent: list[str] = []
    results: list[int] = []

    async def send(job_name: str, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sending.set()
        await release.wait()
        sent.append(job_id)

    async def first_drain() -> None:
        results.append(await spool.drain(send))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first_drain)
            await sending.wait()
            assert await spool.drain(send) == 0  # the other one sends what it finds
            release.set()

    assert (results, sent, spool.count()) == ([1], ["p-1"], 0)
    spool.close()


def test_the_adapters_say_what_they_were_built_with(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^TaskiqDispatcher\(max_waiting=\.\.\.\) must be a positive int, not 0$"):
        TaskiqDispatcher(max_waiting=0)
    dispatcher = CeleryDispatcher(spool=tmp_path)
    assert dispatcher.spool is not None
    assert repr(dispatcher) == f"<CeleryDispatcher spool={str(tmp_path)!r}>"
    dispatcher.spool.close()
