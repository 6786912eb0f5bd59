"""Strict mode's bookkeeping: the records no assertion matched, and the ones `ignore()` exempts.

The assertions mark what they match (`RecordQueries._mark`); the plugin reports the rest at teardown.
"""

from __future__ import annotations

from ._faults import check_spec
from ._matching import TaskSpec, matches_task
from ._records import TaskRecord

__all__ = ["StrictMode"]


class StrictMode:
    """The part of `RecordingScheduler` that knows which records strict mode reports."""

    # The recorder's state this part reads and writes (set in `RecordingScheduler.__init__`).
    _records: list[TaskRecord]
    _asserted: set[TaskRecord]
    _ignored: list[TaskSpec]

    def ignore(self, *tasks: TaskSpec) -> None:
        """Exempt the matching tasks and dispatches from strict mode: noise no assertion needs to match."""
        for task in tasks:
            check_spec("ignore()", task)
        self._ignored.extend(tasks)

    def _unasserted(self) -> list[TaskRecord]:
        """The records that no assertion matched and `ignore()` does not exempt: what strict mode reports."""
        return [
            record
            for record in self._records
            if record not in self._asserted and not any(matches_task(record, spec) for spec in self._ignored)
        ]
