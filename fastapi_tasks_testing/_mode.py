"""The recorder's modes: how a `RecordingScheduler` treats the tasks it records."""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = ["MODES", "Mode"]

Mode: TypeAlias = Literal["run", "record", "spy"]
"""How a `RecordingScheduler` treats the tasks it records: "run", "record" or "spy"."""
MODES: tuple[Mode, ...] = ("run", "record", "spy")
"""Every `Mode`, in the order error messages list them."""
