"""The text of a `DispatchError`: why a job was not handed to its queue, in words that are safe to log.

`fastapi_tasks._dispatch` builds the error where a dispatch fails or its retry gives up; the testing
toolkit's recorder builds the same error for the dispatches it records (through `fastapi_tasks._seam`).
Only exception type names go into the text, never their messages: a broker's or serializer's message
can quote the job's argument values.
"""

from __future__ import annotations

from typing import Protocol

from ._phases import Phase
from .dispatchers._retry import Attempts, max_waiting_of
from .errors import DispatchError

__all__ = ["Described", "dispatch_error"]


class Described(Protocol):
    """What the text says of a dispatch: a `DispatchTask`, or the recorder's record of one."""

    @property
    def job_name(self) -> str: ...

    @property
    def job_id(self) -> str: ...

    @property
    def phase(self) -> Phase: ...

    @property
    def backend(self) -> str: ...

    @property
    def deadline(self) -> float: ...

    @property
    def dispatcher(self) -> object: ...


def dispatch_error(
    task: Described,
    cause: BaseException | None,
    *,
    timeout: float | None = None,
    waiting_for: tuple[str, str] | None = None,
    attempts: Attempts | None = None,
    gave_up: str | None = None,
    spooled: bool = False,
) -> DispatchError:
    """The `DispatchError` for `task`: the broker's error `cause`, or a retry that gave up.

    Without `gave_up`, the dispatch failed for good with `cause`, an error that no retry fixes. With
    `gave_up` ("deadline", "crowded" or "cancelled"), the retry of an unreachable broker stopped:
    `attempts` says how the attempts went, each bounded by `timeout` s, the last one perhaps still
    waiting for something of its own (`waiting_for`, a (what, why) pair, see `dispatch_waiting_for`);
    `spooled` says whether the spool keeps the job, to send later. Only exception type names go into
    the message: a broker's or serializer's message can quote the argument values, and it stays
    readable on the chained cause.
    `DispatchError.timed_out` is true when the job may have reached the queue all the same.
    """
    unknown = cause is None
    if gave_up is not None and attempts is not None:
        unknown = attempts.outcome_unknown
        reason = _gave_up_reason(task, gave_up, attempts, timeout, waiting_for)
        consequence = (
            "outcome unknown: an attempt that got no answer may have reached the queue"
            if unknown
            else "the job was not sent"
        )
        if spooled:
            consequence += "; the spool keeps the job and sends it once the broker answers"
        reason = f"{reason}; {consequence}"
    else:
        reason = "no answer from the broker" if cause is None else _cause_chain(cause)
    return DispatchError(
        f"Could not dispatch {task.job_name!r} (job id {task.job_id!r}, phase {task.phase.value}) "
        f"to {task.backend}: {reason}.",
        job_name=task.job_name,
        job_id=task.job_id,
        phase=task.phase.value,
        backend=task.backend,
        timed_out=unknown,
    )


def _no_answer(timeout: float | None, waiting_for: tuple[str, str]) -> str:
    what, why = waiting_for
    return f"no {what} within {timeout:g} s" + (f": {why}" if why else "")


def _gave_up_reason(
    task: Described, gave_up: str, attempts: Attempts, timeout: float | None, waiting_for: tuple[str, str] | None
) -> str:
    count = f"{attempts.count} attempt{'' if attempts.count == 1 else 's'}"
    # The time an attempt had when the deadline did not cut it short: its timeout, or the whole deadline if shorter.
    bound = timeout if timeout is None else min(timeout, task.deadline)
    if attempts.count == 0:
        last = ""
    elif attempts.last is not None:
        last = f", the last failed with {_cause_chain(attempts.last)}"
    elif attempts.count > 1 and timeout is not None and attempts.allowed < timeout:
        # A later attempt that the deadline cut short: what an earlier one met says more of the broker.
        earlier = "," if attempts.error is None else f", the latest error was {_cause_chain(attempts.error)}, and"
        left = attempts.allowed * 1000
        within = f"in the {f'{left:.0f} ms' if left >= 1 else 'less than 1 ms'} the deadline left it"
        if waiting_for is not None:
            what, why = waiting_for
            last = f"{earlier} the last attempt found no {what} {within}" + (f": {why}" if why else "")
        else:
            last = f"{earlier} the last attempt got no answer {within}"
    elif waiting_for is not None:
        last = f", the last found {_no_answer(bound, waiting_for)}"
    else:
        last = f", the last got no answer within {bound:g} s"
    if gave_up == "crowded":
        return (
            f"the broker is unreachable and {max_waiting_of(task.dispatcher):,} other dispatches already wait for it "
            f"(the bound of {task.backend}'s adapter, max_waiting)"
        )
    if gave_up == "cancelled":
        if attempts.in_flight:
            return f"cancelled (shutdown, or Task.cancel()) during attempt {attempts.count}"
        return f"cancelled (shutdown, or Task.cancel()) while it waited for the unreachable broker ({count}{last})"
    return f"the broker could not be reached within the dispatch deadline of {task.deadline:g} s ({count}{last})"


def _cause_chain(exc: BaseException) -> str:
    names = [type(exc).__name__]
    seen = {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen and len(names) < 4:
        seen.add(id(cause))
        names.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    return " caused by ".join(names)
