"""Finding the FastAPI app inside what an `app` fixture returns.

Apps' own fixtures often hand out the app wrapped: by asgi-lifespan
(`async with LifespanManager(app) as manager: yield manager.app`, a function that calls the app) or
by middleware added around it (an object that keeps the app it calls in `.app`). The recorder
installs itself on the FastAPI app inside, found by following `.app` attributes, `__wrapped__`
and the variables a wrapping function closes over, a bounded number of steps.
"""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["find_fastapi_app"]

MAX_STEPS = 64
"""At most this many objects are looked into, so that an odd object graph cannot make the search run away."""


def find_fastapi_app(wrapped: object) -> FastAPI | None:
    """The FastAPI app `wrapped` is or calls (the one nearest the outside), or `None` when none is found."""
    pending = [wrapped]
    seen: set[int] = set()
    while pending and len(seen) < MAX_STEPS:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, FastAPI):
            return current
        inner = [getattr(current, "app", None), getattr(current, "__wrapped__", None)]
        closure = getattr(current, "__closure__", None) or ()
        for cell in closure:
            try:
                inner.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        pending.extend(candidate for candidate in inner if callable(candidate))
    return None
