"""The `fastapi_tasks` logger, how a failure is described in its lines, and logging that never raises.

A line about a failure is one line: the exception's text is escaped (no CR/LF can forge a second
line), capped in length, and can be left out. Logging a failure must never be what stops a task from
ending: a record that cannot be logged (a raising filter or handler, a `RecursionError` on a deep
stack) is logged again without its traceback, else written to stderr by `logging.lastResort`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TypeAlias

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_NAMES",
    "describe_exception",
    "listing",
    "log",
    "logger",
    "name_list",
    "one_line",
]

logger = logging.getLogger("fastapi_tasks")

MAX_MESSAGE_CHARS = 2000
"""The longest exception text a log line quotes; the rest is counted, not logged."""
MAX_NAMES = 20
"""How many task names a line lists; the others are counted."""

ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None]

# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators, which log viewers
# may break lines at, are written as escapes.
_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line (control characters escaped), cut after `limit` characters."""
    if len(text) > limit:
        text = f"{text[:limit]}... [{len(text) - limit:,} more characters]"
    return text if text.isprintable() else text.translate(_ESCAPES)


def describe_exception(exc: BaseException, *, message: bool = True) -> str:
    """`TypeName: message` on one line, or `TypeName` for an exception without a message (or `message=False`).

    Never raises: an exception whose `str()` raises is described with a placeholder.
    """
    name = type(exc).__name__
    if not message:
        return name
    try:
        text = str(exc)
    except Exception as str_error:  # a library exception formatting a field its __init__ never set, say
        return f"{name}: <str() of the exception raised {type(str_error).__name__}>"
    return f"{name}: {one_line(text)}" if text else name


def name_list(names: Iterable[str], limit: int = MAX_NAMES) -> str:
    """`'a', 'b'` for the first `limit` names (quoted, escaped), then how many more there are."""
    return listing((repr(name) for name in names), limit)


def listing(items: Iterable[str], limit: int = MAX_NAMES) -> str:
    """The first `limit` items, comma-separated (each on one line, capped), then how many more there are."""
    shown: list[str] = []
    more = 0
    for item in items:
        if len(shown) < limit:
            shown.append(one_line(item, 300))
        else:
            more += 1
    text = ", ".join(shown)
    return f"{text} and {more:,} more" if more else text


def log(level: int, message: str, *args: Any, exc_info: ExcInfo | None = None) -> None:
    """Log on the `fastapi_tasks` logger; never raises.

    `args` must be strings already rendered (the caller describes exceptions with `describe_exception`).
    """
    try:
        logger.log(level, message, *args, exc_info=exc_info)
        return
    except Exception as error:
        failure = type(error).__name__
    try:  # without the traceback, whose formatting (or a filter reading it) may be what failed
        logger.log(level, message + " (logged without its traceback: logging it raised %s)", *args, failure)
        return
    except Exception:
        pass
    try:  # a filter or handler of the app's that raises whatever the record: stderr, past them
        record = logger.makeRecord(logger.name, level, "fastapi_tasks", 0, message, args, None)
        handler = logging.lastResort
        if handler is not None:
            handler.handle(record)
    except Exception:
        pass
