"""What checking a task's arguments at the call site would cost per task, against what scheduling costs.

Issue 11 asked whether production should bind a task's arguments to its function's signature in
`schedule()` (so that `schedule(send, "a@b.c")` for `send(to, subject)` raises `TypeError` in the
endpoint), with the signature cached per function, provided that costs at most 1 us per task.
This measures, in one process and interleaved in rounds, the cost of `Signature.bind` with the
signature cached, and of creating the task's handle (what `schedule()` does before starting it):

    python benchmarks/argument_check.py

Neither engine checks at the call site: the bind alone costs several times the 1 us budget (see
ARGUMENT_CHECK.md), so a task with wrong arguments fails when it runs, in production and under the
recorder alike.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable

from _common import median

from fastapi_tasks import Task

ROUNDS = 21
CALLS = 20_000
BUDGET_US = 1.0


def send(to: str, subject: str, body: str = "", *, urgent: bool = False) -> None:
    """A typical task: two positional arguments, a default, a keyword-only option."""


_SIGNATURES: dict[Callable[..., object], inspect.Signature] = {}


def bind_cached() -> None:
    signature = _SIGNATURES.get(send)
    if signature is None:
        signature = _SIGNATURES[send] = inspect.signature(send)
    signature.bind("a@b.c", "Hi", urgent=True)


def make_handle() -> None:
    Task(send, ("a@b.c", "Hi"), {"urgent": True})


def nothing() -> None:
    pass


def per_call_us(func: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        func()
    return (time.perf_counter() - start) / CALLS * 1e6


def main() -> None:
    variants = {"bind (signature cached)": bind_cached, "Task handle": make_handle, "empty call": nothing}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(ROUNDS):
        names = list(variants)
        names = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in names:
            samples[name].append(per_call_us(variants[name]))
    empty = median(samples["empty call"])
    bind = median(samples["bind (signature cached)"]) - empty
    handle = median(samples["Task handle"]) - empty
    print(f"{'variant':<26} {'us per task':>12}")
    print(f"{'bind (signature cached)':<26} {bind:>12.2f}")
    print(f"{'Task handle':<26} {handle:>12.2f}")
    print(f"bind / handle: {bind / handle:.2f}x; budget {BUDGET_US:g} us: {'met' if bind <= BUDGET_US else 'not met'}")
    print("decision:", "check at the call site" if bind <= BUDGET_US else "no call-site check in either engine")


if __name__ == "__main__":
    main()
