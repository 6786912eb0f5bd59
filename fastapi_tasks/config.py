"""How a task is run: `TaskConfig`, merged from the app-wide config down to each task, and `TaskErrorHandler`."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    # Type-only, and the one back-reference of the package: a config names the handler a task is given
    # to, and a task holds its config. The two types refer to each other; neither module runs the other.
    from .task import Task

__all__ = ["TaskConfig", "TaskErrorHandler"]

TaskErrorHandler: TypeAlias = Callable[["Task[..., Any]", Exception], "Awaitable[Any] | Any"]
"""`on_error(task, exc)`: called after a task raised; sync handlers run in a worker thread."""


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """How a task is run. Every field left `None` is inherited from the config it is merged over.

    Parameters:
        name: the name used in logs and test reports; defaults to the function's qualified name.
        shield: when true, the task survives the shutdown cancellation and is awaited at shutdown.
        on_error: `on_error(task, exc)`, called (sync or async) after the task raised `exc`.
        dispatch_timeout: for jobs handed to a distributed queue with `enqueue()`, the seconds a
            dispatch attempt may take before it is given up; `None` inherits (default 5 s).
        dispatch_deadline: for jobs handed to a distributed queue with `enqueue()`, the seconds a
            dispatch may keep retrying while the broker is unreachable before it fails with
            `DispatchError`; `None` inherits (default 60 s).

    Raises:
        TypeError: `name` is not a str, `shield` not a bool, or `on_error` not callable.
        ValueError: `dispatch_timeout` or `dispatch_deadline` is not a positive number of seconds.
    """

    name: str | None = None
    shield: bool | None = None
    on_error: TaskErrorHandler | None = None
    dispatch_timeout: float | None = None
    dispatch_deadline: float | None = None

    def __post_init__(self) -> None:
        # Checked where the config is built: `add_tasks(app, config=TaskConfig(on_error=1))` would
        # otherwise surface only when a task fails, as a logged TypeError of the handler call.
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name must be a str or None, not {self.name!r}")
        if self.shield is not None and not isinstance(self.shield, bool):
            raise TypeError(f"shield must be True, False or None, not {self.shield!r}")
        if self.on_error is not None and not callable(self.on_error):
            raise TypeError(f"on_error must be a callable taking (task, exc), not {self.on_error!r}")
        for option, seconds in (
            ("dispatch_timeout", self.dispatch_timeout),
            ("dispatch_deadline", self.dispatch_deadline),
        ):
            if seconds is not None and (
                isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < math.inf
            ):
                raise ValueError(f"{option} must be a positive number of seconds or None, not {seconds!r}")

    @property
    def shielded(self) -> bool:
        """Whether the task is shielded from the shutdown cancellation (`shield=None` means no)."""
        return bool(self.shield)

    def merge(self, other: TaskConfig | None) -> TaskConfig:
        """Return this config overridden by every field that `other` sets (is not `None`).

        `app_config.merge(task_config)` is the config a task runs with.
        """
        if other is None or (
            other.name is None
            and other.shield is None
            and other.on_error is None
            and other.dispatch_timeout is None
            and other.dispatch_deadline is None
        ):
            return self
        return TaskConfig(
            name=self.name if other.name is None else other.name,
            shield=self.shield if other.shield is None else other.shield,
            on_error=self.on_error if other.on_error is None else other.on_error,
            dispatch_timeout=self.dispatch_timeout if other.dispatch_timeout is None else other.dispatch_timeout,
            dispatch_deadline=self.dispatch_deadline if other.dispatch_deadline is None else other.dispatch_deadline,
        )


DEFAULT_CONFIG = TaskConfig()
"""The config of a task that sets nothing: every field inherited."""
