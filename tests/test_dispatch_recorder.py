"""Testing `enqueue()` with the recorder: no broker, the same timeline, round-tripped arguments."""

from __future__ import annotations

import datetime as dt
import inspect
import re
import subprocess
import sys
from collections.abc import Generator
from typing import Annotated, Any, Literal, cast

import anyio
import pytest
from celery import Celery
from celery import Task as CeleryTask
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from taskiq import Context, InMemoryBroker, TaskiqDepends
from taskiq_redis import ListQueueBroker

from fastapi_tasks import Phase, Task, Tasks, TaskStatus, add_tasks, register_dispatcher
from fastapi_tasks.errors import DispatchBackendError, DispatchError
from fastapi_tasks_testing import (
    DispatchRecord,
    RecordingScheduler,
    assert_dispatched,
    assert_not_dispatched,
)

Backend = Literal["asyncio", "trio"]

# Nothing listens on this port: the recorder never needs a broker.
broker = ListQueueBroker("redis://127.0.0.1:9/0")
celery_app = Celery("shop", broker="redis://127.0.0.1:9/0", set_as_current=False)

RECEIPTS: list[int] = []


@broker.task
async def send_receipt(order_id: int) -> str:
    RECEIPTS.append(order_id)
    return f"receipt {order_id}"


@broker.task(task_name="shop.ship")
def ship(order_id: int, when: dt.date, items: tuple[str, ...] = ()) -> str:
    return f"ship {order_id} on {when.isoformat()} {list(items)}"


@celery_app.task(name="shop.invoice")  # type: ignore[untyped-decorator]  # Celery ships no types
def invoice(order_id: int, lines: tuple[int, ...]) -> int:
    return order_id + sum(lines)


class CardDeclinedError(Exception):
    pass


def charge(order_id: int) -> None:
    if order_id == 13:
        raise CardDeclinedError(order_id)


def make_app() -> FastAPI:
    app = FastAPI()
    add_tasks(app)

    @app.post("/orders/{order_id}")
    async def place_order(order_id: int, tasks: Tasks) -> dict[str, Any]:
        receipt = tasks.after_response.enqueue(send_receipt, order_id)
        try:
            charge(order_id)
        except CardDeclinedError:
            raise HTTPException(status_code=402, detail="card declined") from None
        return {"order": order_id, "receipt_job": receipt.job_id}

    return app


@pytest.fixture
def app() -> FastAPI:
    RECEIPTS.clear()
    return make_app()


# --- a test as a user writes it -----------------------------------------------------------------


def test_an_order_dispatches_its_receipt_after_the_response(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    client = TestClient(app)

    response = client.post("/orders/42")

    assert response.status_code == 200
    record = tasks_recorder.assert_dispatched(send_receipt, 42, phase="after_response")
    assert response.json() == {"order": 42, "receipt_job": record.job_id}
    assert RECEIPTS == []  # dispatched, not run


def test_a_failed_order_dispatches_nothing(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    client = TestClient(app)

    response = client.post("/orders/13")

    assert response.status_code == 402
    tasks_recorder.assert_not_dispatched(send_receipt)
    tasks_recorder.assert_discarded(send_receipt, 13)


# --- records ---------------------------------------------------------------------------------


def test_dispatches_share_the_timeline_with_tasks(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    client = TestClient(app)
    client.post("/orders/42")
    client.post("/orders/13")

    [sent, discarded] = tasks_recorder.dispatches
    assert isinstance(sent, DispatchRecord)
    assert (sent.kind, sent.job, sent.job_name, sent.backend) == (
        "dispatch",
        send_receipt,
        send_receipt.task_name,
        "taskiq",
    )
    assert (sent.status, discarded.status) == (TaskStatus.DISPATCHED, TaskStatus.DISCARDED)
    assert sent.job_id != discarded.job_id
    name = send_receipt.task_name
    assert tasks_recorder.timeline() == "\n".join(
        [
            f"#  phase           {'task'.ljust(len(f'[dispatch] {name}(42)'))}  status      request",
            f"1  after_response  [dispatch] {name}(42)  dispatched  POST /orders/42",
            f"2  after_response  [dispatch] {name}(13)  discarded   POST /orders/13",
        ]
    )
    assert re.fullmatch(
        rf"<DispatchRecord #1 after_response '{re.escape(name)}' job_id='[0-9a-f]{{32}}' dispatched>", repr(sent)
    )
    assert tasks_recorder.for_request("POST", "/orders/42").dispatches == [sent]
    assert_dispatched(tasks_recorder.for_request("POST", "/orders/42"), send_receipt, 42)
    assert_not_dispatched(tasks_recorder.for_request("POST", "/orders/13"), send_receipt)


def test_arguments_are_recorded_as_the_worker_receives_them() -> None:
    recorder = RecordingScheduler()

    recorder.enqueue(ship, 7, dt.date(2024, 5, 1), items=("a", "b"))
    recorder.enqueue(invoice, 7, (1, 2))

    shipped, invoiced = recorder.records
    # taskiq parses arguments back into their annotated types; Celery's JSON turns tuples into lists.
    assert (shipped.args, shipped.kwargs) == ((7, dt.date(2024, 5, 1)), {"items": ("a", "b")})
    assert (invoiced.args, invoiced.kwargs) == ((7, [1, 2]), {})
    assert (shipped.name, invoiced.name) == ("shop.ship", "shop.invoice")
    assert isinstance(invoiced, DispatchRecord)
    assert invoiced.backend == "celery"
    assert re.fullmatch(r"[0-9a-f-]{36}", invoiced.job_id)


@pytest.mark.tasks_recorder(expect_failures=True)
def test_arguments_the_queue_cannot_send_fail_the_dispatch_as_in_production(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    handled: list[tuple[Task[..., Any], Exception]] = []

    @app.post("/odd")
    async def odd(tasks: Tasks) -> None:
        tasks.task(on_error=lambda task, exc: handled.append((task, exc))).enqueue(send_receipt, object())  # type: ignore[arg-type]

    assert TestClient(app).post("/odd").status_code == 200

    [record] = tasks_recorder.dispatches
    assert record.status is TaskStatus.FAILED
    exc = record.exception
    assert isinstance(exc, DispatchError)
    assert str(exc) == (
        f"Could not dispatch {send_receipt.task_name!r} (job id {record.job_id!r}, phase immediate) "
        "to taskiq: PydanticSerializationError."
    )
    assert type(exc.__cause__).__name__ == "PydanticSerializationError"
    assert handled == [(record, exc)]


def test_enqueueing_with_the_wrong_arguments_fails_at_the_call_site() -> None:
    recorder = RecordingScheduler()
    with pytest.raises(
        TypeError,
        match=rf"^Cannot enqueue {re.escape(repr(send_receipt.task_name))} with these arguments: "
        r"missing a required argument: 'order_id'\.$",
    ):
        recorder.after_response.enqueue(send_receipt)  # type: ignore[call-arg]


# --- modes and helpers ---------------------------------------------------------------------------


@pytest.mark.tasks_recorder(mode="record")
def test_record_mode_leaves_dispatches_pending(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    TestClient(app).post("/orders/42")

    [record] = tasks_recorder.dispatches
    assert [r.status for r in tasks_recorder.dispatches] == [TaskStatus.PENDING]
    with pytest.raises(AssertionError, match=r"^Expected .*send_receipt\(42\) to be dispatched, but: #1 pending\.\n"):
        tasks_recorder.assert_dispatched(send_receipt, 42)

    tasks_recorder.run_pending_sync()

    assert [r.status for r in tasks_recorder.dispatches] == [TaskStatus.DISPATCHED]
    assert tasks_recorder.assert_dispatched(send_receipt, 42) is record


def test_run_dispatched_runs_the_job_bodies_inline_once(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    client = TestClient(app)
    client.post("/orders/42")
    client.post("/orders/13")
    client.post("/orders/7")

    ran = tasks_recorder.run_dispatched_sync()

    assert [record.args for record in ran] == [(42,), (7,)]
    assert [record.job_result for record in ran] == ["receipt 42", "receipt 7"]
    assert RECEIPTS == [42, 7]
    assert tasks_recorder.run_dispatched_sync() == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # taskiq jobs: asyncio only
@pytest.mark.anyio
async def test_run_dispatched_in_an_async_test_runs_sync_and_async_jobs(anyio_backend: Backend) -> None:
    recorder = RecordingScheduler()
    recorder.enqueue(invoice, 1, (2, 3))
    recorder.after_response.enqueue(ship, 2, dt.date(2024, 1, 2))
    await recorder.run_pending()

    assert [record.job_result for record in await recorder.run_dispatched(invoice)] == [6]
    assert [record.job_result for record in await recorder.run_dispatched()] == ["ship 2 on 2024-01-02 []"]
    with pytest.raises(RuntimeError, match=r"^run_dispatched_sync\(\) was called inside an event loop; "):
        recorder.run_dispatched_sync()


# --- run_dispatched: each job as its worker runs it ---------------------------------------------
# Dependencies are written as taskiq's docs write them, defaults that type checkers accept at enqueue().

ORDERS = {42: "ada@example.com"}
ledger_lines: list[str] = []


@broker.task(task_name="shop.label", printer="front")
async def print_label(order_id: int, copies: int = 1, context: Context = TaskiqDepends()) -> dict[str, Any]:  # noqa: B008
    message = context.message
    return {"task_id": message.task_id, "name": message.task_name, "labels": message.labels, "args": message.args}


@broker.task(task_name="shop.label_sync")
def print_label_sync(order_id: int, context: Context = TaskiqDepends()) -> tuple[str, int]:  # noqa: B008
    return context.message.task_id, order_id


def order_of(context: Context = TaskiqDepends()) -> int:  # noqa: B008
    order_id: int = context.message.args[0]
    return order_id


def customer_email(order_id: int = TaskiqDepends(order_of)) -> str:
    return ORDERS[order_id]


def ledger(context: Context = TaskiqDepends()) -> Generator[list[str], None, None]:  # noqa: B008
    ledger_lines.append(f"open {context.message.task_id}")
    try:
        yield ledger_lines
    except Exception as exc:
        ledger_lines.append(f"rolled back on {type(exc).__name__}")
        raise
    ledger_lines.append("committed")


@broker.task(task_name="shop.email")
async def email_receipt(
    order_id: int,
    to: str = TaskiqDepends(customer_email),
    book: list[str] = TaskiqDepends(ledger),  # noqa: B008
) -> str:
    book.append(f"emailed {to}")
    return to


@broker.task(task_name="shop.refund")
async def refund(order_id: int, book: list[str] = TaskiqDepends(ledger)) -> None:  # noqa: B008
    raise CardDeclinedError(order_id)


@pytest.mark.parametrize("job", [print_label, print_label_sync])
def test_run_dispatched_gives_a_taskiq_job_its_context_with_the_job_id(job: Any) -> None:
    recorder = RecordingScheduler()
    recorder.enqueue(job, 42)
    recorder.run_pending_sync()

    [record] = recorder.run_dispatched_sync()

    if job is print_label:
        assert record.job_result == {
            "task_id": record.job_id,
            "name": "shop.label",
            "labels": {"printer": "front"},
            "args": [42],
        }
    else:
        assert record.job_result == (record.job_id, 42)


def test_run_dispatched_resolves_a_taskiq_jobs_own_dependencies() -> None:
    ledger_lines.clear()
    recorder = RecordingScheduler()
    recorder.after_response.enqueue(email_receipt, 42)
    recorder.run_pending_sync()

    [record] = recorder.run_dispatched_sync()

    assert record.job_result == "ada@example.com"
    assert ledger_lines == [f"open {record.job_id}", "emailed ada@example.com", "committed"]


@broker.task(task_name="shop.wrap")
async def wrap(order_id: int, context: Annotated[Context, TaskiqDepends()], *, gift: bool = False) -> str:
    return f"{context.message.task_id}: order {order_id}, gift {gift}"


def test_a_dependency_declared_with_annotated_is_no_argument_of_the_enqueueing() -> None:
    # Only the parameters a caller passes are checked: the worker fills in `context` itself.
    recorder = RecordingScheduler()
    enqueue = cast(Any, recorder.enqueue)  # type checkers, like taskiq's kiq(), want `context` passed
    enqueue(wrap, 42, gift=True)
    refused = r"^Cannot enqueue 'shop\.wrap' with these arguments: {}\.$"
    with pytest.raises(TypeError, match=refused.format("missing a required argument: 'order_id'")):
        enqueue(wrap, gift=True)
    with pytest.raises(TypeError, match=refused.format("too many positional arguments")):
        enqueue(wrap, 42, "a context")
    recorder.run_pending_sync()

    [record] = recorder.run_dispatched_sync()

    assert record.job_result == f"{record.job_id}: order 42, gift True"


def test_run_dispatched_uses_the_brokers_dependency_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(broker.dependency_overrides, customer_email, lambda: "test@example.com")
    recorder = RecordingScheduler()
    recorder.enqueue(email_receipt, 42)
    recorder.run_pending_sync()

    [record] = recorder.run_dispatched_sync()

    assert record.job_result == "test@example.com"


def test_run_dispatched_raises_what_a_taskiq_job_raises_after_its_dependencies_saw_it() -> None:
    ledger_lines.clear()
    recorder = RecordingScheduler()
    job_id = recorder.enqueue(refund, 13).job_id
    recorder.run_pending_sync()

    with pytest.raises(CardDeclinedError, match=r"^13$"):
        recorder.run_dispatched_sync()

    assert ledger_lines == [f"open {job_id}", "rolled back on CardDeclinedError"]
    assert recorder.run_dispatched_sync() == []  # run once, even when it raised


@celery_app.task(bind=True, name="shop.pack")  # type: ignore[untyped-decorator]
def pack(self: CeleryTask, order_id: int, items: tuple[str, ...]) -> dict[str, Any]:
    request = self.request
    return {"id": request.id, "task": request.task, "args": request.args, "items": items}


failures_seen: list[tuple[str, BaseException]] = []


class Audited(CeleryTask):  # type: ignore[misc]  # Celery ships no types
    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        failures_seen.append((task_id, exc))


@celery_app.task(base=Audited, name="shop.capture")  # type: ignore[untyped-decorator]
def capture(order_id: int) -> None:
    charge(order_id)


@pytest.mark.anyio
async def test_run_dispatched_runs_a_bound_celery_task_with_its_request(anyio_backend: Backend) -> None:
    recorder = RecordingScheduler()
    recorder.enqueue(pack, 7, ("cup", "saucer"))
    await recorder.run_pending()

    [record] = await recorder.run_dispatched()

    # As on a worker: the arguments after Celery's JSON round trip, the job id as the request's id.
    assert record.job_result == {
        "id": record.job_id,
        "task": "shop.pack",
        "args": [7, ["cup", "saucer"]],
        "items": ["cup", "saucer"],
    }


def test_run_dispatched_raises_what_a_celery_task_raises_after_its_on_failure() -> None:
    failures_seen.clear()
    recorder = RecordingScheduler()
    job_id = recorder.enqueue(capture, 13).job_id
    recorder.run_pending_sync()

    with pytest.raises(CardDeclinedError, match=r"^13$") as info:
        recorder.run_dispatched_sync()

    assert failures_seen == [(job_id, info.value)]


notify_attempts: list[tuple[str, int]] = []


@celery_app.task(bind=True, name="shop.notify", max_retries=3)  # type: ignore[untyped-decorator]
def notify(self: CeleryTask, order_id: int) -> str:
    notify_attempts.append((self.request.id, self.request.retries))
    if self.request.retries < 2:
        raise self.retry(countdown=60)
    return f"notified {order_id}"


class DeclinedError(Exception):
    def __init__(self, order_id: int, reason: str) -> None:
        super().__init__(f"order {order_id}: {reason}")  # so pickle cannot rebuild it


@celery_app.task(name="shop.authorize")  # type: ignore[untyped-decorator]
def authorize(order_id: int) -> None:
    raise DeclinedError(order_id, "card expired")


def test_run_dispatched_retries_a_celery_task_at_once_under_the_same_id() -> None:
    notify_attempts.clear()
    recorder = RecordingScheduler()
    job_id = recorder.enqueue(notify, 5).job_id
    recorder.run_pending_sync()

    [record] = recorder.run_dispatched_sync()

    assert record.job_result == "notified 5"
    assert notify_attempts == [(job_id, 0), (job_id, 1), (job_id, 2)]


def test_run_dispatched_raises_a_celery_tasks_own_exception_even_one_that_does_not_pickle() -> None:
    recorder = RecordingScheduler()
    recorder.enqueue(authorize, 5)
    recorder.run_pending_sync()

    with pytest.raises(DeclinedError, match=r"^order 5: card expired$"):
        recorder.run_dispatched_sync()


def test_fail_dispatch_makes_the_broker_fail_so_on_error_is_tested(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    handled: list[Exception] = []

    @app.post("/retry")
    async def retry(tasks: Tasks) -> None:
        # An unreachable broker is retried until the deadline: a short one keeps the test short.
        definition = tasks.after_response.task(on_error=lambda task, exc: handled.append(exc), dispatch_deadline=0.1)
        definition.enqueue(send_receipt, 1)

    fault = tasks_recorder.fail_dispatch(send_receipt, ConnectionRefusedError)
    other = tasks_recorder.fail_dispatch(invoice, TimeoutError, optional=True)  # another job: not this one

    assert TestClient(app).post("/retry").status_code == 200

    record = tasks_recorder.assert_failed(send_receipt, DispatchError)
    assert isinstance(record.exception, DispatchError)
    assert isinstance(record.exception.__cause__, ConnectionRefusedError)
    assert handled == [record.exception]
    assert fault.records[0] is record
    assert set(map(id, fault.records)) == {id(record)}  # every attempt, under one job id
    assert other.records == []
    assert_not_dispatched(tasks_recorder, send_receipt)
    with pytest.raises(TypeError, match=r"^fail_dispatch\(\) needs an exception instance or class to raise, not 1$"):
        tasks_recorder.fail_dispatch(send_receipt, 1)  # type: ignore[arg-type]


def test_assertion_failures_show_the_closest_dispatches_and_the_timeline(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/orders/42")
    name = send_receipt.task_name

    with pytest.raises(AssertionError) as info:
        tasks_recorder.assert_dispatched(send_receipt, 41, phase="after_route")
    assert str(info.value) == "\n".join(
        [
            f"Expected {name}(41) in phase after_route to be dispatched, but no dispatch matches.",
            "Closest recorded tasks:",
            f"- #1 after_response {name}(42)",
            "    phase: expected after_route, got after_response",
            "    order_id: expected 41, got 42",
            "",
            "Recorded tasks:",
            tasks_recorder.timeline(),
        ]
    )
    with pytest.raises(
        AssertionError, match=rf"^Expected {re.escape(name)} not to be dispatched, but it was:\n- #1 after_response "
    ):
        tasks_recorder.assert_not_dispatched(send_receipt)


def test_a_pending_dispatch_is_cancelled_at_shutdown_unless_shielded() -> None:
    recorder = RecordingScheduler()
    plain = recorder.after_response.enqueue(send_receipt, 1)
    shielded = recorder.after_response.task(shield=True).enqueue(send_receipt, 2)

    recorder.shutdown_sync()

    assert (plain.status, shielded.status) == (TaskStatus.CANCELLED, TaskStatus.DISPATCHED)


def test_the_recorder_refuses_taskiq_under_trio_as_production_does() -> None:
    recorder = RecordingScheduler()

    async def enqueue() -> None:
        recorder.enqueue(send_receipt, 1)

    with pytest.raises(
        DispatchBackendError, match=r"^Cannot enqueue .* to taskiq: taskiq dispatches only under asyncio"
    ):
        anyio.run(enqueue, backend="trio")


# --- spy mode: the real dispatcher --------------------------------------------------------------

memory_broker = InMemoryBroker()


@memory_broker.task
async def remember(order_id: int) -> int:
    return order_id * 2


@pytest.mark.tasks_recorder(mode="spy")
def test_spy_mode_sends_to_the_real_queue(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    @app.post("/remember")
    async def endpoint(tasks: Tasks) -> dict[str, str]:
        return {"job": tasks.after_response.enqueue(remember, 21).job_id}

    async def main() -> int:
        await memory_broker.startup()
        try:
            record = tasks_recorder.dispatches[0]
            await tasks_recorder.drain()
            assert record.status is TaskStatus.DISPATCHED
            result = await record.result.wait_result(timeout=10)
            return int(result.return_value)
        finally:
            await memory_broker.shutdown()

    with TestClient(app) as client:
        job_id = client.post("/remember").json()["job"]
        # Spy mode: the after_response dispatch runs concurrently, after the response; the TestClient
        # of Starlette 1.7 (the newest on Python 3.10) returns when the app does, before it has run.
        tasks_recorder.drain_sync()
        assert tasks_recorder.assert_dispatched(remember, 21).job_id == job_id
        assert client.portal is not None
        assert client.portal.call(main) == 42


# --- custom queues and imports --------------------------------------------------------------------


class Postcard:
    def __call__(self, to: str) -> None: ...


class PostOffice:
    backend = "post"
    async_libraries = ("asyncio", "trio")

    def accepts(self, job: object) -> bool:
        return isinstance(job, Postcard)

    def job_name(self, job: Postcard) -> str:
        return "postcard"

    def job_signature(self, job: Postcard) -> inspect.Signature | None:
        return inspect.signature(job.__call__)

    def new_job_id(self, job: Postcard) -> str:
        return "stamp-1"

    async def dispatch(self, job: Postcard, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise AssertionError("the recorder sends nothing")

    def round_trip(
        self, job: Postcard, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return tuple(arg.upper() for arg in args), kwargs

    async def run_as_worker(self, job: Postcard, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        job(*args, **kwargs)
        return f"{job_id} posted"


@pytest.mark.anyio
async def test_a_registered_queue_is_recorded_through_its_own_adapter(anyio_backend: Backend) -> None:
    register_dispatcher(PostOffice())
    recorder = RecordingScheduler()
    card = Postcard()

    handle = recorder.after_route.enqueue(card, "ada")
    assert handle.job_id == "stamp-1"
    await recorder.run_pending(phase=Phase.AFTER_ROUTE)

    assert recorder.assert_dispatched(card, "ADA", phase="after_route") is handle
    [ran] = await recorder.run_dispatched()
    assert ran.job_result == "stamp-1 posted"


def test_importing_the_packages_imports_no_queue_library() -> None:
    code = (
        "import sys, fastapi_tasks, fastapi_tasks_testing\n"
        "loaded = sorted(m for m in ('taskiq', 'celery', 'kombu', 'redis') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_assertions_name_jobs_by_their_queue_name_a_plain_function_or_a_string() -> None:
    recorder = RecordingScheduler()

    def plain() -> None: ...

    with pytest.raises(AssertionError, match=r"^Expected 'shop\.ship' to be dispatched, but no dispatch matches\.\n"):
        recorder.assert_dispatched("shop.ship")
    with pytest.raises(AssertionError, match=r"^Expected shop\.invoice\(1\) to be dispatched, but no dispatch matches"):
        recorder.assert_dispatched(invoice, 1)
    with pytest.raises(AssertionError, match=r"^Expected .*plain to be dispatched, but no dispatch matches\.\n"):
        recorder.assert_dispatched(plain)


class Builtin(Postcard):
    pass


class BuiltinOffice(PostOffice):
    def accepts(self, job: object) -> bool:
        return isinstance(job, Builtin)

    def job_signature(self, job: Postcard) -> inspect.Signature | None:
        return None  # like a builtin function's: its arguments cannot be checked in advance


def test_a_job_whose_signature_is_unknown_is_recorded_unchecked() -> None:
    register_dispatcher(BuiltinOffice())
    recorder = RecordingScheduler()

    recorder.enqueue(Builtin(), "thing")

    assert [record.args for record in recorder.dispatches] == [("THING",)]
