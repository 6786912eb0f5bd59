"""What the recorder keeps of an `enqueue()`: a `DispatchRecord` per dispatch, and what running the jobs gave.

A dispatch is recorded in the same timeline as the tasks (its `kind` is "dispatch"); sending it
goes through production's retry (`DispatchTask._deliver`), whose every attempt checks what the test
injected (`fail_dispatch()`), then, in "spy" mode only, reaches the real broker. An injected error
that says the broker is unreachable is retried until the dispatch deadline, as in production.
`_dispatch.py` records the dispatches and runs their jobs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

from fastapi_tasks import DispatchTask
from fastapi_tasks._seam import describe_exception, dispatch_error

from ._mode import Mode
from ._records import TaskRecord
from ._timeline import format_call, one_line, short_repr, shorten_message

__all__ = ["DispatchKeeper", "DispatchRecord", "JobRuns"]


class DispatchKeeper(Protocol):
    """What a dispatch record needs of the recorder that keeps it (`DispatchRecorder`, in `_dispatch.py`)."""

    @property
    def mode(self) -> Mode:
        """The recorder's mode: only "spy" sends to the real broker."""
        ...

    def _dispatch_fault_for(self, record: DispatchRecord) -> BaseException | None:
        """The exception a `fail_dispatch()` of the test makes this dispatch fail with, if any."""
        ...


class DispatchRecord(TaskRecord, DispatchTask):
    """One `enqueue()` as the recorder saw it; also the dispatch's handle.

    Besides a `TaskRecord`'s attributes it has `job`, `job_name`, `job_id` and `backend`; its
    `args` and `kwargs` are the arguments after a round trip through the queue's serializer, as
    a worker receives them. Its status is pending, then dispatched (or failed with a
    `DispatchError`, discarded, cancelled). After `run_dispatched()`, `job_ran` is true and
    `job_result` holds what the job returned (or `job_exception` what it raised, when the run
    collected errors).
    """

    __slots__ = ("_original", "_send_error", "job_exception", "job_ran", "job_result")

    _original: tuple[tuple[Any, ...], dict[str, Any]]
    _send_error: Exception | None
    job_ran: bool
    job_result: Any
    job_exception: Exception | None

    def __repr__(self) -> str:
        return (
            f"<DispatchRecord #{self.seq} {self.phase.value} {self.name!r} job_id={self.job_id!r} {self.status.value}>"
        )

    @property
    def kind(self) -> str:
        """What was recorded: "dispatch"."""
        return "dispatch"

    def _signature(self) -> inspect.Signature | None:
        # The job's parameters as its queue's adapter sees them (a bound Celery task's `self` left out, say).
        return self.dispatcher.job_signature(self.func)

    def _target(self) -> Callable[..., Any]:
        return self._record_send

    async def _record_send(self, *args: Any, **kwargs: Any) -> Any:
        recorder: DispatchKeeper = self._recorder
        if self._send_error is not None:
            raise dispatch_error(self, self._send_error) from self._send_error
        spy = recorder.mode == "spy"
        (original_args, original_kwargs), job, job_id, dispatcher = (
            self._original,
            self.func,
            self.job_id,
            self.dispatcher,
        )

        async def attempt() -> Any:
            # Each attempt meets the injected fault, as each would meet the broker: an unreachable one
            # (ConnectionError, TimeoutError, OSError) is retried until the deadline, as in production.
            fault = recorder._dispatch_fault_for(self)
            if fault is not None:
                raise fault
            if spy:
                return await dispatcher.dispatch(job, job_id, original_args, original_kwargs)
            return None

        return await self._deliver(attempt)


class JobRuns(list[DispatchRecord]):
    """What `run_dispatched()` returns: the records whose jobs it ran, in order, and how they went."""

    @property
    def failed(self) -> list[DispatchRecord]:
        """The records whose job raised (kept in their `job_exception`)."""
        return [record for record in self if record.job_exception is not None]

    @property
    def succeeded(self) -> list[DispatchRecord]:
        """The records whose job returned (what it returned is in their `job_result`)."""
        return [record for record in self if record.job_exception is None]

    def summary(self) -> str:
        """One line per job run: `- #1 shop.ship(1): returned 'ok'` or `...: raised KeyError: 'x'`."""
        if not self:
            return "(no job was run)"
        lines = []
        for record in self:
            call = format_call(record.job_name, record.args, record.kwargs)
            if record.job_exception is None:
                lines.append(f"- #{record.seq} {call}: returned {short_repr(record.job_result)}")
            else:
                raised = shorten_message(one_line(describe_exception(record.job_exception)), 80)
                lines.append(f"- #{record.seq} {call}: raised {raised}")
        return "\n".join(lines)
