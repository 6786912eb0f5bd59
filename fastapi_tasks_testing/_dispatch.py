"""Recording `enqueue()`: dispatch records, their queries and assertions, and running dispatched jobs.

A dispatch is recorded in the same timeline as the tasks (its `kind` is "dispatch"). By default
nothing is sent to a broker and no job body runs: the dispatch only checks that the arguments
survive the queue's serializer, as they must in production. `run_dispatched()` then runs the
jobs in the test's process as their workers would, and "spy" mode sends to the real broker.
Nothing here imports a queue library: the job's own adapter is used, found as production finds it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio

from fastapi_tasks import Phase, TaskConfig, TaskStatus
from fastapi_tasks._dispatch import DispatchTask, dispatch_error, find_dispatcher, prepare_dispatch

from ._assertions import RecordQueries, TaskSpec, _phase, matches_task, task_label
from ._records import RequestInfo, TaskRecord
from ._timeline import format_call, outcome

if TYPE_CHECKING:
    from ._recorder import Mode

__all__ = ["DispatchQueries", "DispatchRecord", "DispatchRecorder"]


class DispatchRecord(TaskRecord, DispatchTask):
    """One `enqueue()` as the recorder saw it; also the dispatch's handle.

    Besides a `TaskRecord`'s attributes it has `job`, `job_name`, `job_id` and `backend`; its
    `args` and `kwargs` are the arguments after a round trip through the queue's serializer, as
    a worker receives them. Its status is pending, then dispatched (or failed with a
    `DispatchError`, discarded, cancelled). After `run_dispatched()`, `job_ran` is true and
    `job_result` holds what the job returned.
    """

    __slots__ = ("_original", "_send_error", "job_ran", "job_result")

    _original: tuple[tuple[Any, ...], dict[str, Any]]
    _send_error: Exception | None
    job_ran: bool
    job_result: Any

    def __repr__(self) -> str:
        return (
            f"<DispatchRecord #{self.seq} {self.phase.value} {self.name!r} job_id={self.job_id!r} {self.status.value}>"
        )

    @property
    def kind(self) -> str:
        """What was recorded: "dispatch"."""
        return "dispatch"

    def _target(self) -> Callable[..., Any]:
        return self._record_send

    async def _record_send(self, *args: Any, **kwargs: Any) -> Any:
        recorder: DispatchRecorder = self._recorder
        if self._send_error is not None:
            raise dispatch_error(self, self._send_error) from self._send_error
        fault = recorder._dispatch_fault_for(self)
        if fault is not None:
            # A failure the test injected is expected: teardown does not report it.
            self.handled = True
            raise dispatch_error(self, fault) from fault
        if recorder.mode == "spy":
            original_args, original_kwargs = self._original
            return await DispatchTask._send(self, *original_args, **original_kwargs)
        return None


class DispatchQueries(RecordQueries):
    """Queries and assertions over recorded dispatches; the recorder and its per-request views share them."""

    @property
    def dispatches(self) -> list[DispatchRecord]:
        """The recorded dispatches in scope, in enqueueing order."""
        return [record for record in self.records if isinstance(record, DispatchRecord)]

    def assert_dispatched(
        self, job: TaskSpec, /, *args: Any, phase: Phase | str | None = None, **kwargs: Any
    ) -> DispatchRecord:
        """Assert that `job` was handed to its queue (with these arguments, in this phase, when given).

        Arguments compare with `==` against the arguments after the serializer's round trip
        (`unittest.mock.ANY` works); without arguments any call matches.

        Returns:
            The first matching record; its `job_id` is the id the job was enqueued with.
        """
        __tracebackhide__ = True
        wanted = _phase(phase)
        found = [record for record in self._matching(job, wanted, args, kwargs) if isinstance(record, DispatchRecord)]
        for record in found:
            if record.status is TaskStatus.DISPATCHED:
                return record
        expected = _expected_job(job, wanted, args, kwargs)
        if found:
            seen = ", ".join(f"#{record.seq} {outcome(record)}" for record in found)
            self._fail(f"Expected {expected} to be dispatched, but: {seen}.")
        self._fail(
            f"Expected {expected} to be dispatched, but no dispatch matches." + self._closest(job, wanted, args, kwargs)
        )

    def assert_not_dispatched(self, job: TaskSpec, /, *, phase: Phase | str | None = None) -> None:
        """Assert that no enqueueing of `job` (in `phase`, when given) reached its queue.

        Dispatches that were discarded, failed, cancelled or are still pending were not sent.
        """
        __tracebackhide__ = True
        wanted = _phase(phase)
        sent = [
            record
            for record in self.filter(job, phase=wanted, status=TaskStatus.DISPATCHED)
            if isinstance(record, DispatchRecord)
        ]
        if sent:
            numbers = ", ".join(f"#{record.seq}" for record in sent)
            self._fail(f"Expected {_expected_job(job, wanted, (), {})} not to be dispatched, but it was: {numbers}.")


class DispatchRecorder(DispatchQueries):
    """What `RecordingScheduler` adds for `enqueue()`: recording, fault injection, running the jobs."""

    mode: Mode
    _records: list[TaskRecord]
    _seq: Iterator[int]
    _dispatch_faults: list[tuple[TaskSpec, BaseException | type[BaseException]]]

    def fail_dispatch(self, job: TaskSpec, exc: BaseException | type[BaseException]) -> None:
        """Make every dispatch of `job` fail as if the broker raised `exc`, so its `on_error` is tested for real.

        The dispatch ends failed with a `DispatchError` chained to `exc`. These failures are
        expected: the plugin does not report them at teardown.
        """
        if not (isinstance(exc, BaseException) or (isinstance(exc, type) and issubclass(exc, BaseException))):
            raise TypeError(f"fail_dispatch() needs an exception instance or class to raise, not {exc!r}")
        self._dispatch_faults.append((job, exc))

    def _dispatch_fault_for(self, record: DispatchRecord) -> BaseException | None:
        for spec, exc in reversed(self._dispatch_faults):
            if matches_task(record, spec):
                return exc() if isinstance(exc, type) else exc
        return None

    def _record_dispatch(
        self,
        job: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        phase: Phase,
        request: RequestInfo | None,
    ) -> DispatchRecord:
        dispatcher, job_name = prepare_dispatch(job)
        _check_job_arguments(job_name, dispatcher.job_signature(job), args, kwargs)
        send_error: Exception | None = None
        try:
            sent_args, sent_kwargs = dispatcher.round_trip(job, args, kwargs)
        except Exception as exc:
            # As in production, arguments the queue cannot send make the dispatch fail, not the endpoint.
            send_error, sent_args, sent_kwargs = exc, args, kwargs
        record = DispatchRecord(self, job, sent_args, sent_kwargs, config, phase, request, next(self._seq))  # type: ignore[arg-type]
        record._bind(dispatcher, dispatcher.new_job_id(job), job_name)
        record._original = (args, kwargs)
        record._send_error = send_error
        record.job_ran = False
        record.job_result = None
        self._records.append(record)
        return record

    async def run_dispatched(self, job: TaskSpec | None = None) -> list[DispatchRecord]:
        """Run the dispatched jobs (of `job`, when given) here, once each, as their queues' workers would.

        They run one at a time in the order they were dispatched, with the arguments a worker
        receives, under their record's `job_id`, through their queue's adapter: a taskiq job's
        dependencies are resolved (its `Context` carries the job id), a Celery job runs with
        `apply()` (a bound task's `self.request.id` is the job id). No broker is contacted.
        Whatever a job raises propagates.

        Returns:
            The records whose jobs were run; each one's `job_result` is what its job returned.
        """
        todo = sorted(
            (
                record
                for record in self.dispatches
                if record.status is TaskStatus.DISPATCHED
                and not record.job_ran
                and (job is None or matches_task(record, job))
            ),
            key=lambda record: (record.order or 0, record.seq),
        )
        for record in todo:
            record.job_ran = True
            record.job_result = await record.dispatcher.run_as_worker(
                record.job, record.job_id, record.args, record.kwargs
            )
        return todo

    def run_dispatched_sync(self, job: TaskSpec | None = None) -> list[DispatchRecord]:
        """`run_dispatched()` for a sync test: runs the jobs in an event loop of their own."""
        try:
            anyio.get_current_task()
        except anyio.NoEventLoopError:
            return anyio.run(lambda: self.run_dispatched(job))
        raise RuntimeError(
            "run_dispatched_sync() was called inside an event loop; "
            "in an async test use `await run_dispatched()` instead."
        )


def _job_label(job: TaskSpec) -> str:
    if isinstance(job, str):
        return repr(job)
    try:
        dispatcher = find_dispatcher(job)
    except TypeError:
        return task_label(job)
    return dispatcher.job_name(job)


def _expected_job(job: TaskSpec, phase: Phase | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    call = _job_label(job) if not args and not kwargs else format_call(_job_label(job), args, kwargs)
    return call if phase is None else f"{call} in phase {phase.value}"


def _check_job_arguments(
    job_name: str, signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    # In production a job enqueued with the wrong arguments fails later, on a worker; under test
    # it fails where it is enqueued.
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"Cannot enqueue {job_name!r} with these arguments: {exc}.") from None
