"""`TasksScheduler`: what the `Tasks` dependency gives an endpoint, and how it binds to its request.

A scheduler built while serving a request binds to FastAPI's two per-request exit stacks: the
function stack ends the `after_route` phase, the request stack the `after_response` phase.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._callables import callable_name
from ._compat import LEGACY_STACKS, REQUEST_STACK_KEY, LegacyExits, fastapi_version, legacy_function_stack
from ._context import RUNTIME_KEY, serving
from ._phases import Phase
from ._runtime import Runtime, runtime_of, shutdown_error
from .batch import DISCARDED, OPEN, STARTED, TasksBatch, ended_normally
from .config import DEFAULT_CONFIG, TaskConfig
from .definition import Schedulable
from .errors import FastAPITasksError
from .task import Task

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from starlette.types import Scope

__all__ = ["TasksScheduler"]

# What a scheduler is bound to: nothing (built outside any request), a request's exit stacks, or a task's
# or the lifespan's scope (its batches are started by hand, and cancelled at shutdown if never started).
_FREE, _BOUND, _UNBOUND = 0, 1, 2

_IMMEDIATE, _AFTER_ROUTE, _AFTER_RESPONSE = Phase.IMMEDIATE, Phase.AFTER_ROUTE, Phase.AFTER_RESPONSE


def push_at_bottom(stack: AsyncExitStack, callback: Callable[..., Any], *, is_async: bool = False) -> None:
    """Push an exit callback at the bottom of `stack`: it runs after everything already on it.

    A batch's exit there runs after every teardown of the dependencies on the stack, whatever the
    order in which the endpoint declared them: a teardown that raises discards the batch, whether its
    dependency was declared before or after `Tasks`. The testing toolkit waits for tasks there too.
    """
    callbacks = getattr(stack, "_exit_callbacks", None)
    if isinstance(callbacks, deque):
        callbacks.appendleft((not is_async, callback))
    elif is_async:  # pragma: no cover - contextlib has kept its callbacks in this deque since Python 3.7
        stack.push_async_exit(callback)
    else:  # pragma: no cover - likewise
        stack.push(callback)


class TasksScheduler(Schedulable):
    """Schedules background tasks for one request; what the `Tasks` dependency gives an endpoint.

    `schedule()` starts a task at once; `after_route` and `after_response` collect tasks started
    when the endpoint returns and after the response was sent.

    Parameters:
        tg: the task group the tasks run in (`request.state.fastapi_tasks_tg`).
        config: the configuration every task inherits; defaults to the app-wide one.

    Raises:
        TypeError: no task group was given and none can be found.
        FastAPITasksError: created while serving a request whose scope holds no FastAPI exit stacks
            (a middleware passed a copy of the scope on): its batches could never start.
    """

    __slots__ = ("_kind", "_response", "_response_state", "_route", "_route_state", "_runtime", "config")

    def __init__(
        self,
        tg: TaskGroup | None = None,
        config: TaskConfig | None = None,
        *,
        _runtime: Any = None,
        _scope: Scope | None = None,
    ) -> None:
        scope = _current_scope() if _scope is None else _scope
        if _runtime is None:
            _runtime = _find_runtime(scope, tg, config)
        self._runtime = _runtime
        self.config: TaskConfig = _runtime.config if config is None else _runtime.config.merge(config)
        # The batches are made when first used: most requests never defer a task.
        self._route: TasksBatch | None = None
        self._response: TasksBatch | None = None
        # How each phase ended, for a batch first used after its phase was over.
        self._route_state = self._response_state = OPEN
        self._kind = _FREE
        if scope is not None:
            self._bind(scope)

    def _init_batches(self) -> None:
        # For subclasses that are no request's scheduler (the testing toolkit's recorder): both batches now.
        self._kind = _FREE
        self._route_state = self._response_state = OPEN
        self._route = self._new_batch(_AFTER_ROUTE)
        self._response = self._new_batch(_AFTER_RESPONSE)

    @property
    def after_route(self) -> TasksBatch:
        """The tasks started once the endpoint has returned and its function-scoped dependencies are torn down."""
        batch = self._route
        if batch is None:
            batch = self._route = self._new_batch(_AFTER_ROUTE)
        return batch

    @property
    def after_response(self) -> TasksBatch:
        """The tasks started once the response was sent and the request-scoped dependencies are torn down."""
        batch = self._response
        if batch is None:
            batch = self._response = self._new_batch(_AFTER_RESPONSE)
        return batch

    def _new_batch(self, phase: Phase) -> TasksBatch:
        batch = TasksBatch(phase=phase)
        state = self._route_state if phase is _AFTER_ROUTE else self._response_state
        if state is not OPEN:
            # First used once its phase was over: it refuses tasks, as the batch would have had it existed.
            batch._state = state
            batch._config = self.config
            return batch
        batch._owner = self
        if self._kind is _UNBOUND:
            self._runtime.hold_unbound(batch)
        return batch

    def _bind(self, scope: Scope) -> None:
        # FastAPI closes the function stack when the endpoint returns and the request stack once the
        # response is sent; an exit callback on each starts the phase's batch, or discards it if the
        # request failed. Exit callbacks cost far less per request than a generator dependency, and
        # these cost little more than a call while no task was deferred: the batches are made on first use.
        if scope["type"] != "http" and scope["type"] != "websocket":
            # A task's or the lifespan's: batches are started by hand, and cancelled at shutdown if not.
            self._kind = _UNBOUND
            return
        function_stack = scope.get("fastapi_function_astack")
        request_stack = scope.get("fastapi_inner_astack")
        route_exit, response_exit = self._route_exit, self._response_exit
        if function_stack is None and LEGACY_STACKS:  # pragma: no cover - FastAPI < 0.118
            function_stack, request_stack = legacy_function_stack(scope), scope.get(REQUEST_STACK_KEY)
            exits = LegacyExits(scope, route_exit, response_exit)
            route_exit, response_exit = exits.route, exits.response
            if function_stack is None and request_stack is not None:
                raise FastAPITasksError(
                    f"Cannot bind a TasksScheduler to {scope['type']} {scope.get('path', '')!r} on FastAPI "
                    f"{fastapi_version()}: before 0.118 FastAPI keeps the endpoint's exit stack only where the "
                    "request handler awaits it, which a sync endpoint's worker thread cannot reach. Take the "
                    "scheduler from the Tasks dependency, build it in an async endpoint, or use FastAPI 0.121 or later."
                )
        if function_stack is None or request_stack is None:
            raise FastAPITasksError(
                f"Cannot bind a TasksScheduler to {scope['type']} {scope.get('path', '')!r}: the scope has no "
                "FastAPI exit stacks, so its after_route and after_response tasks could never start. "
                "A middleware between add_tasks() and the endpoint passed a copy of the scope on: take the "
                "scheduler from the Tasks dependency, which sees the endpoint's own scope."
            )
        self._kind = _BOUND
        push_at_bottom(function_stack, route_exit)
        push_at_bottom(request_stack, response_exit)

    def _route_started(self) -> bool:
        batch = self._route
        return (self._route_state if batch is None else batch._state) is STARTED

    # The exit callbacks on FastAPI's two stacks: each ends its phase's batch, if there is one, and notes
    # how the phase ended, for a batch first used after it.
    def _route_exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._route_state = self._end_phase(self._route, exc_type, exc, tb)

    def _response_exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._response_state = self._end_phase(self._response, exc_type, exc, tb)

    def _end_phase(
        self,
        batch: TasksBatch | None,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> int:
        """End a phase: start or discard its batch, if it has one; return how it ended (as the batch's state)."""
        if batch is None:
            return STARTED if ended_normally(exc_type) else DISCARDED
        batch.__exit__(exc_type, exc, tb)
        if type(self) is TasksScheduler:
            batch._release(self.config)
        return batch._state

    def __repr__(self) -> str:
        route = 0 if self._route is None else len(self._route.scheduled)
        response = 0 if self._response is None else len(self._response.scheduled)
        return f"<{type(self).__name__} after_route={route} after_response={response}>"

    @property
    def tg(self) -> TaskGroup:
        """The task group the tasks run in."""
        return self._runtime.tg  # type: ignore[no-any-return]

    def _base_config(self) -> TaskConfig:
        return self.config

    def _new_task(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._runtime.new_task(func, args, kwargs, config, phase)  # type: ignore[no-any-return]

    def _new_dispatch(
        self, job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
    ) -> Task[..., Any]:
        return self._runtime.new_dispatch(job, args, kwargs, config, phase)  # type: ignore[no-any-return]

    def _add(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        dispatch: bool = False,
    ) -> Task[..., Any]:
        runtime = self._runtime
        if runtime is not None and runtime.closed:
            # Refused before a task (or a test's record of one) exists, like a schedule into a closed batch.
            raise shutdown_error(config.name or callable_name(func))
        if dispatch:
            task = self._new_dispatch(func, args, kwargs, config, _IMMEDIATE)
        else:
            task = self._new_task(func, args, kwargs, config, _IMMEDIATE)
        self._submit(task)
        return task

    def _submit(self, task: Task[..., Any]) -> None:
        self._runtime.submit(task)

    def _start_tasks(self, tasks: list[Task[..., Any]], phase: Phase) -> None:
        self._runtime.start_tasks(tasks, phase)

    def _start_batch(self, batch: TasksBatch) -> None:
        batch.__start__(self)


def _current_scope() -> Scope | None:
    """What a scheduler built here binds to: the request being served, or the scope of the task running here.

    A task's runner says, in the task's own context, that it serves the app's runtime; helper tasks and
    threads the task starts copy that context. `None` once the request that this context served ended.
    """
    holder = serving.get()
    return None if holder is None else holder.scope


def _find_runtime(scope: Scope | None, tg: TaskGroup | None, config: TaskConfig | None) -> Runtime:
    # Direct use, `TasksScheduler(request.state.fastapi_tasks_tg)`: share the app's runtime so the
    # app-wide config, the threads and the shutdown bookkeeping apply; a foreign task group gets its own.
    runtime = None if scope is None else scope.get("state", {}).get(RUNTIME_KEY)
    if isinstance(runtime, Runtime) and (tg is None or runtime.tg is tg):
        return runtime
    if tg is None:
        raise TypeError("TasksScheduler needs a task group: TasksScheduler(request.state.fastapi_tasks_tg)")
    # The app's task group, passed in where no request or task of the app says which app this is (the
    # lifespan, a thread of its own): still the app's runtime.
    return runtime_of(tg) or Runtime(tg, DEFAULT_CONFIG, None)
