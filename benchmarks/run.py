"""Benchmarks of fastapi-tasks against anyio, asyncio, FastAPI's BackgroundTasks and fastapi-tasks 0.1.0.

    python benchmarks/run.py            # the full run; writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick    # a short run, to try the script (its figures are rougher)
    python benchmarks/run.py --profile t3   # print a cProfile of a variant and exit

Everything is measured in one process and one run (the toolkit suites in subprocesses started by
it), as ratios between variants measured in the same round. Variants are interleaved in chunks
of about 50 requests, each round in a rotated order, and a figure is the median of the per-round
ratios: on a shared machine, absolute times drift by tens of percent while these ratios hold.
A full garbage collection runs between sections and before every measured chunk, outside its clock.
Not part of the test run; no test asserts a timing.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import os
import platform
import pprint
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import anyio

# Run as a script, this directory is on sys.path: the helper modules import as top-level modules.
from _common import median, rotated
from _inprocess import EAGER, Bench
from _legacy import load_legacy
from _suites import KINDS, POLL_INTERVAL, run_suite, write_suites

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@dataclass(frozen=True)
class Settings:
    """How much of each measurement a run makes.

    `recorder_growth_warmup` is as long as a measured round, in both runs: after a shorter one the
    client's caches and the interpreter's free lists are still filling, a few KB in all, which over
    1,000 tests is a few bytes per test either way and would hide what the recorder itself keeps.
    """

    request_rounds: int
    chunk: int
    many_rounds: int
    many_tasks: int
    pending_rounds: int
    pending_tasks: int
    growth_requests: int
    growth_warmup: int
    recorder_rounds: int
    recorder_growth_tests: int
    recorder_growth_warmup: int
    recorder_growth_rounds: int
    suite_tests: int
    suite_rounds: int
    suite_task_io: tuple[float, ...]


FULL = Settings(
    request_rounds=120,
    chunk=50,
    many_rounds=15,
    many_tasks=10_000,
    pending_rounds=7,
    pending_tasks=5_000,
    growth_requests=20_000,
    growth_warmup=5_000,
    recorder_rounds=40,
    recorder_growth_tests=1_000,
    recorder_growth_warmup=1_000,
    recorder_growth_rounds=5,
    suite_tests=500,
    suite_rounds=3,
    suite_task_io=(0.0, 0.001, 0.02),
)
QUICK = Settings(
    request_rounds=12,
    chunk=50,
    many_rounds=3,
    many_tasks=10_000,
    pending_rounds=3,
    pending_tasks=2_000,
    growth_requests=2_000,
    growth_warmup=500,
    recorder_rounds=8,
    recorder_growth_tests=1_000,
    recorder_growth_warmup=1_000,
    recorder_growth_rounds=3,
    suite_tests=100,
    suite_rounds=1,
    suite_task_io=(0.0, 0.001),
)

# Issue 15's targets.
T_PARAM = 1.10  # `Tasks` parameter, no task: x the bare endpoint
T_THREE = 1.25  # 3 tasks, one per phase: x the bare endpoint ...
T_THREE_BG = 1.15  # ... and x FastAPI's BackgroundTasks with 3 tasks
T_TASK = 0.5  # one immediate task, scheduled and run: x anyio's start_soon in the same run
T_PENDING_BYTES = 2048  # memory per pending task on asyncio, absolute
T_RECORDER_MS = 0.3  # the recorder's own overhead per test (pytest suite, and in process)
# "No growth": less than one byte per request (or per recorder test), i.e. no object kept for each.
GROWTH_BYTES_PER_REQUEST = 1.0
# Issue 6's, still tracked: the recorder's suites against polling (and, above, no growth per request).
T_SUITE = 10.0
# The recorder suite's own time per test beyond the baseline suite, by task I/O, as the previous engine measured it
# (benchmarks/RESULTS.md at commit 6267cc0): it ran a request's tasks one at a time, in one worker of the request's,
# before the client's call returned. Issue 20 replaced it with production's spawn: the tasks run concurrently.
PREVIOUS_COMMIT = "6267cc0"
PREVIOUS_OVERHEAD = {0.0: 0.69e-3, 0.001: 4.95e-3, 0.02: 64.17e-3}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the environment ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> list[tuple[str, str]]:
    versions = []
    for name in ("fastapi-tasks", "fastapi", "starlette", "anyio", "httpx", "asgi-lifespan", "pytest"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{_cpu_model()}, {os.cpu_count()} cores, {platform.platform()}"),
        ("load average at start", ", ".join(f"{x:.2f}" for x in load)),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("packages", ", ".join(versions)),
        ("commit", _git("rev-parse", "--short", "HEAD") + dirty),
        ("event loop", "asyncio (anyio backend), in-process httpx.AsyncClient + ASGITransport, asgi_lifespan"),
    ]


# --- the run -----------------------------------------------------------------------------------


PARTS = ("requests", "tasks", "pending", "growth", "recorder", "suites")


async def measure_in_process(settings: Settings, legacy: Any, results: dict[str, Any], parts: tuple[str, ...]) -> None:
    async with Bench(legacy) as bench:
        await bench.check()
        # Before each section, collect what the previous one left, so that it does not land on this one.
        if "requests" in parts:
            log("per request")
            gc.collect()
            results["requests"] = await bench.per_request(settings.request_rounds, settings.chunk)
        if "tasks" in parts:
            log("per task")
            gc.collect()
            results["tasks"] = await bench.per_task(settings.many_rounds, settings.many_tasks)
        if "pending" in parts:
            log("memory per pending task")
            gc.collect()
            results["pending"] = await bench.pending_memory(settings.pending_rounds, settings.pending_tasks)
        if "growth" in parts:
            log(f"memory after {settings.growth_requests} requests")
            results["growth"] = {}
            for key in ("bare", "t0", "t3"):
                gc.collect()
                results["growth"][key] = await bench.growth(key, settings.growth_requests, settings.growth_warmup)
        if "recorder" in parts:
            log("recorder overhead, in process")
            gc.collect()
            results["recorder_inproc"] = await bench.recorder_overhead(settings.recorder_rounds, settings.chunk)
            log(f"memory after {settings.recorder_growth_tests} recorder tests")
            gc.collect()
            results["recorder_growth"] = await bench.recorder_growth(
                settings.recorder_growth_tests, settings.recorder_growth_warmup, settings.recorder_growth_rounds
            )
        results["profiles"] = {}
        if parts == PARTS:
            for key in unmet_profiles(results):
                log(f"profile of {key}")
                results["profiles"][key] = await bench.profile(key, 2000 if key != "many" else settings.many_tasks)


def unmet_profiles(results: dict[str, Any]) -> list[str]:
    requests, tasks = results["requests"], results["tasks"]
    keys = []
    if requests["t0"]["ratio"] > T_PARAM:
        keys.append("t0")
    for key in ("t3", "t3e"):
        if key in requests and (requests[key]["ratio"] > T_THREE or requests[key]["vs_bg3"] > T_THREE_BG):
            keys.append(key)
    if tasks["ours"]["ratio"] > T_TASK:
        keys.append("many")
    return keys


def measure_suites(settings: Settings, tmpdir: str) -> dict[float, Any]:
    out: dict[float, Any] = {}
    for task_io in settings.suite_task_io:
        log(f"generated suites, {settings.suite_tests} tests each, task I/O {task_io * 1000:g} ms")
        dirs = write_suites(os.path.join(tmpdir, f"suites-{task_io}"), settings.suite_tests, task_io)
        runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        for round_no in range(settings.suite_rounds):
            for kind in rotated(list(KINDS), round_no):
                runs[kind].append(run_suite(dirs[kind], settings.suite_tests))
        figures: dict[str, Any] = {}
        for kind in KINDS:
            figures[kind] = {
                "wall": median([r["wall"] for r in runs[kind]]),
                "loop": median([r["loop"] for r in runs[kind]]),
                "cpu": median([r["cpu"] for r in runs[kind]]),
            }
        for kind in ("recorder", "record_mode"):
            figures[kind]["speedup_loop"] = median(
                [p["loop"] / r["loop"] for p, r in zip(runs["polling"], runs[kind], strict=True)]
            )
            figures[kind]["speedup_wall"] = median(
                [p["wall"] / r["wall"] for p, r in zip(runs["polling"], runs[kind], strict=True)]
            )
            figures[kind]["overhead"] = median(
                [r["loop"] - b["loop"] for r, b in zip(runs[kind], runs["baseline"], strict=True)]
            )
            figures[kind]["overhead_cpu"] = median(
                [r["cpu"] - b["cpu"] for r, b in zip(runs[kind], runs["baseline"], strict=True)]
            )
        out[task_io] = figures
    return out


# --- the report --------------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _yes(met: bool) -> str:
    return "**met**" if met else "**not met**"


def _eager_note() -> str:
    """Whether this run measured `eager_start=True`: only Python 3.12+ has it (add_tasks raises before)."""
    if EAGER:
        return "measured: an app with `add_tasks(app, eager_start=True)` (its rows say *eager_start*)"
    return (
        f"not measured on this Python ({platform.python_version()}): `add_tasks(app, eager_start=True)` needs "
        "Python 3.12+; run the script on 3.12 or later for its rows"
    )


def target_rows(results: dict[str, Any]) -> tuple[list[tuple[str, str, bool]], list[tuple[str, str, bool]]]:
    """Issue 15's targets, then issue 6's that are still tracked: (label, measured, met) each."""
    requests, tasks, pending, growth = results["requests"], results["tasks"], results["pending"], results["growth"]
    suites, inproc, rec_growth = results["suites"], results["recorder_inproc"], results["recorder_growth"]
    t0 = requests["t0"]["ratio"]
    issue15: list[tuple[str, str, bool]] = [
        (f"`Tasks` parameter, no task <= {T_PARAM:.2f}x bare", f"{t0:.3f}x", t0 <= T_PARAM)
    ]
    for key, how in (("t3", ""), ("t3e", ", `eager_start=True`")):
        if key not in requests:
            continue
        ratio, vs_bg = requests[key]["ratio"], requests[key]["vs_bg3"]
        issue15 += [
            (f"3 tasks (one per phase){how} <= {T_THREE:.2f}x bare", f"{ratio:.3f}x", ratio <= T_THREE),
            (
                f"3 tasks{how} <= {T_THREE_BG:.2f}x `BackgroundTasks` with 3 tasks",
                f"{vs_bg:.3f}x",
                vs_bg <= T_THREE_BG,
            ),
        ]
    for key, how in (("ours", ""), ("eager", " with `eager_start=True`")):
        if key in tasks:
            ratio = tasks[key]["ratio"]
            issue15.append(
                (
                    f"scheduling one immediate task{how} (scheduled and run) <= {T_TASK:.1f}x anyio's `start_soon`",
                    f"{ratio:.3f}x",
                    ratio <= T_TASK,
                )
            )
    for key, how in (("ours", ""), ("eager", ", `eager_start=True`")):
        if key in pending:
            size = pending[key]["bytes"]
            issue15.append(
                (
                    f"memory per pending task (asyncio{how}) <= {T_PENDING_BYTES:,} B",
                    f"{size:,.0f} B",
                    size <= T_PENDING_BYTES,
                )
            )
    zero_io = suites.get(0.0) or next(iter(suites.values()))
    overhead = zero_io["recorder"]["overhead"]
    overhead_cpu = zero_io["recorder"]["overhead_cpu"]
    tests, rec_net = rec_growth["tests"], rec_growth["net"]
    issue15 += [
        (
            f"recorder's own overhead per test < {T_RECORDER_MS:g} ms (pytest suite)",
            _ms(overhead),
            overhead * 1e3 < T_RECORDER_MS,
        ),
        (
            f"recorder's own overhead per test < {T_RECORDER_MS:g} ms (pytest suite, CPU time)",
            _ms(overhead_cpu),
            overhead_cpu * 1e3 < T_RECORDER_MS,
        ),
        (
            f"recorder's own overhead per test < {T_RECORDER_MS:g} ms (in process)",
            _ms(inproc["overhead"]),
            inproc["overhead"] * 1e3 < T_RECORDER_MS,
        ),
        (
            f"recorder: no growth over {tests:,} tests, net of the same requests without it",
            f"{rec_net:+,} B ({rec_net / tests:+.2f} B/test)",
            rec_net / tests < GROWTH_BYTES_PER_REQUEST,
        ),
    ]

    issue6: list[tuple[str, str, bool]] = []
    for key in ("t0", "t3"):
        g = growth[key]
        net = g["growth"] - growth["bare"]["growth"]
        issue6.append(
            (
                f"no growth after {g['requests']:,} requests ({'no task' if key == 't0' else '3 tasks'}), "
                "net of the bare endpoint's",
                f"{net:+,} B ({net / g['requests']:+.2f} B/request)",
                net / g["requests"] < GROWTH_BYTES_PER_REQUEST,
            )
        )
    for task_io, figures in suites.items():
        for kind, label in (("recorder", "default mode"), ("record_mode", "record mode")):
            speedup = figures[kind]["speedup_loop"]
            issue6.append(
                (
                    f"recorder suite ({label}) >= {T_SUITE:.0f}x faster than polling, "
                    f"tasks doing {task_io * 1000:g} ms I/O",
                    f"{speedup:.2f}x",
                    speedup >= T_SUITE,
                )
            )
    return issue15, issue6


OTHER_RESULTS = (
    "The other measurements have files of their own, which this script leaves alone: "
    "[OUTAGE.md](OUTAGE.md) (`benchmarks/outage.py`, the broker outage), "
    "[ARGUMENT_CHECK.md](ARGUMENT_CHECK.md) (`benchmarks/argument_check.py`) and "
    "[LAYOUT_MOVE.md](LAYOUT_MOVE.md) (the layout move of issue 19, before and after). "
    "The fault matrix of `benchmarks/reliability.py` is in the README."
)


def report(
    settings: Settings, quick: bool, env: list[tuple[str, str]], legacy_note: str, results: dict[str, Any]
) -> str:
    requests, tasks, pending, growth = results["requests"], results["tasks"], results["pending"], results["growth"]
    suites, inproc, rec_growth = results["suites"], results["recorder_inproc"], results["recorder_growth"]
    lines = ["# fastapi-tasks benchmarks", ""]
    lines.append(
        "Written by `python benchmarks/run.py`"
        + (" **--quick** (a short run: rougher figures)" if quick else "")
        + ". Do not edit by hand; run the script again."
    )
    lines += ["", OTHER_RESULTS]
    lines += ["", "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in env]
    lines.append(f"| fastapi-tasks 0.1.0 | {legacy_note} |")
    lines.append(f"| eager start | {_eager_note()} |")
    lines += [
        "",
        "Method: everything runs in one process and one run; ratios are between variants measured in the same",
        f"round. Per-request variants are interleaved in chunks of {settings.chunk} requests, each round in a rotated",
        "order, and each figure is the median of the per-round ratios (absolute times: median of rounds; they drift",
        "with the machine's load, the ratios much less). A request's clock stops only when all of its tasks have run:",
        "each task ticks a countdown that the client awaits. Every task is the same `async def` that only ticks it.",
        "`gc.collect()` runs before every chunk of every per-request variant and before every round of every",
        "per-task variant (outside the timed region), and between the sections, so that a garbage collection left",
        "pending by one variant or section does not land on the next one.",
        "",
        "## Targets",
        "",
        "| target (issue 15) | measured | |",
        "| --- | --- | --- |",
    ]
    issue15, issue6 = target_rows(results)
    lines += [f"| {label} | {value} | {_yes(met)} |" for label, value, met in issue15]
    lines += [
        "",
        "Earlier targets (issue 6), still tracked:",
        "",
        "| target (issue 6) | measured | |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {label} | {value} | {_yes(met)} |" for label, value, met in issue6]
    results["targets"] = issue15 + issue6

    lines += [
        "",
        "## Per request",
        "",
        f"{settings.request_rounds} rounds of {settings.chunk} requests per variant.",
        "",
        "| variant | time per request | ratio to bare |",
        "| --- | --- | --- |",
    ]
    labels = {
        "bare": "bare endpoint (plain FastAPI app)",
        "bare_mw": "bare endpoint, app with `add_tasks` (its middleware)",
        "dep": "reference: one plain `async def` dependency",
        "dep_mw": "reference: one plain `async def` dependency, app with `add_tasks`",
        "gendep": "reference: one async generator dependency",
        "ss3": "reference: `request.state.fastapi_tasks_tg.start_soon(work)` x 3",
        "ct3": "reference: `loop.create_task(work())` x 3",
        "t0": "`Tasks` parameter, no task",
        "t3": "`Tasks`, 3 tasks (one per phase)",
        "t3e": "`Tasks`, 3 tasks (one per phase), `eager_start=True`",
        "bg3": "FastAPI `BackgroundTasks`, 3 tasks",
        "old0": "fastapi-tasks 0.1.0, no task",
        "old3": "fastapi-tasks 0.1.0, 3 tasks",
    }
    for key, label in labels.items():
        if key in requests:
            r = requests[key]
            lines.append(f"| {label} | {_us(r['seconds'])} | {r['ratio']:.3f}x |")
    against = [
        ("`start_soon` x 3", "ss3"),
        ("`loop.create_task` x 3", "ct3"),
        ("fastapi-tasks", "t3"),
        ("fastapi-tasks with `eager_start=True`", "t3e"),
        ("0.1.0", "old3"),
    ]
    lines += [
        "",
        "3 tasks against BackgroundTasks with 3 tasks: "
        + ", ".join(f"{label} {requests[key]['vs_bg3']:.3f}x" for label, key in against if key in requests)
        + ".",
    ]
    if not EAGER:
        lines += ["", f"`eager_start=True`: {_eager_note()}."]

    lines += [
        "",
        "## Per task",
        "",
        f"{settings.many_tasks:,} immediate tasks scheduled in one request; {settings.many_rounds} rounds.",
        "*Scheduled and run*: from sending the request until the last task has run, divided by the number of",
        "tasks. *Scheduling only*: the endpoint's loop of `schedule()` calls. The floor is",
        "`task_group.start_soon(work)` on the same task group, in the same kind of request; the event loop's own",
        "`loop.create_task(work())` (each task kept in a set until done, as asyncio requires) is measured against",
        "the same floor."
        + (
            " With `eager_start=True` a task runs up to its first suspension inside `schedule()`, so its"
            " *scheduling only* includes running the body (here all of it: `work()` never suspends)."
            if EAGER
            else f" `eager_start=True`: {_eager_note()}."
        ),
        "",
        "| variant | scheduled and run, per task | ratio to floor | scheduling only, per task | ratio to floor |",
        "| --- | --- | --- | --- | --- |",
    ]
    task_labels = {
        "floor": "floor: anyio `start_soon`",
        "create_task": "asyncio `loop.create_task`",
        "ours": "fastapi-tasks `tasks.schedule`",
        "eager": "fastapi-tasks `tasks.schedule`, `eager_start=True`",
        "bg": "FastAPI `BackgroundTasks.add_task` (run one after another)",
        "old": "fastapi-tasks 0.1.0 `tasks.schedule`",
    }
    for key, label in task_labels.items():
        if key in tasks:
            t = tasks[key]
            lines.append(
                f"| {label} | {_us(t['total'])} | {t['ratio']:.3f}x "
                f"| {_us(t['schedule'])} | {t['schedule_ratio']:.3f}x |"
            )

    lines += [
        "",
        "## Memory",
        "",
        f"Per pending task: {settings.pending_tasks:,} tasks started in one request that wait on an event, traced with",
        f"tracemalloc once all are running (gc off during the request); median of {settings.pending_rounds} rounds.",
        "Each task's own coroutine frame (the same `async def` blocked on the same event) is in every row.",
        "",
        "| variant | bytes per pending task | above the floor (`start_soon`) | above `loop.create_task` |",
        "| --- | --- | --- | --- |",
    ]
    mem_labels = {
        "floor": "floor: anyio `start_soon`",
        "create_task": "asyncio `loop.create_task`",
        "ours": "fastapi-tasks",
        "eager": "fastapi-tasks, `eager_start=True`",
        "old": "fastapi-tasks 0.1.0",
    }
    for key, label in mem_labels.items():
        if key in pending:
            mem = pending[key]
            lines.append(f"| {label} | {mem['bytes']:,.0f} B | {mem['above']:+,.0f} B | {mem['above_ct']:+,.0f} B |")
    lines += [
        "",
        f"After many requests: {settings.growth_warmup:,} warm-up requests, then the traced memory (after",
        "`gc.collect()`) at the baseline, half-way and at the end. The client's own growth shows in the bare",
        "endpoint's row (httpx and `re` keep a little per request under tracemalloc); *net* is a variant's growth",
        "minus that.",
        "",
        "| variant | requests | half-way | end | per request | net of bare, per request |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key in ("bare", "t0", "t3"):
        g = growth[key]
        net = g["growth"] - growth["bare"]["growth"]
        lines.append(
            f"| {labels[key]} | {g['requests']:,} | {g['middle'] - g['base']:+,} B | {g['growth']:+,} B "
            f"| {g['growth'] / g['requests']:+.2f} B | {net / g['requests']:+.2f} B |"
        )
    for key in ("bare", "t0", "t3"):
        g = growth[key]
        if g["top"] and g["growth"] / g["requests"] >= GROWTH_BYTES_PER_REQUEST:
            lines += ["", f"Largest increases, {labels[key]}:", "", "```", *g["top"], "```"]

    lines += [
        "",
        "## Testing toolkit",
        "",
        f"Generated suites of {settings.suite_tests} tests, each run with pytest in a subprocess, interleaved,",
        f"median of {settings.suite_rounds} round(s). Every test sends `POST /signup/{{i}}` through a session-wide",
        "`TestClient` (lifespan running); the endpoint schedules 3 tasks (one per phase) that each wait the",
        "given simulated I/O time and then record their side effect.",
        "",
        "- *baseline*: the request and its response assertion only, nothing about the tasks;",
        "- *recorder*: the same, then `tasks_recorder.assert_scheduled_once(...)` for each of the 3 tasks",
        "  (default mode: the tasks run concurrently, started as in production, and the client's call returns",
        "  once they have ended);",
        '- *recorder, record mode*: the same with `@pytest.mark.tasks_recorder(mode="record")` (tasks recorded,',
        "  not run);",
        "- *polling*: the real scheduler; the test checks the side effects, sleeping "
        f"{POLL_INTERVAL * 1000:g} ms between",
        "  checks (up to 5 s).",
        "",
        "*Per test* is the pytest run loop (after collection) divided by the tests; *wall* includes interpreter",
        "start-up and collection; *CPU* is the CPU time of the run loop (every thread of the process), which",
        "does not count what other processes of a loaded machine take.",
        "",
        "| task I/O | suite | per test | wall per test | CPU per test | polling / this (per test) "
        "| own overhead vs baseline | own CPU time vs baseline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    suite_labels = {
        "baseline": "baseline",
        "recorder": "recorder",
        "record_mode": "recorder, record mode",
        "polling": "polling",
    }
    for task_io, figures in suites.items():
        for kind, label in suite_labels.items():
            f = figures[kind]
            speedup = f"{f['speedup_loop']:.2f}x (wall {f['speedup_wall']:.2f}x)" if "speedup_loop" in f else ""
            own = _ms(f["overhead"]) if "overhead" in f else ""
            own_cpu = _ms(f["overhead_cpu"]) if "overhead_cpu" in f else ""
            lines.append(
                f"| {task_io * 1000:g} ms | {label} | {_ms(f['loop'])} | {_ms(f['wall'])} | {_ms(f['cpu'])} "
                f"| {speedup} | {own} | {own_cpu} |"
            )
    previous = PREVIOUS_OVERHEAD
    lines += [
        "",
        "Run mode against the previous engine, which ran a request's tasks one at a time before the client's call",
        f"returned (its figures: `benchmarks/RESULTS.md` at commit {PREVIOUS_COMMIT}): the recorder suite's own time",
        "per test beyond the baseline suite. The tasks now run concurrently, as in production: a test waits",
        "for the longest of them (the after_response task, which begins once the response was sent), not their sum.",
        "",
        "| task I/O | previous engine (serial) | this run (concurrent) | faster by |",
        "| --- | --- | --- | --- |",
    ]
    for task_io, figures in suites.items():
        if task_io in previous:
            now = figures["recorder"]["overhead"]
            faster = f"{previous[task_io] / now:.1f}x" if now > 0 else "n/a"
            lines.append(f"| {task_io * 1000:g} ms | {_ms(previous[task_io])} | {_ms(now)} | {faster} |")
    lines += [
        "",
        f"In process ({settings.recorder_rounds} rounds of {settings.chunk}): install a `RecordingScheduler`, send the",
        "request, assert its 3 tasks, uninstall: "
        f"{_us(inproc['recorded'])} per test, against {_us(inproc['real'])} for the same request on the real",
        f"scheduler awaited until its tasks ran: {_us(inproc['overhead'])} of overhead per test.",
        "",
        f"Growth over {rec_growth['tests']:,} recorder tests: after {settings.recorder_growth_warmup:,} warm-up tests "
        "(and as many requests",
        f"without the recorder), {rec_growth['rounds']} rounds, each of {rec_growth['tests']:,} recorder tests and "
        f"{rec_growth['tests']:,} of the same requests on the",
        "real scheduler (in alternating order), each run after 10 unmeasured ones of its kind (the last request's",
        "objects live until the next request) and between two readings of the traced memory after",
        "`gc.collect()`. The real scheduler's row shows the growth that is not the recorder's own (the client's",
        "caches, the interpreter's free lists, which fill now and then); *net* is the difference within a round.",
        "Each figure is the median of the rounds.",
        "",
        "| variant | tests per round | growth per round | per test | net of the real scheduler, per test |",
        "| --- | --- | --- | --- | --- |",
        f"| recorder tests | {rec_growth['tests']:,} | {rec_growth['recorder']:+,} B "
        f"| {rec_growth['recorder'] / rec_growth['tests']:+.2f} B | {rec_growth['net'] / rec_growth['tests']:+.2f} B |",
        f"| the same requests, real scheduler | {rec_growth['tests']:,} | {rec_growth['real']:+,} B "
        f"| {rec_growth['real'] / rec_growth['tests']:+.2f} B | |",
        "",
        "Net growth of each round: " + ", ".join(f"{value:+,} B" for value in rec_growth["net_rounds"]) + ".",
    ]

    notes = results.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    if results["profiles"]:
        lines += [
            "",
            "## Profiles of the targets not met",
            "",
            "cProfile, sorted by own time (cProfile inflates the cost of small calls: read it for where the time",
            "goes, not for how much).",
        ]
        for key, text in results["profiles"].items():
            lines += ["", f"### {key}", "", "```", *_trim_profile(text), "```"]
    return "\n".join(lines) + "\n"


def _trim_profile(text: str) -> list[str]:
    stdlib = os.path.dirname(os.__file__)
    site = os.path.dirname(os.path.dirname(anyio.__file__))
    preamble = ("function calls", "Ordered by", "List reduced", "Random listing")
    lines = []
    for line in text.splitlines():
        line = line.rstrip()
        if line and not any(marker in line for marker in preamble):
            lines.append(line.replace(site + "/", "").replace(stdlib + "/", "").replace(ROOT + "/", ""))
    return lines


def notes_for(results: dict[str, Any]) -> list[str]:
    """Explanations of the targets not met, from the figures of this run."""
    notes = []
    requests, suites, tasks, pending = results["requests"], results["suites"], results["tasks"], results["pending"]
    t0, ss3, ct3, t3 = (requests[key]["ratio"] for key in ("t0", "ss3", "ct3", "t3"))
    if t0 > T_PARAM:
        notes.append(
            f"`Tasks` with no task: one plain `async def` dependency on an app with `add_tasks` (FastAPI's cost of a "
            f"dependency, plus the middleware) is already {requests['dep_mw']['ratio']:.3f}x bare; the scheduler "
            f"and its two exit-stack callbacks add the rest ({t0 - requests['dep_mw']['ratio']:+.3f}x)."
        )
    if t3 > T_THREE or requests["t3"]["vs_bg3"] > T_THREE_BG:
        ct3_bg = requests["ct3"]["vs_bg3"]
        below = [f"{T_THREE}x bare"] if ct3 > T_THREE else []
        below += [f"{T_THREE_BG}x `BackgroundTasks`"] if ct3_bg > T_THREE_BG else []
        rest = t3 - ct3 - (t0 - 1)
        notes.append(
            f"3 tasks: the event loop itself, `loop.create_task(work())` three times from the endpoint with no "
            f"scheduler at all, is {ct3:.3f}x bare and {ct3_bg:.3f}x `BackgroundTasks` (which starts no task: it "
            f"awaits its functions one after another after the response); anyio's `start_soon` x 3 is {ss3:.3f}x "
            f"bare and {requests['ss3']['vs_bg3']:.3f}x `BackgroundTasks`. "
            + (
                f"The target{'s' if len(below) > 1 else ''} of {' and '.join(below)} "
                f"{'are' if len(below) > 1 else 'is'} below the event loop's own cost of three concurrent tasks here. "
                if below
                else ""
            )
            + f"fastapi-tasks adds {t3 - ct3:+.3f}x to `loop.create_task` x 3, of which the `Tasks` parameter is "
            f"{t0 - 1:+.3f}x and the three task handles, the batches and their start {rest:+.3f}x (profile below)."
        )
    if tasks["ours"]["ratio"] > T_TASK:
        floor = tasks["create_task"]["ratio"]
        notes.append(
            f"One immediate task: the event loop's own `loop.create_task` is {floor:.3f}x anyio's `start_soon`, "
            f"scheduled and run ({tasks['create_task']['schedule_ratio']:.3f}x for scheduling only); "
            f"fastapi-tasks' `tasks.schedule` is {tasks['ours']['total'] / tasks['create_task']['total']:.2f}x "
            "`loop.create_task` (its task handle, its live set and the runner coroutine around the body)."
            + (f" The target of {T_TASK}x is below `loop.create_task` itself." if floor > T_TASK else "")
        )
    if pending["ours"]["bytes"] > T_PENDING_BYTES:
        floor_bytes = pending["create_task"]["bytes"]
        notes.append(
            f"Memory per pending task: `loop.create_task` alone keeps {floor_bytes:,.0f} B per pending task (the "
            f"asyncio task, its coroutine's frame, the set that keeps it alive); fastapi-tasks keeps "
            f"{pending['ours']['above_ct']:+,.0f} B more."
        )
    if any(f[kind]["speedup_loop"] < T_SUITE for f in suites.values() for kind in ("recorder", "record_mode")):
        floor = next(iter(suites.values()))["baseline"]["loop"]
        notes.append(
            f"Toolkit suites: a test that sends one request through `TestClient` costs about {_ms(floor)} here (the "
            f"baseline suite). Polling costs nothing more when the tasks are already done at the first check (0 ms "
            f"of task I/O), and otherwise one or more {POLL_INTERVAL * 1000:g} ms sleeps; the recorder's default mode "
            "waits, once the client's call has returned from the app, until the request's tasks have ended: they run "
            "concurrently, so it pays the longest of them (the after_response task, which begins once the response "
            "was sent), with no polling interval on top. The speed-up is bounded by (floor + waiting) / (floor + "
            "recorder overhead): it grows with the time the tasks take, in record mode (tasks not run)."
        )
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, to try the script")
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"), help="where to write the results")
    parser.add_argument(
        "--profile",
        metavar="VARIANT",
        help="print a cProfile of 2,000 requests of a variant (bare, t0, t3, bg3, ...) or of 'many' tasks, and exit",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"measure only these parts ({','.join(PARTS)}) and print them instead of writing the results",
    )
    args = parser.parse_args()
    parts = tuple(part for part in PARTS if part in args.parts.split(","))
    settings = QUICK if args.quick else FULL
    gc.collect()
    env = environment()
    with tempfile.TemporaryDirectory(prefix="fastapi-tasks-bench-") as tmpdir:
        log("fetching fastapi-tasks 0.1.0")
        legacy, legacy_note = load_legacy(tmpdir)
        log(legacy_note)
        if args.profile:

            async def profile_only() -> None:
                async with Bench(legacy) as bench:
                    n = settings.many_tasks if args.profile == "many" else 2000
                    print(await bench.profile(args.profile, n, limit=40))

            anyio.run(profile_only, backend="asyncio")
            return
        results: dict[str, Any] = {}
        anyio.run(measure_in_process, settings, legacy, results, parts, backend="asyncio")
        if "suites" in parts:
            results["suites"] = measure_suites(settings, tmpdir)
    if parts != PARTS:
        pprint.pprint(results, width=120)
        return
    results["notes"] = notes_for(results)
    if legacy is None:
        results["notes"].append(legacy_note)
    text = report(settings, args.quick, env, legacy_note, results)
    with open(args.output, "w") as out:
        out.write(text)
    log(f"wrote {os.path.relpath(args.output)}")
    for label, value, met in results["targets"]:
        print(f"  {'ok ' if met else 'NOT'}  {label}: {value}")


if __name__ == "__main__":
    main()
