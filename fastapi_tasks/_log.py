"""The `fastapi_tasks` logger, and how a failure is described in its lines."""

from __future__ import annotations

import logging

__all__ = ["describe_exception", "logger"]

logger = logging.getLogger("fastapi_tasks")


def describe_exception(exc: BaseException) -> str:
    """`TypeName: message`, or just `TypeName` for an exception without a message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
