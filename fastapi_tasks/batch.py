"""`TasksBatch`: the tasks of a deferred phase (`after_route`, `after_response`), started or discarded together."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

import anyio
from starlette.requests import ClientDisconnect
from starlette.websockets import WebSocketDisconnect

from ._callables import callable_name
from ._log import logger
from ._phases import Phase, TaskStatus
from .config import DEFAULT_CONFIG, TaskConfig
from .definition import Schedulable
from .errors import BatchClosedError
from .task import Task

__all__ = ["TasksBatch"]

OPEN, STARTED, DISCARDED = 0, 1, 2
"""A batch's state: still collecting tasks, started, or discarded (then it refuses tasks)."""

_AFTER_RESPONSE = Phase.AFTER_RESPONSE


class BatchStarter(Protocol):
    """What `batch.__start__(scheduler)` starts a batch's tasks on."""

    def _start_tasks(self, tasks: list[Task[..., Any]], phase: Phase, /) -> None: ...


class BatchOwner(BatchStarter, Protocol):
    """The scheduler a batch belongs to while its phase lasts: it makes the batch's tasks and starts the batch."""

    @property
    def config(self) -> TaskConfig: ...

    def _new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]: ...

    def _new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]: ...

    def _start_batch(self, batch: TasksBatch, /) -> None: ...

    def _route_started(self) -> bool: ...


def ended_normally(exc_type: type[BaseException] | None) -> bool:
    """Whether a phase that ended with `exc_type` (`None`: no exception) ended normally."""
    # A WebSocket session that ends with the client disconnecting has ended normally.
    return exc_type is None or issubclass(exc_type, WebSocketDisconnect)


class TasksBatch(Schedulable):
    """Tasks collected during a request and started together later (`after_route` or `after_response`).

    When the endpoint raises, the batch is discarded: its tasks never start, and their status
    says so.
    """

    __slots__ = ("__weakref__", "_config", "_owner", "_state", "phase", "scheduled")

    def __init__(self, scheduled: list[Task[..., Any]] | None = None, *, phase: Phase = Phase.AFTER_RESPONSE) -> None:
        self.scheduled: list[Task[..., Any]] = [] if scheduled is None else scheduled
        self.phase = phase
        self._owner: BatchOwner | None = None
        # The config tasks inherit when the batch has no owner (any more, see __exit__).
        self._config = DEFAULT_CONFIG
        self._state = OPEN

    def __repr__(self) -> str:
        return f"<TasksBatch {self.phase.value} tasks={len(self.scheduled)}>"

    def _base_config(self) -> TaskConfig:
        return self._config if self._owner is None else self._owner.config

    def _add(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        dispatch: bool = False,
    ) -> Task[..., Any]:
        if self._state is not OPEN:
            # Refused before a task (or a test's record of one) exists: a refused task never existed.
            raise BatchClosedError(
                f"Cannot add {config.name or callable_name(func)!r} to the {self.phase.value} batch: "
                f"it was already {self._closed_as()}. Schedule it with tasks.schedule(...) to start it now."
            )
        owner = self if self._owner is None else self._owner
        if dispatch:
            task = owner._new_dispatch(func, args, kwargs, config, self.phase)
        else:
            task = owner._new_task(func, args, kwargs, config, self.phase)
        self.scheduled.append(task)
        return task

    def __start__(self, scheduler: BatchStarter, /) -> None:
        """Start every collected task on `scheduler` (what the `Tasks` dependency does for you).

        Tasks cancelled while they waited (`task.cancel()`) stay cancelled. After the app shut
        down, the tasks end `cancelled` and are logged at WARNING by name.

        Raises:
            BatchClosedError: the batch was already started or discarded.
        """
        if self._state is not OPEN:
            raise BatchClosedError(
                f"The {self.phase.value} batch was already {self._closed_as()}: its tasks start once."
            )
        self._state = STARTED
        scheduler._start_tasks(self.scheduled, self.phase)

    def _closed_as(self) -> str:
        return "started" if self._state is STARTED else "discarded"

    def _discard(self, reason: BaseException | None, why: str | None = None) -> None:
        self._state = DISCARDED
        if not self.scheduled:
            return
        discarded = [task for task in self.scheduled if not task._status.ended]
        for task in discarded:
            task._set_ended(TaskStatus.DISCARDED)
        if not discarded:
            return
        if why is None:
            why = f"the endpoint or one of its dependencies raised {type(reason).__name__}"
        logger.info(
            "Discarded %d %s task(s) because %s: %s",
            len(discarded),
            self.phase.value,
            why,
            ", ".join(repr(task.name) for task in discarded),
        )

    # An exit callback at the bottom of FastAPI's per-request exit stacks: it runs when the endpoint
    # returned and its function-scoped dependencies were torn down (after_route), or when the response
    # was sent and the request-scoped ones were torn down (after_response).
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        owner = self._owner
        if owner is not None and self._state is OPEN:
            if ended_normally(exc_type):
                owner._start_batch(self)
            elif self.phase is _AFTER_RESPONSE and owner._route_started():
                self._discard(exc, _after_the_endpoint(exc))
            elif isinstance(exc, anyio.get_cancelled_exc_class()):
                self._discard(exc, f"the request was cancelled before the endpoint returned ({type(exc).__name__})")
            else:
                self._discard(exc)

    def _release(self, config: TaskConfig) -> None:
        # The phase is over: from now on the batch only refuses tasks, which takes its scheduler's
        # config and nothing else of a plain TasksScheduler. Letting go of the scheduler breaks the
        # scheduler <-> batch reference cycle, so that when the request ends its scheduler, batches and
        # tasks are freed at once by reference counting. Left to the cyclic garbage collector (which,
        # with deferred tasks, they made run about twice as often) they cost microseconds per request.
        self._config = config
        self._owner = None


def _after_the_endpoint(exc: BaseException | None) -> str:
    # The endpoint returned (its after_route batch started): what failed came after it.
    name = type(exc).__name__
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        # A server cancels the requests still running when it shuts down, and some (hypercorn) the request of
        # a client that disconnected: which of the two it was, the request cannot tell.
        return (
            f"the request was cancelled before the response was sent ({name}): the server cancelled it, as "
            "servers do at shutdown and some when the client disconnects"
        )
    if _client_went_away(exc):
        return f"the client went away before the response was sent ({name})"
    return f"sending the response or tearing down a request-scoped dependency raised {name} after the endpoint returned"


def _client_went_away(exc: BaseException | None) -> bool:
    # Starlette before 0.38 sends a streaming response from a task group of its own: the send error reaches
    # the stack inside an exception group (anyio's on trio).
    if isinstance(exc, OSError | ClientDisconnect):
        return True
    inner = getattr(exc, "exceptions", None)
    return isinstance(inner, tuple) and bool(inner) and all(_client_went_away(leaf) for leaf in inner)
