"""The reliability run: load, the fault matrix and every misuse, at a larger size than CI's; nothing may be lost.

    python benchmarks/reliability.py             # 20,000 requests twice, 3 rounds of faults; updates README.md
    python benchmarks/reliability.py --quick     # 2,000 requests twice, 1 round: to try the script
    python benchmarks/reliability.py --no-readme # print the figures only

It runs the scenarios of `tests/reliability/` (the CI runs them at 5,000 requests and one round):
a load run; the same load with 1% of the tasks ending in a `BaseException` or a foreign
cancellation; the latency of a sync endpoint idle and while 100 slow sync tasks run; the fault
matrix, issue 21's faults included (failures that cannot be logged, cancels that hit shields and
threads, schedulers built in helper tasks); a flood against `max_pending`; every misuse. It prints
a table of figures and writes it into the README's "## Reliability" section, and exits non-zero
when any check failed, any request starved or any task was lost. Speeds and latencies are
measured for scale only; nothing is asserted on them.
"""

from __future__ import annotations

import argparse
import gc
import logging
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
# The scenarios live in the test suite (`tests/` is a namespace package, `tests/reliability/` a package).
sys.path.insert(0, str(ROOT))

from tests.reliability import _faults_v3 as faults_v3  # noqa: E402
from tests.reliability import _misuse, _scenarios  # noqa: E402

README = ROOT / "README.md"
HEADING = "## Reliability"


STARVATION_TASKS = 100
STARVATION_TARGET = 2.0
"""The sync endpoint's p99 while the slow sync tasks run may be at most this many times its idle p99."""
FAULT_EVERY = 100
"""One task in 100 of the faulty load run ends with a `BaseException` or a foreign cancellation."""
FLOOD_CLIENTS = 20
FLOOD_MAX_PENDING = 20
FLOOD_TASK_SECONDS = 0.05
"""The flood: this many clients at once, against `max_pending=FLOOD_MAX_PENDING`, each task taking this long."""


@dataclass
class Figures:
    requests: int = 0
    tasks_expected: int = 0
    tasks_ran: int = 0
    ran_twice: int = 0
    failed_requests: int = 0
    retained: Counter[str] = field(default_factory=Counter)
    gc_delta: int = 0
    load_seconds: float = 0.0
    faulty_requests: int = 0
    faulty_tasks_expected: int = 0
    faulty_tasks_ran: int = 0
    faulty_failed_requests: int = 0
    faulty_injected: int = 0
    faulty_ended_failed: int = 0
    starvation: _scenarios.StarvationResult | None = None
    fault_scenarios: int = 0
    faults: int = 0
    fault_tasks: Counter[str] = field(default_factory=Counter)
    v3_tasks: Counter[str] = field(default_factory=Counter)
    flood: faults_v3.FloodResult | None = None
    misuses: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def tasks_lost(self) -> int:
        flood_lost = self.flood.lost if self.flood is not None else 0
        return self.tasks_expected - self.tasks_ran + self.faulty_tasks_expected - self.faulty_tasks_ran + flood_lost


class _Collector(logging.Handler):
    """Keeps the `fastapi_tasks` log records, for the accounting (failed, cancelled, discarded: logged?)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Without the traceback: it would keep each failed task's frames, and its handle, alive,
        # and the load runs count the handles still alive at their end.
        self.records.append(logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None}))


def _quiet_logs() -> _Collector:
    collector = _Collector()
    tasks_logger = logging.getLogger("fastapi_tasks")
    tasks_logger.setLevel(logging.DEBUG)
    tasks_logger.addHandler(collector)
    tasks_logger.propagate = False
    # uvicorn logs each endpoint that raises on purpose, with a traceback: keep stderr readable.
    logging.getLogger("uvicorn").addHandler(logging.NullHandler())
    logging.getLogger("uvicorn").propagate = False
    return collector


async def _guarded(figures: Figures, label: str, step: Callable[[], Awaitable[None]]) -> None:
    try:
        await step()
    except Exception as exc:
        figures.failures.append(f"{label}: {type(exc).__name__}: {exc}")
        traceback.print_exc()


async def _load(figures: Figures, requests: int, concurrency: int) -> None:
    result = await _scenarios.run_load(requests, concurrency=concurrency)
    figures.load_seconds += result.seconds
    figures.requests += result.requests
    figures.tasks_expected += result.tasks_expected
    figures.tasks_ran += result.tasks_ran
    figures.ran_twice += result.ran_twice
    figures.failed_requests += result.failed_requests
    figures.retained.update(result.retained)
    figures.gc_delta = max(figures.gc_delta, result.gc_objects_after - result.gc_objects_before)
    if result.tasks_lost or result.ran_twice or result.failed_requests or result.retained:
        figures.failures.append(f"load of {requests} requests: {result}")


async def _faulty_load(figures: Figures, requests: int, concurrency: int) -> None:
    result = await _scenarios.run_load(requests, concurrency=concurrency, fault_every=FAULT_EVERY)
    figures.faulty_requests += result.requests
    figures.faulty_tasks_expected += result.tasks_expected
    figures.faulty_tasks_ran += result.tasks_ran
    figures.faulty_failed_requests += result.failed_requests
    figures.faulty_injected += sum(result.faulty.values())
    figures.faulty_ended_failed += result.faulty["failed"]
    if (
        result.tasks_lost
        or result.ran_twice
        or result.failed_requests
        or result.retained
        or set(result.faulty) != {"failed"}
    ):
        figures.failures.append(f"load of {requests} requests with faulty tasks: {result}")


async def _starvation(figures: Figures, rounds: int) -> None:
    result = await _scenarios.run_starvation(tasks=STARVATION_TASKS, rounds=rounds)
    figures.starvation = result
    if result.starved:
        figures.failures.append(
            f"starvation: {result.starved} request(s) to a sync endpoint got no answer within 3 s "
            f"while {result.running} slow sync tasks ran"
        )


async def _faults(figures: Figures, collector: _Collector, rounds: int, live: bool) -> None:
    results, _ = await _scenarios.fault_matrix(lambda: collector.records, live=live, rounds=rounds)
    for result in results:
        figures.fault_scenarios += 1
        figures.faults += result.faults
        figures.fault_tasks.update(result.accounting)


_V3_ROWS = {
    "unloggable failures": "unloggable",
    "cancel hits shields and threads": "held",
    "shutdown hits shields and threads": "held",
    "helper-task schedulers": "helpers",
}


async def _faults_v3(figures: Figures, collector: _Collector, rounds: int, live: bool) -> None:
    for result in await faults_v3.v3_matrix(lambda: collector.records, live=live, rounds=rounds):
        figures.fault_scenarios += 1
        figures.faults += result.faults
        figures.fault_tasks.update(result.accounting)
        # The scenario's own tasks, without the probes that follow each fault (3 tasks each).
        figures.v3_tasks[_V3_ROWS[result.scenario]] += sum(result.accounting.values()) - 3 * result.probes


async def _flood(figures: Figures, collector: _Collector, requests: int) -> None:
    result = await faults_v3.run_flood(
        lambda: collector.records,
        live=True,
        requests=requests,
        concurrency=FLOOD_CLIENTS,
        max_pending=FLOOD_MAX_PENDING,
        seconds=FLOOD_TASK_SECONDS,
    )
    figures.flood = result
    if result.lost or result.other or result.most_running > FLOOD_MAX_PENDING:
        figures.failures.append(f"flood against max_pending: {result}")


def _misuses(figures: Figures) -> None:
    for misuse in _misuse.CALLS:
        figures.misuses += 1
        trigger, message = misuse.case()
        try:
            trigger()
        except misuse.error as exc:
            if str(exc) != message:
                figures.failures.append(f"misuse {misuse.id!r}: message {str(exc)!r}, expected {message!r}")
        except Exception as exc:
            figures.failures.append(f"misuse {misuse.id!r}: raised {type(exc).__name__}: {exc}")
        else:
            figures.failures.append(f"misuse {misuse.id!r}: nothing raised")
    for session in _misuse.SESSIONS:
        figures.misuses += 1
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "test_misuse.py").write_text(session.source)
            (Path(tmp) / "pytest.ini").write_text(f"[pytest]\n{session.ini}\n")
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "test_misuse.py"],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
            )
        if not re.search(rf"^E\s+{re.escape(session.line)}$", run.stdout, re.MULTILINE):
            figures.failures.append(f"plugin misuse {session.id!r}: no line {session.line!r} in:\n{run.stdout}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _starvation_rows(result: _scenarios.StarvationResult | None) -> list[tuple[str, str]]:
    if result is None:
        return [("sync endpoint beside slow sync tasks", "not measured (see failures)")]
    pct = result.percentile
    idle = f"{_ms(pct(result.idle, 50))} / {_ms(pct(result.idle, 99))}"
    label = f"… while {result.tasks} slow sync tasks run ({result.running} at once), p50 / p99"
    if not result.busy:
        return [("sync `def` endpoint latency, idle, p50 / p99", idle), (label, "no answer within 3 s")]
    ratio = result.p99_ratio
    met = "met" if ratio <= STARVATION_TARGET and not result.starved else "**missed**"
    starved = f"; {result.starved:,} got no answer within 3 s" if result.starved else ""
    return [
        ("sync `def` endpoint latency, idle, p50 / p99", idle),
        (label, f"{_ms(pct(result.busy, 50))} / {_ms(pct(result.busy, 99))}{starved}"),
        (f"… p99 while they run over idle p99 (target: within {STARVATION_TARGET:g}x)", f"{ratio:.2f}x, {met}"),
    ]


def _flood_rows(flood: faults_v3.FloodResult | None) -> list[tuple[str, str]]:
    label = (
        f"flood: requests from {FLOOD_CLIENTS} clients at once, each scheduling a task of "
        f"{FLOOD_TASK_SECONDS * 1000:g} ms, against `max_pending={FLOOD_MAX_PENDING}` (real uvicorn)"
    )
    if flood is None:
        return [(label, "not measured (see failures)")]
    return [
        (label, f"{flood.requests:,}"),
        ("… accepted (200), their tasks run", f"{flood.accepted:,}"),
        ("… refused with 503 (`BacklogFullError`), no task made", f"{flood.refused:,}"),
        ("… most tasks running at once", f"{flood.most_running:,}"),
        ("… accepted tasks lost", f"{flood.lost:,}"),
    ]


def _table(figures: Figures, settings: str) -> list[str]:
    accounted = figures.fault_tasks
    v3 = figures.v3_tasks
    rows = [
        ("requests served under load (real uvicorn, 20 concurrent connections)", f"{figures.requests:,}"),
        ("tasks scheduled under load (one per phase per request)", f"{figures.tasks_expected:,}"),
        ("tasks that ran exactly once", f"{figures.tasks_ran - figures.ran_twice:,}"),
        ("requests that failed", f"{figures.failed_requests:,}"),
        (
            "tasks, schedulers, batches alive after the load",
            str(sum(figures.retained.values())),
        ),
        (
            f"requests served under the same load with 1 task in {FAULT_EVERY} ending in a "
            "`BaseException` or a foreign cancellation",
            f"{figures.faulty_requests:,}",
        ),
        ("… tasks that ended so (failed, logged)", f"{figures.faulty_ended_failed:,} of {figures.faulty_injected:,}"),
        ("… other tasks that ran", f"{figures.faulty_tasks_ran - figures.faulty_injected:,}"),
        ("… requests that failed", f"{figures.faulty_failed_requests:,}"),
        *_starvation_rows(figures.starvation),
        ("fault scenarios run", f"{figures.fault_scenarios:,}"),
        ("faults injected", f"{figures.faults:,}"),
        ("tasks in the fault scenarios", f"{sum(accounted.values()):,}"),
        ("… succeeded", f"{accounted['succeeded']:,}"),
        ("… failed, logged and handled by on_error", f"{accounted['failed+handled']:,}"),
        ("… failed with a `BaseException` and logged", f"{accounted['failed+logged']:,}"),
        ("… cancelled and logged", f"{accounted['cancelled+logged']:,}"),
        ("… discarded (endpoint raised) and logged", f"{accounted['discarded+logged']:,}"),
        (
            "… among them, tasks whose failure could not be logged as it was (`str()` raising, a raising "
            "filter, `RecursionError` while logging): failed, logged and handled",
            f"{v3['unloggable']:,}",
        ),
        (
            "… among them, tasks cancelled (`task.cancel()`, shutdown) in a shielded section, a thread wait "
            "or a sync `on_error`: each ended only once it was over",
            f"{v3['held']:,}",
        ),
        (
            "… among them, tasks of schedulers built in helper tasks (task group, `to_thread`, "
            "`asyncio.gather`) of a background task: each on the app's runtime",
            f"{v3['helpers']:,}",
        ),
        *_flood_rows(figures.flood),
        ("misuse inputs tried (each refused with its exact message)", f"{figures.misuses:,}"),
        ("failures", f"{len(figures.failures):,}"),
        ("**tasks lost**", f"**{figures.tasks_lost:,}**"),
    ]
    intro = (
        "What happens to background tasks under load, faults (tasks and `on_error` handlers that raise, "
        "also `BaseException`s that are not `Exception`s and, on asyncio, cancellations that did not come "
        "from us; sync tasks failing in worker threads, failures that cannot be logged as they are, "
        "`task.cancel()` from outside, also on tasks in shielded sections, thread waits and sync "
        "`on_error` handlers, schedulers built in helper tasks of a background task, clients leaving "
        "mid-request and mid-stream, shutdown with tasks of every phase in flight, with and without a "
        "grace period), slow sync tasks beside sync endpoints, a flood of clients against `max_pending`, "
        "and bad input. Every task is accounted for: it succeeded, failed and was logged (and handled, "
        "for an `Exception`), or was cancelled or discarded and logged; a task refused by `max_pending` "
        "was never made, and its client got a 503."
    )
    rate = figures.requests / figures.load_seconds if figures.load_seconds else 0.0
    note = (
        f"Produced by `python benchmarks/reliability.py` ({settings}; Python {platform.python_version()}). "
        f"Load ran at about {rate:,.0f} requests/s with client and server in one process, for scale only: "
        "nothing asserts a speed. CI runs the same checks at 5,000 requests (`tests/reliability/`), and "
        "`bash scripts/flaky.sh N` runs the whole test suite N times in random order."
    )
    return [
        *textwrap.wrap(intro, 100, break_on_hyphens=False),
        "",
        "| figure | value |",
        "| --- | ---: |",
        *(f"| {label} | {value} |" for label, value in rows),
        "",
        *textwrap.wrap(note, 100, break_on_hyphens=False),
    ]


def _write_readme(lines: list[str]) -> bool:
    text = README.read_text(encoding="utf-8")  # read right before writing: README.md has other authors
    match = re.search(rf"^{re.escape(HEADING)}[ \t]*\n", text, re.MULTILINE)
    if match is None:
        print(f"README.md has no {HEADING!r} section: not written.", file=sys.stderr)
        return False
    after = re.search(r"^## ", text[match.end() :], re.MULTILINE)
    end = match.end() + after.start() if after else len(text)
    section = "\n" + "\n".join(lines) + "\n" + ("\n" if after else "")
    README.write_text(text[: match.end()] + section + text[end:], encoding="utf-8")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="2,000 requests, fewer latency rounds, one round of faults"
    )
    parser.add_argument("--requests", type=int, help="requests in each load run (default 20,000; 2,000 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds of the fault matrix (default 3; 1 with --quick)")
    parser.add_argument(
        "--latency-rounds",
        type=int,
        help="rounds of 50 idle and 50 busy requests to the sync endpoint (default 40; 6 with --quick)",
    )
    parser.add_argument(
        "--flood-requests",
        type=int,
        help="requests in the flood against max_pending (default 5,000; 1,000 with --quick)",
    )
    parser.add_argument("--no-readme", action="store_true", help="print the figures, leave README.md alone")
    args = parser.parse_args()
    requests = args.requests or (2_000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    latency_rounds = args.latency_rounds or (6 if args.quick else 40)
    flood_requests = args.flood_requests or (1_000 if args.quick else 5_000)

    collector = _quiet_logs()
    figures = Figures()

    async def run() -> None:
        await _guarded(figures, "load", lambda: _load(figures, requests, 20))
        gc.collect()
        await _guarded(figures, "load with faulty tasks", lambda: _faulty_load(figures, requests, 20))
        gc.collect()
        await _guarded(figures, "starvation", lambda: _starvation(figures, latency_rounds))
        gc.collect()
        await _guarded(figures, "faults, live", lambda: _faults(figures, collector, rounds, live=True))
        await _guarded(figures, "faults, in-process", lambda: _faults(figures, collector, rounds, live=False))
        await _guarded(figures, "issue 21 faults, live", lambda: _faults_v3(figures, collector, rounds, live=True))
        await _guarded(
            figures, "issue 21 faults, in-process", lambda: _faults_v3(figures, collector, rounds, live=False)
        )
        gc.collect()
        await _guarded(figures, "flood", lambda: _flood(figures, collector, flood_requests))

    anyio.run(run)
    # The in-process fault matrix on trio too (uvicorn serves on asyncio only).
    anyio.run(
        _guarded, figures, "faults, in-process trio", lambda: _faults(figures, collector, rounds, False), backend="trio"
    )
    anyio.run(
        _guarded,
        figures,
        "issue 21 faults, in-process trio",
        lambda: _faults_v3(figures, collector, rounds, False),
        backend="trio",
    )
    _misuses(figures)

    settings = (
        f"{requests:,} requests per load run; {latency_rounds} rounds of 50 idle and 50 busy requests to the "
        f"sync endpoint; the fault matrix {rounds} time(s) on uvicorn and in-process on asyncio and trio; "
        f"a flood of {flood_requests:,} requests"
    )
    lines = _table(figures, settings)
    print("\n".join(lines))
    for failure in figures.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if not args.no_readme and _write_readme(lines):
        print(f"\nWritten into the {HEADING!r} section of {README}.")
    return 1 if figures.failures or figures.tasks_lost else 0


if __name__ == "__main__":
    sys.exit(main())
