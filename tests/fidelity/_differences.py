"""The accepted differences between production and the recorder's run mode: the one table of them.

`docs/testing/fidelity.md` shows the same table (`test_fidelity.py` checks that it does). A scenario
names the kinds it is allowed to show in `Scenario.accepted`; every other difference fails it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACCEPTED_DIFFERENCES", "AcceptedDifference"]


@dataclass(frozen=True)
class AcceptedDifference:
    """One way in which run mode may differ from production, and why that is right.

    Parameters:
        fields: the outcome fields that may differ, as `fnmatch` patterns over their dotted paths.
        what: what differs, in words (the docs table's second column).
        reason: why (the docs table's third column).
    """

    fields: tuple[str, ...]
    what: str
    reason: str


ACCEPTED_DIFFERENCES: dict[str, AcceptedDifference] = {
    "concurrent-start-order": AcceptedDifference(
        fields=("notes.start_orders",),
        what="The order in which the immediate tasks of a request begin.",
        reason=(
            "Production starts them concurrently and leaves the order to the event loop (trio varies it "
            "on purpose from run to run); run mode starts them in scheduling order, so that a test can "
            "assert on it."
        ),
    ),
    "concurrent-overlap": AcceptedDifference(
        fields=("notes.most_running_at_once",),
        what="Whether the immediate tasks of a request run at the same time.",
        reason=(
            "Run mode runs tasks one at a time, so that a test is deterministic; production interleaves "
            "them at every await. Code that is only correct when tasks overlap (one task waiting for "
            "another) needs spy mode."
        ),
    ),
    "cancelled-request-immediate-tasks": AcceptedDifference(
        fields=("tasks.outlives-its-request.*", "logs.* 'outlives-its-request' *"),
        what="An immediate task still running when its request is cancelled (the client gave up).",
        reason=(
            "In production it goes on in the app's task group; run mode cancels it with the request, "
            "because each request owns its tasks, which is what lets the client call return only when "
            "every task of the request has ended. Spy mode tests production's behaviour."
        ),
    ),
}
"""Kind of difference -> which outcome fields may differ, and why."""
