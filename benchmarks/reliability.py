"""The reliability run: load, the fault matrix and every misuse, at a larger size than CI's; nothing may be lost.

    python benchmarks/reliability.py             # 20,000 requests, 3 rounds of faults; updates README.md
    python benchmarks/reliability.py --quick     # 2,000 requests, 1 round: to try the script
    python benchmarks/reliability.py --no-readme # print the figures only

It runs the scenarios of `tests/reliability/` (the CI runs them at 5,000 requests and one round),
prints a table of figures and writes it into the README's "## Reliability" section. It exits
non-zero when any check failed or any task was lost. Speeds are shown for scale only; nothing is
asserted on them.
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

from tests.reliability import _misuse, _scenarios  # noqa: E402

README = ROOT / "README.md"
HEADING = "## Reliability"


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
    fault_scenarios: int = 0
    faults: int = 0
    fault_tasks: Counter[str] = field(default_factory=Counter)
    misuses: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def tasks_lost(self) -> int:
        return self.tasks_expected - self.tasks_ran


class _Collector(logging.Handler):
    """Keeps the `fastapi_tasks` log records, for the accounting (failed, cancelled, discarded: logged?)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


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


async def _faults(figures: Figures, collector: _Collector, rounds: int, live: bool) -> None:
    results, _ = await _scenarios.fault_matrix(lambda: collector.records, live=live, rounds=rounds)
    for result in results:
        figures.fault_scenarios += 1
        figures.faults += result.faults
        figures.fault_tasks.update(result.accounting)


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


def _table(figures: Figures, settings: str) -> list[str]:
    accounted = figures.fault_tasks
    rows = [
        ("requests served under load (real uvicorn, 20 concurrent connections)", f"{figures.requests:,}"),
        ("tasks scheduled under load (one per phase per request)", f"{figures.tasks_expected:,}"),
        ("tasks that ran exactly once", f"{figures.tasks_ran - figures.ran_twice:,}"),
        ("requests that failed", f"{figures.failed_requests:,}"),
        (
            "tasks, schedulers, batches alive after the load",
            str(sum(figures.retained.values())),
        ),
        ("fault scenarios run", f"{figures.fault_scenarios:,}"),
        ("faults injected", f"{figures.faults:,}"),
        ("tasks in the fault scenarios", f"{sum(accounted.values()):,}"),
        ("… succeeded", f"{accounted['succeeded']:,}"),
        ("… failed, logged and handled by on_error", f"{accounted['failed+handled']:,}"),
        ("… cancelled and logged", f"{accounted['cancelled+logged']:,}"),
        ("… discarded (endpoint raised) and logged", f"{accounted['discarded+logged']:,}"),
        ("misuse inputs tried (each refused with its exact message)", f"{figures.misuses:,}"),
        ("failures", f"{len(figures.failures):,}"),
        ("**tasks lost**", f"**{figures.tasks_lost:,}**"),
    ]
    intro = (
        "What happens to background tasks under load, faults (tasks and `on_error` handlers that raise, "
        "sync tasks failing in worker threads, `task.cancel()` from outside, clients leaving mid-request "
        "and mid-stream, shutdown with tasks of every phase in flight, with and without a grace period) "
        "and bad input. Every task is accounted for: it succeeded, failed and was handled, or was "
        "cancelled or discarded and logged."
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
    parser.add_argument("--quick", action="store_true", help="2,000 requests and one round of faults")
    parser.add_argument("--requests", type=int, help="requests in the load run (default 20,000; 2,000 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds of the fault matrix (default 3; 1 with --quick)")
    parser.add_argument("--no-readme", action="store_true", help="print the figures, leave README.md alone")
    args = parser.parse_args()
    requests = args.requests or (2_000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)

    collector = _quiet_logs()
    figures = Figures()

    async def run() -> None:
        await _guarded(figures, "load", lambda: _load(figures, requests, 20))
        gc.collect()
        await _guarded(figures, "faults, live", lambda: _faults(figures, collector, rounds, live=True))
        await _guarded(figures, "faults, in-process", lambda: _faults(figures, collector, rounds, live=False))

    anyio.run(run)
    # The in-process fault matrix on trio too (uvicorn serves on asyncio only).
    anyio.run(
        _guarded, figures, "faults, in-process trio", lambda: _faults(figures, collector, rounds, False), backend="trio"
    )
    _misuses(figures)

    settings = f"{requests:,} requests; the fault matrix {rounds} time(s) on uvicorn and in-process on asyncio and trio"
    lines = _table(figures, settings)
    print("\n".join(lines))
    for failure in figures.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if not args.no_readme and _write_readme(lines):
        print(f"\nWritten into the {HEADING!r} section of {README}.")
    return 1 if figures.failures or figures.tasks_lost else 0


if __name__ == "__main__":
    sys.exit(main())
