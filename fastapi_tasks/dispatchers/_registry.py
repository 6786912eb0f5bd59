"""Finding a job's adapter: adapters registered with `register_dispatcher`, then the built-in taskiq and Celery ones.

What `enqueue()` does first: find the adapter of the job it was given, check that it can dispatch
from the running async library, and make the pending `DispatchTask`. The built-in adapters are
imported only when a job of theirs is enqueued: an app that never dispatches needs neither library.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import anyio.from_thread

from .._dispatch import Dispatcher, DispatchTask
from .._phases import Phase
from ..config import TaskConfig
from ..errors import DispatchBackendError

__all__ = ["check_async_library", "find_dispatcher", "new_dispatch", "prepare_dispatch", "register_dispatcher"]

_registered: list[Dispatcher] = []
_by_type: dict[type, Dispatcher] = {}


def register_dispatcher(dispatcher: Dispatcher) -> None:
    """Make `enqueue()` accept the jobs of another queue, through an adapter of your own.

    Adapters registered later are asked first; the built-in taskiq and Celery adapters come last.

    Raises:
        TypeError: `dispatcher` does not implement the `Dispatcher` protocol.
    """
    if not isinstance(dispatcher, Dispatcher):
        raise TypeError(f"register_dispatcher() needs a Dispatcher (see fastapi_tasks.Dispatcher), not {dispatcher!r}")
    _registered.insert(0, dispatcher)
    _by_type.clear()


@functools.cache
def _taskiq_dispatcher() -> Dispatcher:
    from .taskiq import TaskiqDispatcher

    return TaskiqDispatcher()


@functools.cache
def _celery_dispatcher() -> Dispatcher:
    # One instance for the process: its dispatch threads are bounded per instance.
    from .celery import CeleryDispatcher

    return CeleryDispatcher()


def _builtin_dispatchers() -> list[Dispatcher]:
    # A job of a queue library can only exist once that library was imported: look in sys.modules
    # so an app that dispatches to one queue never imports the other.
    found: list[Dispatcher] = []
    if "taskiq" in sys.modules:
        found.append(_taskiq_dispatcher())
    if "celery" in sys.modules:
        found.append(_celery_dispatcher())
    return found


def find_dispatcher(job: object) -> Dispatcher:
    """The adapter of the queue `job` belongs to.

    Raises:
        TypeError: no adapter accepts `job`.
    """
    job_type = type(job)
    dispatcher = _by_type.get(job_type)
    if dispatcher is not None and dispatcher.accepts(job):
        return dispatcher
    for candidate in (*_registered, *_builtin_dispatchers()):
        if candidate.accepts(job):
            _by_type[job_type] = candidate
            return candidate
    hint = (
        "To run a plain function in this process, use schedule() instead."
        if callable(job)
        else "Pass the job itself and its arguments separately: enqueue(job, *args, **kwargs)."
    )
    raise TypeError(
        f"Cannot enqueue {job!r}: it is not a job of a supported queue "
        f"(a taskiq task made with @broker.task, or a Celery task made with @app.task). {hint}"
    )


def _running_library() -> str | None:
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio depends on sniffio, so without it only asyncio runs
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        pass
    try:
        # A sync endpoint runs in a worker thread: ask its event loop.
        return anyio.from_thread.run_sync(sniffio.current_async_library)
    except (RuntimeError, sniffio.AsyncLibraryNotFoundError):
        return None  # no event loop at all (a recorder used on its own in a sync unit test)


_ALL_LIBRARIES = frozenset({"asyncio", "trio"})


def check_async_library(dispatcher: Dispatcher, job_name: str) -> None:
    """Fail at the call site when the current async library cannot dispatch to `dispatcher`'s queue.

    Raises:
        DispatchBackendError: it cannot.
    """
    if _ALL_LIBRARIES.issubset(dispatcher.async_libraries):
        return  # nothing to check, and no thread hop from a sync endpoint to find out
    library = _running_library()
    if library is None or library in dispatcher.async_libraries:
        return
    supported = " or ".join(dispatcher.async_libraries)
    raise DispatchBackendError(
        f"Cannot enqueue {job_name!r} to {dispatcher.backend}: {dispatcher.backend} dispatches only under "
        f"{supported}, and this app runs on {library}. Run the app on {supported}, or use a queue that supports "
        f"{library} (Celery jobs can be enqueued from any backend)."
    )


def prepare_dispatch(job: object) -> tuple[Dispatcher, str]:
    """Find `job`'s adapter, check the async library, and return the adapter and the job's name.

    Raises:
        TypeError: `job` is not a job of a supported queue.
        DispatchBackendError: the queue cannot be dispatched to from the running async library.
    """
    dispatcher = find_dispatcher(job)
    job_name = dispatcher.job_name(job)
    check_async_library(dispatcher, job_name)
    return dispatcher, job_name


def new_dispatch(
    job: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], config: TaskConfig, phase: Phase
) -> DispatchTask:
    """A pending dispatch of `job(*args, **kwargs)` in `phase`, its job id already fixed."""
    dispatcher, job_name = prepare_dispatch(job)
    task = DispatchTask(job, args, kwargs, config, phase=phase)
    task._bind(dispatcher, dispatcher.new_job_id(job), job_name)
    return task
