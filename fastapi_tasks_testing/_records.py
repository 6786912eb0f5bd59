"""What the recorder keeps: one `TaskRecord` per scheduled task, and the request it came from."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio.from_thread

from fastapi_tasks import Phase, Task, TaskConfig, TaskStatus
from fastapi_tasks._seam import is_async_callable

from ._signatures import callable_signature

if TYPE_CHECKING:
    from starlette.types import Scope

__all__ = ["Gate", "RequestInfo", "TaskKeeper", "TaskRecord"]


class TaskKeeper(Protocol):
    """What a record needs of the recorder that keeps it (the recorder itself, in `recorder.py`)."""

    def _target_for(self, record: TaskRecord) -> Callable[..., Any]:
        """The function to run for `record`: its own, or a fault or a fake the test injected."""
        ...

    def _next_order(self) -> int:
        """The next execution order number."""
        ...


class Gate(Protocol):
    """What a sync `after_route` task waits for: its request's ASGI call to return (a `Call` of `_engine.py`)."""

    @property
    def returned(self) -> bool:
        """Whether the request's ASGI call has returned."""
        ...

    def gate(self) -> threading.Event:
        """An event set once the request's ASGI call has returned, for a worker thread to wait on."""
        ...


_request_ids = itertools.count(1)
_SCOPE_KEY = "fastapi_tasks_testing.request"


@dataclass(frozen=True)
class RequestInfo:
    """The request (or WebSocket) a task was scheduled from.

    Parameters:
        method: the HTTP method, or "WEBSOCKET".
        path: the URL path.
        route: the name of the matched route (the endpoint function's name by default), if any.
        id: a number telling apart two requests with the same method and path within one test.
    """

    method: str
    path: str
    route: str | None = None
    id: int = 0

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @classmethod
    def from_scope(cls, scope: Scope) -> RequestInfo:
        """Describe the request of an ASGI scope; the same scope always gets the same `RequestInfo`.

        (A request's `Tasks` and its `BackgroundTasks` are recorded apart, but are one request.)
        """
        info = scope.get(_SCOPE_KEY)
        if isinstance(info, RequestInfo):
            return info
        method = "WEBSOCKET" if scope["type"] == "websocket" else scope.get("method", "GET")
        route = scope.get("route")
        info = cls(method=method, path=scope.get("path", ""), route=getattr(route, "name", None), id=next(_request_ids))
        scope[_SCOPE_KEY] = info
        return info


GATE_TIMEOUT = 30.0
"""Seconds at most that a sync task's body waits in its worker thread for its request's ASGI call to return."""


def _after_the_request(
    record: TaskRecord, gate: threading.Event, target: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    # In the task's worker thread: production races this thread against the rest of the request, which
    # it loses on a real server nearly every time (the request's teardown goes on in the event loop);
    # run mode makes it lose every time. Bounded: the client's call waits for the task meanwhile.
    gate.wait(GATE_TIMEOUT)
    if record._deferred_start and not anyio.from_thread.run_sync(record._begin):
        return None  # cancelled while it waited: its body never runs
    return target(*args, **kwargs)


def _now() -> dt.datetime:
    # Looked up through the module at call time, so freezegun's patched datetime is the one used.
    return dt.datetime.now(dt.timezone.utc)


class TaskRecord(Task[..., Any]):
    """One scheduled task as the recorder saw it; also the task's handle.

    Besides the `Task` handle's `func`, `args`, `kwargs`, `config`, `phase`, `status`, `result`
    and `exception`, a record has `seq` (scheduling order, from 1), `order` (execution order,
    from 1, or `None` if it never ran), `request`, `scheduled_at`, `started_at`, `finished_at`
    (UTC, from `datetime.now`, so `freezegun` controls them), `on_error_calls` and
    `handler_exception` (what its `on_error` handler raised, which production logs and contains).
    """

    __slots__ = (
        "_deferred_start",
        "_gate",
        "_recorder",
        "finished_at",
        "handled",
        "handler_asserted",
        "handler_exception",
        "on_error_calls",
        "order",
        "reason",
        "request",
        "scheduled_at",
        "seq",
        "source",
        "started_at",
    )

    def __init__(
        self,
        recorder: TaskKeeper,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        phase: Phase,
        request: RequestInfo | None,
        seq: int,
    ) -> None:
        super().__init__(func, args, kwargs, config, phase=phase)
        # Any: the assertions and the dispatch records reach further into their recorder than a record does.
        self._recorder: Any = recorder
        self.request = request
        self.seq = seq
        self.order: int | None = None
        self.scheduled_at = _now()
        self.started_at: dt.datetime | None = None
        self.finished_at: dt.datetime | None = None
        self.on_error_calls: list[tuple[Task[..., Any], Exception]] = []
        self.handler_exception: BaseException | None = None
        # Whether a test asserted on what the handler raised (then teardown does not report it).
        self.handler_asserted = False
        # Whether a test asserted on this record's failure (then teardown does not report it).
        self.handled = False
        self.source: Literal["Tasks", "BackgroundTasks"] = "Tasks"
        self.reason: str | None = None
        # Set when the body, if sync, must begin only once its request's ASGI call has returned.
        self._gate: Gate | None = None
        self._deferred_start = False

    def __repr__(self) -> str:
        return f"<TaskRecord #{self.seq} {self.phase.value} {self.name!r} {self.status.value}>"

    @property
    def shield(self) -> bool:
        """Whether the task is shielded from the shutdown cancellation."""
        return self.config.shielded

    @property
    def on_error(self) -> Any:
        """The task's effective `on_error` handler, or `None`."""
        return self.config.on_error

    @property
    def kind(self) -> str:
        """What was recorded: "task"."""
        return "task"

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments by parameter name, bound to the signature of the task's function, defaults included.

        `send("a@b.c")` and `send(to="a@b.c")` both give `record.arguments["to"] == "a@b.c"`, for a
        `where=` predicate or a test; a `*args` parameter holds a tuple and a `**kwargs` one a dict. When
        the signature is unknown (some builtins) or the arguments do not fit it (the task will fail with
        a `TypeError`), it holds the keyword arguments only.
        """
        bound = self._bound()
        if bound is None:
            return dict(self.kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def _signature(self) -> inspect.Signature | None:
        # The parameters a scheduling of the task's function passes (cached for plain functions and methods).
        return callable_signature(self.func)

    def _bound(self) -> inspect.BoundArguments | None:
        """The recorded arguments bound to `_signature()`, or `None` when it is unknown or they do not fit."""
        signature = self._signature()
        if signature is None:
            return None
        try:
            return signature.bind(*self.args, **self.kwargs)
        except TypeError:
            return None

    def _target(self) -> Callable[..., Any]:
        keeper: TaskKeeper = self._recorder
        target = keeper._target_for(self)
        gate = self._gate
        if gate is None or is_async_callable(target):
            self._gate = None  # an async body begins on the loop, in production's order: nothing to wait for
            return target
        return functools.partial(_after_the_request, self, gate.gate(), target)

    def _error_handler(self) -> Any:
        handler = self.config.on_error
        if handler is None:
            return None
        record = self
        # functools.wraps: the production log names the handler, not this wrapper. What the handler
        # raises is kept (production logs and contains it): a test must see a handler that broke.
        if is_async_callable(handler):

            @functools.wraps(handler)
            async def record_async_call(task: Task[..., Any], exc: Exception) -> Any:
                record.on_error_calls.append((task, exc))
                try:
                    return await handler(task, exc)
                except BaseException as handler_exc:
                    record.handler_exception = handler_exc
                    raise

            return record_async_call

        @functools.wraps(handler)
        def record_call(task: Task[..., Any], exc: Exception) -> Any:
            record.on_error_calls.append((task, exc))
            try:
                return handler(task, exc)
            except BaseException as handler_exc:
                record.handler_exception = handler_exc
                raise

        return record_call

    def _set_running(self) -> None:
        gate = self._gate
        if gate is not None and not gate.returned:
            # Its body begins once the request's ASGI call has returned (see _after_the_request): until
            # then it is pending, and it takes its place in the execution order then.
            self._deferred_start = True
            return
        self._begin()

    def _begin(self) -> bool:
        if self._status is not TaskStatus.PENDING:
            return False
        self.started_at = _now()
        self.order = self._recorder._next_order()
        super()._set_running()
        return True

    def _set_ended(self, status: TaskStatus) -> None:
        self.finished_at = _now()
        super()._set_ended(status)
