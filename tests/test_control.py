"""Controlling the recorder: faults that fire n times or on a condition, holding and choosing tasks, captures, waits."""

from __future__ import annotations

import re
from typing import Any, Literal

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.testclient import TestClient
from taskiq import InMemoryBroker, TaskiqDepends

from fastapi_tasks import Phase, Task, Tasks, TasksScheduler, TaskStatus, add_tasks
from fastapi_tasks.errors import FastAPITasksError
from fastapi_tasks_testing import CapturedRecords, Fault, RecordingScheduler, TaskRecord

Backend = Literal["asyncio", "trio"]

CHARGED: list[int] = []


def charge(order_id: int) -> str:
    CHARGED.append(order_id)
    return f"charged {order_id}"


def audit(event: str) -> None:
    pass


def retry_charge(task: Task[..., Any], exc: BaseException) -> None:
    # An on_error handler that schedules the task again, as an app with retries does.
    RETRIES.append(task)


RETRIES: list[Task[..., Any]] = []


@pytest.fixture(autouse=True)
def _fresh() -> None:
    CHARGED.clear()
    RETRIES.clear()


# --- faults: times, where, counting -----------------------------------------------------------------


def test_a_fault_that_fires_once_lets_the_retry_succeed() -> None:
    recorder = RecordingScheduler(expect_failures=True)
    fault = recorder.fail(charge, ConnectionError("card network down"), times=1)

    first = recorder.task(on_error=retry_charge).schedule(charge, 7)
    recorder.run_pending_sync()
    retry = recorder.schedule(charge, *RETRIES[0].args)
    recorder.run_pending_sync()

    assert (first.status, retry.status) == (TaskStatus.FAILED, TaskStatus.SUCCEEDED)
    assert CHARGED == [7]
    assert fault.records == [first]
    assert fault.used == 1
    assert repr(fault) == "<Fault fail(charge, ConnectionError('card network down'), times=1): applied 1 of 1>"


def test_a_fault_fires_n_times_then_no_more() -> None:
    recorder = RecordingScheduler()
    fault = recorder.fail("charge", KeyError, times=2)
    for order_id in (1, 2, 3):
        recorder.schedule(charge, order_id)
    recorder.run_pending_sync()

    assert [record.status.value for record in recorder.records] == ["failed", "failed", "succeeded"]
    assert [type(record.exception) for record in recorder.records[:2]] == [KeyError, KeyError]
    assert recorder.records[0].exception is not recorder.records[1].exception  # a class: a new exception each time
    assert fault.used == 2
    assert repr(fault) == "<Fault fail('charge', <class 'KeyError'>, times=2): applied 2 of 2>"


def test_a_fault_on_a_condition() -> None:
    recorder = RecordingScheduler()

    def big_order(record: TaskRecord) -> bool:
        return bool(record.args[0] > 100)

    fault = recorder.fail(charge, ValueError("amount too large"), where=big_order)
    recorder.schedule(charge, 5)
    recorder.schedule(charge, 500)
    recorder.run_pending_sync()

    assert [record.status.value for record in recorder.records] == ["succeeded", "failed"]
    assert fault.records == [recorder.records[1]]
    assert repr(fault) == "<Fault fail(charge, ValueError('amount too large'), where=big_order): applied 1 every time>"


def test_a_replacement_n_times_or_on_a_condition() -> None:
    recorder = RecordingScheduler()
    once = recorder.replace(charge, lambda order_id: "fake", times=1)
    odd = recorder.replace(charge, lambda order_id: "odd", where=lambda record: record.args[0] % 2)
    for order_id in (1, 2, 3, 4):
        recorder.schedule(charge, order_id)
    recorder.run_pending_sync()

    # The fault added last is asked first; a spent one steps aside.
    assert [record.result for record in recorder.records] == ["odd", "fake", "odd", "charged 4"]
    assert (once.used, odd.used) == (1, 2)
    assert CHARGED == [4]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            lambda r: r.fail(charge, KeyError, times=0),
            (ValueError, r"^fail\(\) takes times=None \(every run\) or a number of runs from 1, not 0$"),
        ),
        (
            lambda r: r.fail(charge, KeyError, times=True),
            (ValueError, r"^fail\(\) takes times=None \(every run\) or a number of runs from 1, not True$"),
        ),
        (
            lambda r: r.replace(charge, print, where=3),
            (TypeError, r"^replace\(\) takes where= as a function of the record, not 3$"),
        ),
        (lambda r: r.fail(42, KeyError), (TypeError, r"^fail\(\) takes a task as its function or its name, not 42$")),
        (
            lambda r: r.fail(charge, KeyError, optional="yes"),
            (TypeError, r"^fail\(\) takes optional=True or False, not 'yes'$"),
        ),
        (
            lambda r: r.fail(charge, "boom"),
            (TypeError, r"^fail\(\) needs an exception instance or class to raise, not 'boom'$"),
        ),
        (
            lambda r: r.replace(charge, "fake"),
            (TypeError, r"^replace\(\) needs a callable to run instead, not 'fake'$"),
        ),
    ],
    ids=["times=0", "times=True", "where=3", "task=42", "optional='yes'", "exc='boom'", "fake='fake'"],
)
def test_bad_faults_are_refused(call: Any, error: tuple[type[Exception], str]) -> None:
    with pytest.raises(error[0], match=error[1]):
        call(RecordingScheduler())


# --- holding tasks in run mode ---------------------------------------------------------------------


def checkout_app() -> FastAPI:
    app = FastAPI()
    add_tasks(app)

    @app.post("/orders/{order_id}")
    async def checkout(order_id: int, tasks: Tasks) -> None:
        tasks.schedule(audit, "checkout")
        tasks.after_response.schedule(charge, order_id)

    return app


def test_a_held_task_stays_pending_until_run_by_hand() -> None:
    app = checkout_app()
    recorder = RecordingScheduler()
    recorder.install(app)
    recorder.hold(charge)

    TestClient(app).post("/orders/7")

    recorder.assert_succeeded(audit)
    held = recorder.assert_scheduled(charge, 7)
    assert held.status is TaskStatus.PENDING
    assert CHARGED == []
    assert recorder.run_pending_sync() == [held]
    assert CHARGED == [7]


def test_hold_refuses_spy_mode_and_bad_tasks() -> None:
    with pytest.raises(
        FastAPITasksError,
        match=r"^hold\(\) cannot keep tasks pending in spy mode: the app's real scheduler runs them\. "
        r"Use run mode \(the default\) or record mode to hold tasks\.$",
    ):
        RecordingScheduler(mode="spy").hold(charge)
    with pytest.raises(TypeError, match=r"^hold\(\) takes a task as its function or its name, not None$"):
        RecordingScheduler().hold(None)  # type: ignore[arg-type]


def test_a_held_task_does_not_run_in_record_mode_even_when_allowed() -> None:
    app = checkout_app()
    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    recorder.allow(charge, audit)
    recorder.hold("charge")

    TestClient(app).post("/orders/7")

    assert [record.status.value for record in recorder.records] == ["succeeded", "pending"]


# --- run_pending: only, exclude, limit --------------------------------------------------------------


def pending_recorder() -> RecordingScheduler:
    recorder = RecordingScheduler()
    recorder.after_response.schedule(charge, 1)
    recorder.schedule(audit, "a")
    recorder.after_route.schedule(charge, 2)
    recorder.after_response.task(name="late audit").schedule(audit, "b")
    return recorder


def test_run_pending_only_some_tasks() -> None:
    recorder = pending_recorder()

    ran = recorder.run_pending_sync(only=charge)

    assert [(record.seq, record.name) for record in ran] == [(3, "charge"), (1, "charge")]
    assert [record.status.value for record in recorder.records] == ["succeeded", "pending", "succeeded", "pending"]


@pytest.mark.anyio
async def test_run_pending_excludes_and_limits(anyio_backend: Backend) -> None:
    recorder = pending_recorder()

    assert [record.seq for record in await recorder.run_pending(exclude=[charge, "late audit"])] == [2]
    assert [record.seq for record in await recorder.run_pending(limit=1)] == [3]
    assert [record.seq for record in await recorder.run_pending(only=("late audit", charge), limit=5)] == [1, 4]
    assert await recorder.run_pending() == []


@pytest.mark.anyio
async def test_run_pending_refuses_bad_choices(anyio_backend: Backend) -> None:
    recorder = pending_recorder()
    with pytest.raises(ValueError, match=r"^limit must be a number of tasks from 1, or None for no limit, not 0$"):
        await recorder.run_pending(limit=0)
    with pytest.raises(
        TypeError, match=r"^run_pending\(only=\.\.\.\) takes a task as its function or its name, not 3$"
    ):
        await recorder.run_pending(only=[charge, 3])  # type: ignore[list-item]
    assert recorder.filter(status="pending") == recorder.records


# --- capture() ------------------------------------------------------------------------------------


def test_capture_sees_only_the_records_of_its_block() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(audit, "before")
    with recorder.capture() as new:
        assert repr(new) == "<CapturedRecords open: 0 records>"
        recorder.schedule(charge, 1)
        recorder.schedule(audit, "inside")
        assert len(new.records) == 2
    recorder.schedule(audit, "after")

    assert isinstance(new, CapturedRecords)
    assert repr(new) == "<CapturedRecords closed: 2 records>"
    assert [record.seq for record in new.records] == [2, 3]
    new.assert_scheduled_once(audit)
    new.assert_scheduled(charge, 1)
    new.assert_not_scheduled(audit, "before")
    new.assert_timeline(charge, audit)
    with pytest.raises(AssertionError) as excinfo:
        new.assert_scheduled(audit, "after")
    assert str(excinfo.value) == (
        "Expected audit('after') to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #3 immediate audit('inside')\n"
        "    event: expected 'after', got 'inside'\n"
        "\n"
        "Recorded tasks (this view: the capture() block):\n"
        "#  phase      task             status   request\n"
        "2  immediate  charge(1)        pending  -\n"
        "3  immediate  audit('inside')  pending  -\n"
        "\n"
        "Other recorded tasks:\n"
        "#  phase      task             status   request\n"
        "1  immediate  audit('before')  pending  -\n"
        "4  immediate  audit('after')   pending  -"
    )


def test_capture_after_clear_and_around_requests() -> None:
    app = checkout_app()
    recorder = RecordingScheduler()
    recorder.install(app)
    client = TestClient(app)
    client.post("/orders/1")
    recorder.clear()

    with recorder.capture() as second:
        client.post("/orders/2")

    second.assert_succeeded(charge, 2)
    second.assert_nothing_dispatched()
    assert [str(record.request) for record in second.records] == ["POST /orders/2", "POST /orders/2"]


# --- waiting: wait_for, drain_sync ------------------------------------------------------------------


RELEASE: list[anyio.Event] = []


async def slow_report(name: str) -> str:
    await RELEASE[0].wait()
    return name


def spy_app() -> FastAPI:
    app = FastAPI()
    add_tasks(app)

    @app.post("/report")
    async def report(tasks: Tasks) -> None:
        tasks.after_response.schedule(slow_report, "monthly")
        tasks.after_response.schedule(audit, "report")

    return app


@pytest.mark.anyio
async def test_wait_for_a_task_to_start_and_to_end_in_spy_mode(anyio_backend: Backend) -> None:
    RELEASE[:] = [anyio.Event()]
    app = spy_app()
    recorder = RecordingScheduler(mode="spy")
    recorder.install(app)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.post("/report")
        started = await recorder.wait_for("slow_report", status="running")
        assert started.status is TaskStatus.RUNNING
        assert (await recorder.wait_for(audit, status=TaskStatus.PENDING)).seq == 2
        with pytest.raises(AssertionError) as excinfo:
            await recorder.wait_for("slow_report", timeout=0.01)
        assert str(excinfo.value).startswith(
            "wait_for() timed out after 0.01 s: no 'slow_report' has ended.\n\nRecorded tasks:\n"
        )
        RELEASE[0].set()
        ended = await recorder.wait_for("slow_report", where=lambda record: record.args == ("monthly",))
        assert ended is started
        assert ended.result == "monthly"
        await recorder.drain()


@pytest.mark.anyio
async def test_wait_for_a_status_that_never_comes(anyio_backend: Backend) -> None:
    recorder = RecordingScheduler()
    recorder.schedule(audit, "x")
    recorder.schedule(charge, 1)
    await recorder.run_pending()

    assert (await recorder.wait_for(audit, status="succeeded")).seq == 1
    with pytest.raises(AssertionError) as excinfo:
        await recorder.wait_for(audit, status="failed", timeout=0.01)
    assert str(excinfo.value) == (
        "wait_for() timed out after 0.01 s: no audit has failed.\n\n"
        "Recorded tasks:\n"
        "#  phase      task        status     request\n"
        "1  immediate  audit('x')  succeeded  -\n"
        "2  immediate  charge(1)   succeeded  -"
    )
    with pytest.raises(ValueError, match=r"^Unknown status 'done'; "):
        await recorder.wait_for(audit, status="done")
    with pytest.raises(TypeError, match=r"^where must be a function taking a record, not 1$"):
        await recorder.wait_for(audit, where=1)  # type: ignore[arg-type]


async def wait_at_gate() -> None:
    await RELEASE[0].wait()


def test_wait_for_sync_and_drain_sync_with_test_client() -> None:
    app = FastAPI()
    add_tasks(app)

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.after_response.schedule(wait_at_gate)

    recorder = RecordingScheduler(mode="spy")
    recorder.install(app)
    with TestClient(app) as client:
        # Made in the client's event loop: anyio before 4.14 makes no Event outside one.
        RELEASE[:] = [client.portal.call(anyio.Event)]
        client.post("/")
        record = recorder.wait_for_sync(wait_at_gate, status="running")
        with pytest.raises(AssertionError) as excinfo:
            recorder.drain_sync(timeout=0.01)
        assert str(excinfo.value) == (
            "drain() timed out after 0.01 s; still running:\n"
            "- #1 after_response wait_at_gate\n"
            "\n"
            "Recorded tasks:\n"
            "#  phase           task            status   request\n"
            "1  after_response  wait_at_gate()  running  POST /"
        )
        with pytest.raises(
            AssertionError, match=r"^wait_for\(\) timed out after 0\.01 s: no wait_at_gate has succeeded\.\n"
        ):
            recorder.wait_for_sync(wait_at_gate, status="succeeded", timeout=0.01)
        assert client.portal is not None
        client.portal.call(RELEASE[0].set)
        recorder.drain_sync()
        assert record.status is TaskStatus.SUCCEEDED
        assert recorder.wait_for_sync(wait_at_gate) is record


@pytest.mark.anyio
async def test_the_sync_waits_refuse_an_event_loop(anyio_backend: Backend) -> None:
    recorder = RecordingScheduler()
    with pytest.raises(
        RuntimeError,
        match=r"^drain_sync\(\) was called inside an event loop; in an async test use `await drain\(\)` instead\.$",
    ):
        recorder.drain_sync()
    with pytest.raises(RuntimeError, match=r"^wait_for_sync\(\) was called inside an event loop; "):
        recorder.wait_for_sync(audit)


# --- strict mode, as the recorder keeps it ------------------------------------------------------------


def test_assertions_mark_what_they_matched_and_ignore_exempts() -> None:
    recorder = RecordingScheduler(strict=True)
    recorder.schedule(audit, "a")
    recorder.schedule(charge, 1)
    recorder.schedule(charge, 2)
    recorder.after_route.schedule(audit, "b")
    recorder.run_pending_sync()

    assert recorder._unasserted() == recorder.records
    recorder.assert_scheduled(charge, 1)
    recorder.assert_not_scheduled(charge, 3)  # a negative assertion matches nothing
    assert [record.seq for record in recorder._unasserted()] == [1, 3, 4]
    recorder.assert_succeeded(charge, 2, phase=Phase.IMMEDIATE)
    recorder.ignore(audit)
    assert recorder._unasserted() == []
    with pytest.raises(TypeError, match=r"^strict must be True or False, not 1$"):
        RecordingScheduler(strict=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^ignore\(\) takes a task as its function or its name, not 1$"):
        recorder.ignore(1)  # type: ignore[arg-type]


def test_every_assertion_that_matches_marks_its_records() -> None:
    recorder = RecordingScheduler(strict=True, expect_failures=True)
    recorder.schedule(audit, "a")
    recorder.schedule(charge, 1)
    recorder.task(name="boom").schedule(audit, "b")
    recorder.fail("boom", KeyError)
    recorder.run_pending_sync()

    recorder.assert_order(audit, charge)
    assert [record.seq for record in recorder._unasserted()] == [3]
    recorder.assert_failed("boom", KeyError)
    assert recorder._unasserted() == []
    fresh = RecordingScheduler(strict=True)
    fresh.schedule(audit, "x")
    fresh.assert_timeline(audit)
    assert fresh._unasserted() == []
    assert re.fullmatch(r"<Fault fail\('boom', <class 'KeyError'>\): applied 1 every time>", repr(recorder._faults[0]))
    assert isinstance(recorder._faults[0], Fault)


# --- dispatches: faults, draining -------------------------------------------------------------------

broker = InMemoryBroker()
SHIPPED: list[int] = []


def worker_tasks() -> TasksScheduler:
    raise NotImplementedError("a worker provides it")


@broker.task
async def ship(order_id: int, tasks: TasksScheduler = TaskiqDepends(worker_tasks)) -> str:  # noqa: B008
    if order_id < 0:
        raise ValueError(f"bad order {order_id}")
    if order_id > 0:
        tasks.enqueue(ship, order_id - 1)  # the next one, until 0
    SHIPPED.append(order_id)
    return f"shipped {order_id}"


@broker.task
async def loop_forever(tasks: TasksScheduler = TaskiqDepends(worker_tasks)) -> None:  # noqa: B008
    tasks.enqueue(loop_forever)


SHIP = re.escape(ship.task_name)


@pytest.fixture
def dispatcher() -> RecordingScheduler:
    recorder = RecordingScheduler()
    broker.dependency_overrides[worker_tasks] = lambda: recorder
    SHIPPED.clear()
    return recorder


def test_dispatch_faults_fire_n_times_or_on_a_condition(dispatcher: RecordingScheduler) -> None:
    # Refusals that no retry fixes: an unreachable broker would be retried (tests/test_dispatch_recorder_outage.py).
    once = dispatcher.fail_dispatch(ship, ValueError, times=1)
    big = dispatcher.fail_dispatch(ship.task_name, RuntimeError, where=lambda record: record.args[0] > 5)
    for order_id in (1, 2, 9):
        dispatcher.enqueue(ship, order_id)
    dispatcher.run_pending_sync()

    assert [record.status.value for record in dispatcher.dispatches] == ["failed", "dispatched", "failed"]
    assert (once.records, big.records) == ([dispatcher.dispatches[0]], [dispatcher.dispatches[2]])
    dispatcher.assert_dispatched(ship, 2)
    dispatcher.assert_dispatched(ship, order_id=2, times=1)
    with pytest.raises(
        TypeError,
        match=rf"^assert_dispatched\(\) expects {SHIP}\(1, 2\), which cannot be a call of "
        rf"{SHIP}\(order_id\): too many positional arguments\. Fix the expected arguments\.$",
    ):
        dispatcher.assert_dispatched(ship, 1, 2)
    with pytest.raises(AssertionError, match=rf"^Expected {SHIP}\(1\) to be dispatched, but: #1 failed "):
        dispatcher.assert_dispatched(ship, 1)
    with pytest.raises(
        AssertionError,
        match=rf"^Expected {SHIP} to be dispatched 2 times, but 1 was:\n- #2 immediate ",
    ):
        dispatcher.assert_dispatched(ship, times=2)


def test_run_dispatched_follows_the_jobs_the_jobs_dispatch(dispatcher: RecordingScheduler) -> None:
    dispatcher.enqueue(ship, 2)
    dispatcher.enqueue(ship, -1)
    dispatcher.run_pending_sync()

    ran = dispatcher.run_dispatched_sync(collect_errors=True, follow=True)

    assert [record.args for record in ran] == [(2,), (-1,), (1,), (0,)]
    assert ran.failed == [dispatcher.dispatches[1]]
    assert ran.succeeded == [dispatcher.dispatches[0], dispatcher.dispatches[2], dispatcher.dispatches[3]]
    assert SHIPPED == [2, 1, 0]
    name = ship.task_name
    assert ran.summary() == (
        f"- #1 {name}(2): returned 'shipped 2'\n"
        f"- #2 {name}(-1): raised ValueError: bad order -1\n"
        f"- #3 {name}(1): returned 'shipped 1'\n"
        f"- #4 {name}(0): returned 'shipped 0'"
    )
    assert dispatcher.run_dispatched_sync(follow=True).summary() == "(no job was run)"


def test_run_dispatched_without_follow_leaves_what_the_jobs_dispatch(dispatcher: RecordingScheduler) -> None:
    dispatcher.enqueue(ship, 1)
    dispatcher.run_pending_sync()

    [ran] = dispatcher.run_dispatched_sync()

    assert ran.job_result == "shipped 1"
    assert [record.status.value for record in dispatcher.dispatches] == ["dispatched", "pending"]
    with pytest.raises(TypeError, match=r"^run_dispatched\(\) takes collect_errors= and follow= as True or False$"):
        dispatcher.run_dispatched_sync(follow=1)  # type: ignore[arg-type]


def test_run_dispatched_gives_up_on_a_job_that_dispatches_itself_for_ever(dispatcher: RecordingScheduler) -> None:
    dispatcher.enqueue(loop_forever)
    dispatcher.run_pending_sync()

    with pytest.raises(
        RuntimeError,
        match=r"^run_dispatched\(follow=True\) gave up after 1,000 passes: the jobs it runs keep dispatching more\. ",
    ):
        dispatcher.run_dispatched_sync(follow=True)


def test_a_job_error_propagates_by_default(dispatcher: RecordingScheduler) -> None:
    dispatcher.enqueue(ship, -2)
    dispatcher.run_pending_sync()

    with pytest.raises(ValueError, match=r"^bad order -2$"):
        dispatcher.run_dispatched_sync()
    assert dispatcher.dispatches[0].job_exception is None
