"""What differs between the FastAPI (with its Starlette) and anyio versions this project supports.

Every version check of the package is made here, once, at import: the modules that use these names
pay nothing for them per request or per task on the newest versions.

FastAPI, and the two per-request exit stacks a scheduler binds to:

- 0.121+: `scope["fastapi_function_astack"]`, closed once the endpoint has returned and its response
  was serialized (it ends `after_route`), and `scope["fastapi_inner_astack"]`, closed once the
  response was sent (it ends `after_response`); both inside FastAPI's exception handling.
- 0.118 to 0.120: only `fastapi_inner_astack`, and the dependencies with `yield` are torn down after
  the response was sent: nothing closes when the endpoint returns, so `after_route` cannot be told
  apart from `after_response`. `add_tasks()` refuses them (`check_fastapi()`).
- 0.109 to 0.117: FastAPI hands `solve_dependencies` one stack, closed once the endpoint has returned
  and its response was serialized: the function stack. 0.109 keeps it in the scope as
  `fastapi_astack`; 0.110+ only in the request handler's frame (`legacy_function_stack()` finds it
  there). Nothing closes once the response was sent: the `add_tasks` middleware opens that stack
  itself, around the app (`REQUEST_STACK_KEY`), outside FastAPI's exception handling.

anyio:

- 4.11+: `anyio.lowlevel.current_token()` gives an `EventLoopToken` that `anyio.from_thread` takes
  (`token=`); `anyio.RunFinishedError` and `anyio.NoEventLoopError`. Before: the backend's own token,
  and the errors it raises (`RuntimeError`, sniffio's `AsyncLibraryNotFoundError`).
- 4.14+: `TaskGroup.create_task()`, returning a handle with `cancel()`. Before: `start_soon()`, in a
  cancel scope of the task's own as its handle.
- anyio's asyncio cancel scopes can be reparented (`_cancelling.py` cancels a task of the app's own,
  started without a cancel scope, as one around it would: not inside a shielded section) in 4.14, at
  least. Before: the app's runtime starts its tasks through its task group, as on trio (`NATIVE_TASKS`).
- `anyio.Event()` outside an event loop (a worker thread) binds to the loop on first use; anyio 4.0
  refuses to make one there.

The floors in pyproject.toml are FastAPI 0.109 (0.118 to 0.120 excluded) and anyio 4.0. The covered
suite runs on the newest versions, so the branches for older ones are marked `pragma: no cover -
FastAPI < 0.118` or `- anyio < 4.x`; `scripts/check_versions.sh` (run by CI) runs the whole suite on the
oldest FastAPI, Starlette and anyio and on the newest.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from importlib.metadata import version
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from .errors import FastAPITasksError

if TYPE_CHECKING:
    from starlette.types import Scope

__all__ = [
    "HANDLER_FRAME_KEY",
    "LEGACY_STACKS",
    "NATIVE_TASKS",
    "REQUEST_STACK_KEY",
    "LegacyExits",
    "NoEventLoopError",
    "RunFinishedError",
    "check_fastapi",
    "current_token",
    "fastapi_version",
    "legacy_function_stack",
    "legacy_validation_error",
    "new_event",
    "run_on_loop",
    "run_sync_on_loop",
    "task_group_starter",
]


def _release(name: str) -> tuple[int, ...]:
    parts = []
    for part in version(name).split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


FASTAPI_VERSION = _release("fastapi")
ANYIO_VERSION = _release("anyio")


def fastapi_version() -> str:
    """The installed FastAPI's version, as its metadata spells it (for error messages)."""
    return version("fastapi")


LEGACY_STACKS = FASTAPI_VERSION < (0, 118)
"""FastAPI before 0.118: no request stack of FastAPI's, and the function stack found elsewhere."""
REQUEST_STACK_KEY = "fastapi_tasks_request_astack" if LEGACY_STACKS else "fastapi_inner_astack"
"""The scope key of the stack closed once the response was sent: FastAPI's, or the `add_tasks` middleware's."""
_FUNCTION_STACK_FOUND = "fastapi_tasks_function_astack"
"""Where `legacy_function_stack()` keeps the stack it found, for the other schedulers of the request."""
HANDLER_FRAME_KEY = "fastapi_tasks_handler_frame"
"""Where `legacy_function_stack()` keeps the request handler's frame, for `legacy_validation_error()`."""
_VALIDATION_KEY = "fastapi_tasks_validation_error"
"""Where `legacy_validation_error()` keeps what it found, once it has let go of the handler's frame."""


def check_fastapi() -> None:
    """Refuse the FastAPI versions on which `after_route` cannot be told apart from `after_response`.

    Raises:
        FastAPITasksError: the installed FastAPI is 0.118, 0.119 or 0.120.
    """
    if (0, 118) <= FASTAPI_VERSION < (0, 121):  # pragma: no cover - FastAPI 0.118 to 0.120
        raise FastAPITasksError(
            f"fastapi-tasks does not support FastAPI {version('fastapi')}: FastAPI 0.118 to 0.120 tear down "
            "dependencies after the response was sent and close nothing when the endpoint returns, so "
            "after_route tasks could not start before the response. Use FastAPI 0.121 or later (or 0.109 to 0.117)."
        )


def legacy_function_stack(scope: Scope) -> AsyncExitStack | None:  # pragma: no cover - FastAPI < 0.118
    """FastAPI before 0.118: the stack closed once the endpoint has returned and its response was serialized.

    On 0.110 to 0.117 it is found up the call chain (a coroutine's `f_back` is the one awaiting it):
    in `solve_dependencies`' frame for the `Tasks` dependency, in the request handler's for a scheduler
    built in an async endpoint. A sync endpoint runs in a thread, outside that chain: `None` there,
    unless a scheduler of the same request found it before.
    """
    stack = scope.get(_FUNCTION_STACK_FOUND) or scope.get("fastapi_astack")  # 0.109 puts it there for HTTP
    if stack is not None:
        return stack  # type: ignore[no-any-return]
    import fastapi.dependencies.utils as fastapi_utils
    import fastapi.routing as fastapi_routing

    modules = (vars(fastapi_utils), vars(fastapi_routing))
    stack = None
    frame: FrameType | None = sys._getframe(1)
    for _ in range(40):
        if frame is None:
            break
        if frame.f_globals is modules[0] or frame.f_globals is modules[1]:
            found = frame.f_locals.get("async_exit_stack")
            if isinstance(found, AsyncExitStack):
                stack = stack or found
                if frame.f_globals is modules[1]:  # the request handler's: it knows the validation errors
                    scope[HANDLER_FRAME_KEY] = frame
                    break
        frame = frame.f_back
    if stack is not None:
        scope[_FUNCTION_STACK_FOUND] = stack
    return stack


def legacy_validation_error(scope: Scope) -> BaseException | None:  # pragma: no cover - FastAPI < 0.118
    """FastAPI 0.110 to 0.117: the `RequestValidationError` the request handler raises once the function stack
    has closed (cleanly), if the request failed validation; `None` otherwise, or where the handler was not found.
    """
    if _VALIDATION_KEY in scope:
        return scope[_VALIDATION_KEY]  # type: ignore[no-any-return]
    # Read once, for every scheduler of the request, and let go of: a frame that has returned still holds
    # its locals (the endpoint's dependencies, its schedulers), and the server may keep the scope a while.
    frame = scope.pop(HANDLER_FRAME_KEY, None)
    errors = None if frame is None else frame.f_locals.get("errors")
    error = None
    if errors:
        from fastapi.exceptions import RequestValidationError

        error = RequestValidationError(errors)
    scope[_VALIDATION_KEY] = error
    return error


class LegacyExits:  # pragma: no cover - FastAPI < 0.118
    """FastAPI before 0.118: a scheduler's two exit callbacks, the response one told how the route phase ended.

    FastAPI 0.121+ closes both stacks inside its exception handling: what ends the route phase with an
    exception reaches the request stack too. The middleware's request stack is closed outside it, after an
    exception handler answered: it is handed the exception the function stack saw, unless it saw one itself.
    """

    __slots__ = ("_exc_info", "_response_exit", "_route_exit", "_scope")

    def __init__(self, scope: Scope, route_exit: Callable[..., None], response_exit: Callable[..., None]) -> None:
        self._scope = scope
        self._route_exit = route_exit
        self._response_exit = response_exit
        self._exc_info: tuple[Any, Any, Any] = (None, None, None)

    def route(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            # FastAPI 0.110 to 0.117 close the function stack cleanly, then raise the request's validation error.
            exc = legacy_validation_error(self._scope)
            exc_type = None if exc is None else type(exc)
        self._exc_info = (exc_type, exc, tb)
        self._route_exit(exc_type, exc, tb)

    def response(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            exc_type, exc, tb = self._exc_info
        self._exc_info = (None, None, None)
        self._response_exit(exc_type, exc, tb)


# anyio: the event loop's token, calls into the loop from another thread, and the errors they raise.
# `TYPE_CHECKING or`: the types are the newest anyio's, and mypy runs on it.
if TYPE_CHECKING or ANYIO_VERSION >= (4, 11):
    from anyio import NoEventLoopError, RunFinishedError

    current_token = anyio.lowlevel.current_token

    def run_sync_on_loop(token: Any, func: Callable[..., Any], /, *args: Any) -> Any:
        """`func(*args)` on the event loop of `token`, from another thread."""
        return anyio.from_thread.run_sync(func, *args, token=token)

    def run_on_loop(token: Any, func: Callable[..., Coroutine[Any, Any, Any]], /, *args: Any) -> Any:
        """`await func(*args)` on the event loop of `token`, from another thread.

        Raises:
            RunFinishedError: that event loop has ended.
        """
        return anyio.from_thread.run(func, *args, token=token)

else:  # pragma: no cover - anyio < 4.11
    import sniffio

    NoEventLoopError = sniffio.AsyncLibraryNotFoundError  # type: ignore[misc,assignment]
    RunFinishedError = RuntimeError  # type: ignore[misc,assignment]

    class _LoopToken:
        """The event loop's backend and its own token, as `EventLoopToken` holds them."""

        __slots__ = ("backend", "native_token")

        def __init__(self) -> None:
            from anyio._core._eventloop import get_async_backend

            self.backend: Any = get_async_backend()
            self.native_token = self.backend.current_token()

    def current_token() -> Any:  # type: ignore[misc]
        """The running event loop, for calls into it from other threads."""
        return _LoopToken()

    def run_sync_on_loop(token: Any, func: Callable[..., Any], /, *args: Any) -> Any:
        """`func(*args)` on the event loop of `token`, from another thread."""
        return token.backend.run_sync_from_thread(func, args, token=token.native_token)

    def run_on_loop(token: Any, func: Callable[..., Coroutine[Any, Any, Any]], /, *args: Any) -> Any:
        """`await func(*args)` on the event loop of `token`, from another thread.

        Raises:
            RunFinishedError: that event loop has ended.
        """
        return token.backend.run_async_from_thread(func, args, token=token.native_token)


# anyio: starting a task in a task group, with a handle that cancels it.
if TYPE_CHECKING or ANYIO_VERSION >= (4, 14):

    def task_group_starter(tg: anyio.abc.TaskGroup) -> Callable[..., Any]:
        """How a task is started in `tg`: `start(coro, name=name)` returns a handle with `cancel()`."""
        return tg.create_task

else:  # pragma: no cover - anyio < 4.14

    class _Handle:
        """A task started with `start_soon()`: cancelled through a cancel scope of its own."""

        __slots__ = ("cancelled", "scope")

        def __init__(self) -> None:
            self.scope: anyio.CancelScope | None = None
            self.cancelled = False

        def cancel(self) -> None:
            self.cancelled = True
            if self.scope is not None:
                self.scope.cancel()

        async def run(self, coro: Coroutine[Any, Any, Any]) -> None:
            with anyio.CancelScope() as scope:
                self.scope = scope
                if self.cancelled:
                    scope.cancel()
                await coro

    def task_group_starter(tg: anyio.abc.TaskGroup) -> Callable[..., Any]:
        """How a task is started in `tg`: `start(coro, name=name)` returns a handle with `cancel()`."""

        def start(coro: Coroutine[Any, Any, Any], *, name: str) -> _Handle:
            handle = _Handle()
            tg.start_soon(handle.run, coro, name=name)
            return handle

        return start


# anyio: whether the app's runtime may start its tasks as asyncio tasks of its own (see `_cancelling.py`).
try:
    from anyio._backends._asyncio import CancelScope as _AsyncioCancelScope
except ImportError:  # pragma: no cover - anyio 4's layout
    NATIVE_TASKS = False
else:
    NATIVE_TASKS = hasattr(_AsyncioCancelScope, "_reparent")


# anyio: an event made outside an event loop (in a worker thread).
if TYPE_CHECKING or ANYIO_VERSION >= (4, 14):
    new_event = anyio.Event
else:  # pragma: no cover - anyio < 4.14 (4.0 refuses; which later one binds on use is not checked here)

    class _LazyEvent(anyio.Event):
        """An event made outside an event loop, bound to the loop of its first `wait()`."""

        def __new__(cls) -> _LazyEvent:
            return object.__new__(cls)

        def __init__(self) -> None:
            self._event: anyio.Event | None = None
            self._is_set = False

        def set(self) -> None:
            if self._event is None:
                self._is_set = True
            else:
                self._event.set()

        def is_set(self) -> bool:
            return self._is_set if self._event is None else self._event.is_set()

        async def wait(self) -> None:
            if self._event is None:
                self._event = anyio.Event()
                if self._is_set:
                    self._event.set()
            await self._event.wait()

        def statistics(self) -> anyio.EventStatistics:
            return anyio.EventStatistics(0) if self._event is None else self._event.statistics()

    def new_event() -> anyio.Event:
        """`anyio.Event()`, also outside an event loop."""
        try:
            return anyio.Event()
        except NoEventLoopError:
            return _LazyEvent()
