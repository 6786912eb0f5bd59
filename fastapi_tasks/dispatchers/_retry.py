"""The gated retry: riding out a broker outage without a thundering herd.

A dispatch whose attempt fails because the broker is unreachable (a refused or dropped
connection, or no answer within the attempt's timeout) marks its broker's gate down and tries
again until its deadline. While a gate is down, one dispatch, the prober, waits a backoff (50 ms,
doubling up to 1 s) and tries; the others wait on an event, costing no CPU, and go all at once when
an attempt succeeds. When the prober gives up (its deadline, shutdown), the next waiter takes its
place. The waiting dispatches of one broker are bounded in number.

This module knows nothing of tasks and jobs: `fastapi_tasks._dispatch` runs a dispatch's attempts
through `retry()` and turns `GaveUp` into a `DispatchError`. A gate belongs to one event loop and
one broker (per adapter, and per broker object when the adapter tells them apart).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import anyio
from anyio.lowlevel import RunVar

__all__ = [
    "DEFAULT_MAX_WAITING",
    "FIRST_BACKOFF",
    "MAX_BACKOFF",
    "Attempts",
    "Gate",
    "GaveUp",
    "gate_for",
    "max_waiting_of",
    "retry",
    "unreachable",
]

DEFAULT_MAX_WAITING = 10_000
"""Dispatches that may wait for one unreachable broker at once, unless the adapter's `max_waiting` says otherwise."""

FIRST_BACKOFF = 0.05
"""Seconds the prober waits before its first try once the broker is known to be down; doubled after each failure."""

MAX_BACKOFF = 1.0
"""The longest wait between two probes: the backlog goes at most this long after the broker is back."""

# Exception class names (anywhere in an exception's MRO) that mean "cannot reach the broker": redis-py's
# ConnectionError and TimeoutError, kombu's and amqp's OperationalError, which are not OSErrors.
_UNREACHABLE_NAMES = frozenset({"ConnectionError", "TimeoutError", "OperationalError"})


def unreachable(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, says that the broker could not be reached.

    Such a failure is worth retrying with the same job id; any other (a serializer refusing an
    argument, a broker refusing the message) fails the dispatch at once.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        if isinstance(current, OSError) or any(cls.__name__ in _UNREACHABLE_NAMES for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


class Gate:
    """What a process knows of one broker: whether it is down, who probes it, who waits for it."""

    __slots__ = ("_changed", "backoff", "down", "probing", "waiting")

    def __init__(self) -> None:
        self.down = False
        self.probing = False
        self.waiting = 0
        self.backoff = FIRST_BACKOFF
        self._changed: anyio.Event | None = None

    def __repr__(self) -> str:
        state = "down" if self.down else "up"
        return f"<Gate {state} waiting={self.waiting} probing={self.probing}>"

    def failed(self) -> None:
        """An attempt found the broker unreachable."""
        if not self.down:
            self.down = True
            self.backoff = FIRST_BACKOFF

    def answered(self) -> None:
        """An attempt reached the broker: every waiting dispatch may go."""
        self.down = False
        self.probing = False
        self.backoff = FIRST_BACKOFF
        self._notify()

    def release_probe(self) -> None:
        """The prober leaves without an answer (its deadline, shutdown): a waiting dispatch takes its place."""
        self.probing = False
        self._notify()

    async def changed(self) -> None:
        """Wait until the broker answered, or the prober left."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


_gates: RunVar[dict[Hashable, Gate]] = RunVar("fastapi_tasks_dispatch_gates")


def gate_for(key: Hashable) -> Gate:
    """The running event loop's gate of the broker `key`."""
    try:
        gates = _gates.get()
    except LookupError:
        gates = {}
        _gates.set(gates)
    gate = gates.get(key)
    if gate is None:
        gate = gates[key] = Gate()
    return gate


def max_waiting_of(adapter: object) -> int:
    """How many dispatches may wait for one broker of `adapter`: its `max_waiting`, if a positive int."""
    bound = getattr(adapter, "max_waiting", DEFAULT_MAX_WAITING)
    return bound if isinstance(bound, int) and not isinstance(bound, bool) and bound >= 1 else DEFAULT_MAX_WAITING


class Attempts:
    """How one dispatch's attempts went so far; read for its error, and for its log line at shutdown."""

    __slots__ = ("allowed", "count", "error", "in_flight", "timed_out", "unanswered", "waiting")

    def __init__(self) -> None:
        self.count = 0
        self.error: BaseException | None = None  # the latest error of any attempt
        self.timed_out = False  # whether the last attempt got no answer within its time
        self.allowed = 0.0  # the seconds the last attempt had: its timeout, or less when the deadline came first
        self.unanswered = 0  # attempts that got no answer: any of them may have reached the queue
        self.in_flight = False
        self.waiting = False

    @property
    def last(self) -> BaseException | None:
        """The last attempt's error; `None` when it got no answer."""
        return None if self.timed_out else self.error

    @property
    def outcome_unknown(self) -> bool:
        """Whether the job may have reached the queue: an attempt got no answer, or one is in flight."""
        return self.unanswered > 0 or self.in_flight


class GaveUp(Exception):
    """The retry stopped without sending: `reason` is "deadline" or "crowded" (too many already wait)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def retry(
    gate: Gate,
    attempt: Callable[[], Awaitable[Any]],
    attempts: Attempts,
    *,
    attempt_timeout: float,
    deadline: float,
    max_waiting: int,
    unsent: Callable[[], bool] = lambda: False,
    waiting: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    """Call `attempt()` until it returns, each call bounded in time, retrying while the broker is unreachable.

    Parameters:
        gate: the broker's gate.
        attempt: one try at sending; what it raises says whether the broker was unreachable.
        attempts: filled in as the attempts go.
        attempt_timeout: seconds one attempt may take.
        deadline: the `anyio.current_time()` after which no attempt starts, nor waits.
        max_waiting: how many dispatches may wait for this broker at once.
        unsent: asked after an attempt timed out: whether it is known to have sent nothing (it was
            still waiting for something of its own, a free thread, say).
        waiting: awaited each time the dispatch cannot be sent at once (the broker is known to be
            down, or an attempt found it unreachable), before it waits or gives up; the spool
            keeps the job there.

    Returns:
        What the successful attempt returned.

    Raises:
        GaveUp: the deadline passed, or too many dispatches already waited.
        Exception: what an attempt raised for another reason than an unreachable broker.
    """
    probing = False
    try:
        while True:
            if gate.down:
                if waiting is not None:
                    await waiting()
                probing = await _wait_turn(gate, attempts, deadline, max_waiting, probing=probing)
            else:
                probing = False  # the broker answered someone else: whoever finds it down next probes
            attempts.count += 1
            attempts.in_flight = True
            now = anyio.current_time()
            attempts.allowed = min(attempt_timeout, deadline - now)
            try:
                with anyio.CancelScope(deadline=min(now + attempt_timeout, deadline)) as scope:
                    try:
                        result = await attempt()
                    except Exception as exc:
                        # A client library may turn the timeout's cancellation into an error of its own.
                        if not scope.cancel_called and not unreachable(exc):
                            raise
                        if not scope.cancel_called:  # else it timed out: said below
                            attempts.error, attempts.timed_out = exc, False
                    else:
                        attempts.in_flight = False
                        gate.answered()
                        probing = False
                        return result
                if scope.cancel_called:
                    attempts.timed_out = True
            except anyio.get_cancelled_exc_class():
                # Cut short in flight (shutdown, Task.cancel()): it stays in flight for the dispatch's error,
                # which says the job may have reached the queue.
                raise
            except BaseException:
                attempts.in_flight = False
                raise
            attempts.in_flight = False
            if attempts.timed_out and not unsent():
                attempts.unanswered += 1
            # A prober that failed stays the prober: its next try comes after a longer backoff, and the
            # waiters sleep on.
            gate.failed()
            if waiting is not None:
                await waiting()
            if anyio.current_time() >= deadline:
                raise GaveUp("deadline")
    finally:
        if probing:
            gate.release_probe()


async def _wait_turn(gate: Gate, attempts: Attempts, deadline: float, max_waiting: int, *, probing: bool) -> bool:
    """Wait while the broker is down; return whether this dispatch goes as the prober (else: the broker is back).

    `probing`: this dispatch is the prober already (its last try failed); it keeps the role.
    """
    if not probing and gate.waiting >= max_waiting:
        raise GaveUp("crowded")
    gate.waiting += 1
    attempts.waiting = True
    try:
        while gate.down:
            if probing or not gate.probing:
                gate.probing = probing = True
                try:
                    with anyio.CancelScope(deadline=deadline):
                        await anyio.sleep(gate.backoff)
                except BaseException:
                    gate.release_probe()
                    raise
                gate.backoff = min(gate.backoff * 2, MAX_BACKOFF)
                if anyio.current_time() >= deadline:
                    gate.release_probe()
                    raise GaveUp("deadline")
                return True
            with anyio.CancelScope(deadline=deadline):
                await gate.changed()
            if anyio.current_time() >= deadline:
                raise GaveUp("deadline")
        return False
    finally:
        gate.waiting -= 1
        attempts.waiting = False
