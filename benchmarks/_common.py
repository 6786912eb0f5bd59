"""Helpers shared by the benchmark parts: the completion countdown, medians, interleaving."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

__all__ = ["Countdown", "Figure", "median", "rotated"]


class Countdown:
    """Counts finished tasks down to zero; the client awaits it, so the clock stops only when every task ran."""

    __slots__ = ("event", "left")

    def __init__(self) -> None:
        self.left = 0
        self.event: anyio.Event | None = None

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0 and self.event is not None:
            self.event.set()

    async def wait(self) -> None:
        if self.left:
            self.event = anyio.Event()
            await self.event.wait()
            self.event = None


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rotated(items: Sequence[str], by: int) -> list[str]:
    """`items` rotated by `by`, so that no variant always runs first (or right after a given one)."""
    by %= len(items)
    return [*items[by:], *items[:by]]


@dataclass
class Figure:
    """One reported row: a label, a value with its unit, and optionally the target it is checked against."""

    label: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)
