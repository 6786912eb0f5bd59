"""Views of the records: the records a `with tasks_recorder.capture() as new:` block added."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._dispatch import DispatchQueries
from ._records import TaskRecord

if TYPE_CHECKING:
    from .recorder import RecordingScheduler

__all__ = ["CapturedRecords"]


def last_seq(records: list[TaskRecord]) -> int:
    """The highest scheduling number among `records`, or 0."""
    return max((record.seq for record in records), default=0)


class CapturedRecords(DispatchQueries):
    """The records added while a `with tasks_recorder.capture() as new:` block ran: what `capture()` gives.

    Every query and assertion of the recorder works on it, narrowed to those records; inside
    the block the view grows as tasks are scheduled, after it the view keeps what the block added.
    """

    def __init__(self, recorder: RecordingScheduler) -> None:
        self._recorder = recorder
        self._after = last_seq(recorder.records)
        self._until: int | None = None

    def __repr__(self) -> str:
        state = "open" if self._until is None else "closed"
        return f"<CapturedRecords {state}: {len(self.records)} records>"

    @property
    def records(self) -> list[TaskRecord]:
        """The records added inside the block, in scheduling order."""
        until = self._until
        return [
            record
            for record in self._recorder.records
            if record.seq > self._after and (until is None or record.seq <= until)
        ]

    def _close(self) -> None:
        self._until = last_seq(self._recorder.records)

    def _all_records(self) -> list[TaskRecord]:
        return self._recorder.records

    def _scope_label(self) -> str:
        return " (this view: the capture() block)"

    def _install_hint(self) -> str:
        return self._recorder._install_hint()
