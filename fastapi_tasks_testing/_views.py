"""Narrowed views of a recorder's records: a request's (`for_request()`) and a block's (`capture()`).

A view answers every query and assertion of the recorder over its own records only, while a
failure message still shows the whole timeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ._dispatch import DispatchQueries
from ._records import RequestInfo, TaskRecord

__all__ = ["CapturedRecords", "RecordSource", "RequestRecords"]


class RecordSource(Protocol):
    """What a view needs of the recorder it narrows (the recorder itself, in `recorder.py`)."""

    @property
    def records(self) -> list[TaskRecord]:
        """Every recorded task, in scheduling order."""
        ...

    def _install_hint(self) -> str:
        """What a failure message adds when the recorder is not installed as it should be."""
        ...

    def _require_evidence(self, method: str) -> None:
        """Refuse a query or an assertion of a recorder that has seen no app (see `_evidence.py`)."""
        ...


class _View(DispatchQueries):
    """A view of some of a recorder's records; a failure message shows all of them."""

    _recorder: RecordSource

    def _all_records(self) -> list[TaskRecord]:
        return self._recorder.records

    def _install_hint(self) -> str:
        return self._recorder._install_hint()

    def _require_evidence(self, method: str) -> None:
        __tracebackhide__ = True
        self._recorder._require_evidence(method)


class RequestRecords(_View):
    """The records of some requests only: what `RecordingScheduler.for_request()` returns."""

    def __init__(self, recorder: RecordSource, predicate: Callable[[RequestInfo], bool], label: str) -> None:
        self._recorder = recorder
        self._predicate = predicate
        self._label = label

    def __repr__(self) -> str:
        return f"<RequestRecords {self._label}: {len(self.records)} records>"

    @property
    def records(self) -> list[TaskRecord]:
        """The records scheduled by the matching requests."""
        return [r for r in self._recorder.records if r.request is not None and self._predicate(r.request)]

    def _scope_label(self) -> str:
        return f" (this view: {self._label})"


def last_seq(records: list[TaskRecord]) -> int:
    """The highest scheduling number among `records`, or 0."""
    return max((record.seq for record in records), default=0)


class CapturedRecords(_View):
    """The records added while a `with tasks_recorder.capture() as new:` block ran: what `capture()` gives.

    Every query and assertion of the recorder works on it, narrowed to those records; inside
    the block the view grows as tasks are scheduled, after it the view keeps what the block added.
    """

    def __init__(self, recorder: RecordSource) -> None:
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

    def _scope_label(self) -> str:
        return " (this view: the capture() block)"
