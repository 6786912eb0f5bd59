"""Recording `enqueue()`: its queries and assertions, its faults, and running dispatched jobs.

A dispatch is recorded in the same timeline as the tasks (its `kind` is "dispatch"). By default
nothing is sent to a broker and no job body runs: the dispatch only checks that the arguments
survive the queue's serializer, as they must in production. `run_dispatched()` then runs the
jobs in the test's process as their workers would, and "spy" mode sends to the real broker.
Nothing here imports a queue library: the job's own adapter is used, found as production finds it.
The records themselves are in `_dispatch_records.py`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import anyio

from fastapi_tasks import Phase, TaskConfig, TaskStatus
from fastapi_tasks._seam import NoEventLoopError, find_dispatcher, prepare_dispatch

from ._assertions import RecordQueries
from ._dispatch_records import DispatchRecord, JobRuns
from ._engine import run_recorded
from ._explain import bullet, times_text
from ._faults import Fault, check_exception
from ._matching import Expected, Predicate, TaskSpec, matches_task, parse_phase, task_label
from ._mode import Mode
from ._queries import COUNT_OPTIONS, MATCH_OPTIONS, check_times
from ._records import RequestInfo, TaskRecord
from ._timeline import outcome, were

__all__ = ["DispatchQueries", "DispatchRecorder"]

_MAX_PASSES = 1000  # run_dispatched(follow=True): a pass runs the jobs dispatched by the previous one


class DispatchQueries(RecordQueries):
    """Queries and assertions over recorded dispatches; the recorder and its views share them."""

    @property
    def dispatches(self) -> list[DispatchRecord]:
        """The recorded dispatches in scope, in enqueueing order."""
        return [record for record in self.records if isinstance(record, DispatchRecord)]

    def assert_dispatched(
        self,
        job: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        times: int | None = None,
        **kwargs: Any,
    ) -> DispatchRecord:
        """Assert that `job` was handed to its queue (with these arguments, in this phase, ..., when given).

        Arguments are bound to the job's signature and compare with `==` against the arguments
        after the serializer's round trip (`unittest.mock.ANY` works); without arguments any call
        matches. The options are `assert_scheduled()`'s.

        Parameters:
            job: the job, or its name.
            phase: the phase it was enqueued in.
            partial: when true, only the given arguments must match.
            where: a predicate the record must satisfy.
            times: exactly this many dispatches must match (by default, at least one).

        Returns:
            The first matching record; its `job_id` is the id the job was enqueued with.
        """
        __tracebackhide__ = True
        check_times(times, "assert_not_dispatched")
        expected = self._expect(
            "assert_dispatched", job, args, kwargs, COUNT_OPTIONS, times, phase=phase, partial=partial, where=where
        )
        return self._assert_dispatch_count(expected, times)

    def assert_dispatched_once(
        self,
        job: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        **kwargs: Any,
    ) -> DispatchRecord:
        """Assert that exactly one dispatch matches, as `assert_dispatched(..., times=1)` does.

        Returns:
            The matching record.
        """
        __tracebackhide__ = True
        expected = self._expect(
            "assert_dispatched_once", job, args, kwargs, MATCH_OPTIONS, phase=phase, partial=partial, where=where
        )
        return self._assert_dispatch_count(expected, 1)

    def _assert_dispatch_count(self, expected: Expected, times: int | None) -> DispatchRecord:
        __tracebackhide__ = True
        found = [record for record in self.dispatches if expected.matches(record)]
        sent = [record for record in found if record.status is TaskStatus.DISPATCHED]
        if sent and (times is None or len(sent) == times):
            self._mark(sent)
            return sent[0]
        wanted = f"Expected {_job_expected(expected)} to be dispatched"
        if times is not None:
            wanted += f" {times_text(times)}"
        if not found:
            self._fail(
                f"{wanted}, but no dispatch matches." + self._why_none(expected, "dispatch"),
                self._focus(expected, "dispatch"),
            )
        if not sent:
            seen = ", ".join(f"#{record.seq} {outcome(record)}" for record in found)
            self._fail(f"{wanted}, but: {seen}.", found)
        self._fail(f"{wanted}, but {were(len(sent))}:\n" + "\n".join(map(bullet, sent)), found)

    def assert_not_dispatched(
        self,
        job: TaskSpec,
        /,
        *args: Any,
        phase: Phase | str | None = None,
        partial: bool = False,
        where: Predicate | None = None,
        **kwargs: Any,
    ) -> None:
        """Assert that no matching enqueueing of `job` (these arguments, this phase, ..., when given) reached its queue.

        Dispatches that were discarded, failed, cancelled or are still pending were not sent.
        """
        __tracebackhide__ = True
        expected = self._expect(
            "assert_not_dispatched", job, args, kwargs, MATCH_OPTIONS, phase=phase, partial=partial, where=where
        )
        sent = [
            record for record in self.dispatches if record.status is TaskStatus.DISPATCHED and expected.matches(record)
        ]
        if sent:
            listed = "\n".join(map(bullet, sent))
            self._fail(f"Expected {_job_expected(expected)} not to be dispatched, but it was:\n{listed}", sent)

    def assert_nothing_dispatched(self, *, phase: Phase | str | None = None) -> None:
        """Assert that no job at all reached its queue (from `phase`, when given)."""
        __tracebackhide__ = True
        self._require_evidence("assert_nothing_dispatched")
        wanted = parse_phase(phase)
        sent = [
            record
            for record in self.dispatches
            if record.status is TaskStatus.DISPATCHED and (wanted is None or record.phase is wanted)
        ]
        if sent:
            where = "" if wanted is None else f" in phase {wanted.value}"
            listed = "\n".join(map(bullet, sent))
            self._fail(f"Expected nothing to be dispatched{where}, but {were(len(sent))}:\n{listed}", sent)


class DispatchRecorder(DispatchQueries):
    """What `RecordingScheduler` adds for `enqueue()`: recording, fault injection, running the jobs."""

    mode: Mode
    _records: list[TaskRecord]
    _seq: Iterator[int]
    _faults: list[Fault]

    def fail_dispatch(
        self,
        job: TaskSpec,
        exc: BaseException | type[BaseException],
        *,
        times: int | None = None,
        where: Predicate | None = None,
        optional: bool = False,
    ) -> Fault:
        """Make the matching dispatch attempts of `job` fail as if the broker raised `exc`, to test `on_error` for real.

        Each attempt of a dispatch meets the fault, as production's attempts meet the broker. An
        `exc` that says the broker is unreachable (`ConnectionError`, `TimeoutError`, any `OSError`)
        is retried under the same job id, as in production, until the dispatch's
        `dispatch_deadline` (set a short one in the test); with `times=`, the attempt after the
        last failing one is delivered. Any other `exc` fails the dispatch at once. A dispatch that
        fails for good ends failed with a `DispatchError` chained to `exc`. These failures are
        expected: the plugin does not report them at teardown. A fault that applies to no
        dispatch by the end of the test fails it at teardown.

        Parameters:
            job: the job, or its name.
            exc: the exception (instance or class) the broker raises.
            times: fail only the first `times` matching attempts; by default every one.
            where: fail only the dispatches whose record satisfies this predicate.
            optional: when true, the fault may apply to no dispatch.

        Returns:
            The fault; its `records` are the dispatches it applied to, once per attempt.
        """
        check_exception("fail_dispatch", exc)
        fault = Fault("fail_dispatch", job, exc, times=times, where=where, optional=optional)
        self._faults.append(fault)
        return fault

    def _dispatch_fault_for(self, record: DispatchRecord) -> BaseException | None:
        for fault in reversed(self._faults):
            if fault.kind == "fail_dispatch" and fault.applies_to(record):
                fault.target(record)
                return fault.exception()
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
        record.job_exception = None
        self._records.append(record)
        return record

    async def run_dispatched(
        self, job: TaskSpec | None = None, *, collect_errors: bool = False, follow: bool = False
    ) -> JobRuns:
        """Run the dispatched jobs (of `job`, when given) here, once each, as their queues' workers would.

        They run one at a time in the order they were dispatched, with the arguments a worker
        receives, under their record's `job_id`, through their queue's adapter: a taskiq job's
        dependencies are resolved (its `Context` carries the job id), a Celery job runs with
        `apply()` (a bound task's `self.request.id` is the job id). No broker is contacted.

        Parameters:
            job: run only this job's dispatches (the job, or its name).
            collect_errors: when true, a job that raises does not stop the others: its exception
                is kept in its record's `job_exception`, and the result lists it in `failed`.
                By default whatever a job raises propagates at once.
            follow: when true, the dispatches the jobs make through this recorder are sent and
                their jobs run too, pass after pass, until no new job is dispatched.

        Returns:
            The records whose jobs were run (a list); its `failed` are those whose job raised, and
            each record's `job_result` is what its job returned.

        Raises:
            RuntimeError: with `follow=True`, the jobs kept dispatching more jobs.
        """
        if not isinstance(collect_errors, bool) or not isinstance(follow, bool):
            raise TypeError("run_dispatched() takes collect_errors= and follow= as True or False")
        ran = JobRuns()
        for _ in range(_MAX_PASSES):
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
                ran.append(record)
                try:
                    record.job_result = await record.dispatcher.run_as_worker(
                        record.job, record.job_id, record.args, record.kwargs
                    )
                except Exception as exc:
                    if not collect_errors:
                        raise
                    record.job_exception = exc
            if not follow:
                return ran
            # What the jobs enqueued through this recorder waits, pending, to be sent: send it.
            unsent = [record for record in self.dispatches if record.status is TaskStatus.PENDING]
            for record in unsent:
                await run_recorded(record)
            if not todo and not unsent:
                return ran
        raise RuntimeError(
            f"run_dispatched(follow=True) gave up after {_MAX_PASSES:,} passes: the jobs it runs keep "
            "dispatching more. Stand in for the job that dispatches itself with tasks_recorder.fail_dispatch() "
            "or run_dispatched() without follow=True."
        )

    def run_dispatched_sync(
        self, job: TaskSpec | None = None, *, collect_errors: bool = False, follow: bool = False
    ) -> JobRuns:
        """`run_dispatched()` for a sync test: runs the jobs in an event loop of their own."""
        try:
            anyio.get_current_task()
        except NoEventLoopError:
            return anyio.run(lambda: self.run_dispatched(job, collect_errors=collect_errors, follow=follow))
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


def _job_expected(expected: Expected) -> str:
    return expected.label() if expected.task is None else expected.label(name=_job_label(expected.task))


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
