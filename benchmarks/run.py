"""Benchmarks of fastapi-tasks against anyio, FastAPI's BackgroundTasks and fastapi-tasks 0.1.0.

    python benchmarks/run.py            # the full run; writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick    # a short run, to try the script (its figures are rougher)
    python benchmarks/run.py --profile t3   # print a cProfile of a variant and exit

Everything is measured in one process and one run (the toolkit suites in subprocesses started by
it), as ratios between variants measured in the same round. Variants are interleaved in chunks
of about 50 requests, each round in a rotated order, and a figure is the median of the per-round
ratios: on a shared machine, absolute times drift by tens of percent while these ratios hold.
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
from _inprocess import Bench
from _legacy import load_legacy
from _suites import KINDS, POLL_INTERVAL, run_suite, write_suites

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@dataclass(frozen=True)
class Settings:
    request_rounds: int
    chunk: int
    many_rounds: int
    many_tasks: int
    pending_rounds: int
    pending_tasks: int
    growth_requests: int
    growth_warmup: int
    recorder_rounds: int
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
    suite_tests=100,
    suite_rounds=1,
    suite_task_io=(0.0, 0.001),
)

# Issue 6's targets.
T_PARAM = 1.10
T_THREE = 1.25
T_THREE_BG = 1.15
T_TASK = 1.2
T_PENDING_BYTES = 512
T_SUITE = 10.0
T_RECORDER_MS = 1.0
GROWTH_BYTES_PER_REQUEST = 1.0  # "no growth": less than one byte per request, i.e. no object kept per request


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
        if "requests" in parts:
            log("per request")
            results["requests"] = await bench.per_request(settings.request_rounds, settings.chunk)
        if "tasks" in parts:
            log("per task")
            results["tasks"] = await bench.per_task(settings.many_rounds, settings.many_tasks)
        if "pending" in parts:
            log("memory per pending task")
            results["pending"] = await bench.pending_memory(settings.pending_rounds, settings.pending_tasks)
        if "growth" in parts:
            log(f"memory after {settings.growth_requests} requests")
            results["growth"] = {
                key: await bench.growth(key, settings.growth_requests, settings.growth_warmup)
                for key in ("bare", "t0", "t3")
            }
        if "recorder" in parts:
            log("recorder overhead, in process")
            results["recorder_inproc"] = await bench.recorder_overhead(settings.recorder_rounds, settings.chunk)
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
    if requests["t3"]["ratio"] > T_THREE or requests["t3"]["vs_bg3"] > T_THREE_BG:
        keys.append("t3")
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
        out[task_io] = figures
    return out


# --- the report --------------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _yes(met: bool) -> str:
    return "**met**" if met else "**not met**"


def report(
    settings: Settings, quick: bool, env: list[tuple[str, str]], legacy_note: str, results: dict[str, Any]
) -> str:
    requests, tasks, pending, growth = results["requests"], results["tasks"], results["pending"], results["growth"]
    suites, inproc = results["suites"], results["recorder_inproc"]
    lines = ["# fastapi-tasks benchmarks", ""]
    lines.append(
        "Written by `python benchmarks/run.py`"
        + (" **--quick** (a short run: rougher figures)" if quick else "")
        + ". Do not edit by hand; run the script again."
    )
    lines += ["", "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in env]
    lines.append(f"| fastapi-tasks 0.1.0 | {legacy_note} |")
    lines += [
        "",
        "Method: everything runs in one process and one run; ratios are between variants measured in the same",
        f"round. Per-request variants are interleaved in chunks of {settings.chunk} requests, each round in a rotated",
        "order, and each figure is the median of the per-round ratios (absolute times: median of rounds; they drift",
        "with the machine's load, the ratios much less). A request's clock stops only when all of its tasks have run:",
        "each task ticks a countdown that the client awaits. Every task is the same `async def` that only ticks it.",
        "",
        "## Targets",
        "",
        "| target (issue 6) | measured | |",
        "| --- | --- | --- |",
    ]
    t0, t3 = requests["t0"]["ratio"], requests["t3"]["ratio"]
    vs_bg = requests["t3"]["vs_bg3"]
    per_task = tasks["ours"]["ratio"]
    above = pending["ours"]["above"]
    rows: list[tuple[str, str, bool]] = [
        (f"`Tasks` parameter, no task <= {T_PARAM:.2f}x bare", f"{t0:.3f}x", t0 <= T_PARAM),
        (f"3 tasks (one per phase) <= {T_THREE:.2f}x bare", f"{t3:.3f}x", t3 <= T_THREE),
        (f"3 tasks <= {T_THREE_BG:.2f}x BackgroundTasks with 3 tasks", f"{vs_bg:.3f}x", vs_bg <= T_THREE_BG),
        (f"one immediate task <= {T_TASK:.1f}x the `start_soon` floor", f"{per_task:.3f}x", per_task <= T_TASK),
        (
            f"memory per pending task <= {T_PENDING_BYTES} B above the floor",
            f"{above:+,.0f} B",
            above <= T_PENDING_BYTES,
        ),
    ]
    for key in ("t0", "t3"):
        g = growth[key]
        net = g["growth"] - growth["bare"]["growth"]
        rows.append(
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
            rows.append(
                (
                    f"recorder suite ({label}) >= {T_SUITE:.0f}x faster than polling, "
                    f"tasks doing {task_io * 1000:g} ms I/O",
                    f"{speedup:.2f}x",
                    speedup >= T_SUITE,
                )
            )
    zero_io = suites.get(0.0) or next(iter(suites.values()))
    overhead = zero_io["recorder"]["overhead"]
    rows.append(
        (
            f"recorder's own overhead per test < {T_RECORDER_MS:g} ms (pytest suite)",
            _ms(overhead),
            overhead * 1e3 < T_RECORDER_MS,
        )
    )
    rows.append(
        (
            f"recorder's own overhead per test < {T_RECORDER_MS:g} ms (in process)",
            _ms(inproc["overhead"]),
            inproc["overhead"] * 1e3 < T_RECORDER_MS,
        )
    )
    lines += [f"| {label} | {value} | {_yes(met)} |" for label, value, met in rows]
    results["targets"] = rows

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
        "t0": "`Tasks` parameter, no task",
        "t3": "`Tasks`, 3 tasks (one per phase)",
        "bg3": "FastAPI `BackgroundTasks`, 3 tasks",
        "old0": "fastapi-tasks 0.1.0, no task",
        "old3": "fastapi-tasks 0.1.0, 3 tasks",
    }
    for key, label in labels.items():
        if key in requests:
            r = requests[key]
            lines.append(f"| {label} | {_us(r['seconds'])} | {r['ratio']:.3f}x |")
    lines.append("")
    lines.append(
        f"3 tasks against BackgroundTasks with 3 tasks: `start_soon` x 3 {requests['ss3']['vs_bg3']:.3f}x, "
        f"fastapi-tasks {vs_bg:.3f}x" + (f", 0.1.0 {requests['old3']['vs_bg3']:.3f}x." if "old3" in requests else ".")
    )

    lines += [
        "",
        "## Per task",
        "",
        f"{settings.many_tasks:,} immediate tasks scheduled in one request; {settings.many_rounds} rounds.",
        "*Scheduled and run*: from sending the request until the last task has run, divided by the number of",
        "tasks. *Scheduling only*: the endpoint's loop of `schedule()` calls. The floor is",
        "`task_group.start_soon(work)` on the same task group, in the same kind of request.",
        "",
        "| variant | scheduled and run, per task | ratio to floor | scheduling only, per task | ratio to floor |",
        "| --- | --- | --- | --- | --- |",
    ]
    task_labels = {
        "floor": "floor: anyio `start_soon`",
        "ours": "fastapi-tasks `tasks.schedule`",
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
        "",
        "| variant | bytes per pending task | above the floor |",
        "| --- | --- | --- |",
    ]
    mem_labels = {"floor": "floor: anyio `start_soon`", "ours": "fastapi-tasks", "old": "fastapi-tasks 0.1.0"}
    for key, label in mem_labels.items():
        if key in pending:
            lines.append(f"| {label} | {pending[key]['bytes']:,.0f} B | {pending[key]['above']:+,.0f} B |")
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
        "  (default mode: the tasks run, deterministically, before the client's call returns);",
        '- *recorder, record mode*: the same with `@pytest.mark.tasks_recorder(mode="record")` (tasks recorded,',
        "  not run);",
        "- *polling*: the real scheduler; the test checks the side effects, sleeping "
        f"{POLL_INTERVAL * 1000:g} ms between",
        "  checks (up to 5 s).",
        "",
        "*Per test* is the pytest run loop (after collection) divided by the tests; *wall* includes interpreter",
        "start-up and collection.",
        "",
        "| task I/O | suite | per test | wall per test | polling / this (per test) | own overhead vs baseline |",
        "| --- | --- | --- | --- | --- | --- |",
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
            lines.append(
                f"| {task_io * 1000:g} ms | {label} | {_ms(f['loop'])} | {_ms(f['wall'])} | {speedup} | {own} |"
            )
    lines += [
        "",
        f"In process ({settings.recorder_rounds} rounds of {settings.chunk}): install a `RecordingScheduler`, send the",
        "request, assert its 3 tasks, uninstall: "
        f"{_us(inproc['recorded'])} per test, against {_us(inproc['real'])} for the same request on the real",
        f"scheduler awaited until its tasks ran: {_us(inproc['overhead'])} of overhead per test.",
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
    requests, suites = results["requests"], results["suites"]
    t0, ss3, t3 = requests["t0"]["ratio"], requests["ss3"]["ratio"], requests["t3"]["ratio"]
    if t0 > T_PARAM:
        notes.append(
            f"`Tasks` with no task: one plain `async def` dependency on an app with `add_tasks` (FastAPI's cost of a "
            f"dependency, plus the middleware) is already {requests['dep_mw']['ratio']:.3f}x bare; the scheduler "
            f"and its two exit-stack callbacks add the rest ({t0 - requests['dep_mw']['ratio']:+.3f}x)."
        )
    if t3 > T_THREE or requests["t3"]["vs_bg3"] > T_THREE_BG:
        rest = t3 - ss3 - (t0 - 1)
        notes.append(
            f"3 tasks: anyio itself, `start_soon(work)` three times from the endpoint with no scheduler at all, is "
            f"{ss3:.3f}x bare and {requests['ss3']['vs_bg3']:.3f}x `BackgroundTasks` (which starts no task: it "
            f"awaits its functions one after another after the response). The targets of {T_THREE}x bare and "
            f"{T_THREE_BG}x `BackgroundTasks` are below that floor for three concurrent tasks; fastapi-tasks adds "
            f"{t3 - ss3:+.3f}x to it, of which the `Tasks` parameter is {t0 - 1:+.3f}x and the three task handles, "
            f"the batches and their start {rest:+.3f}x (profile below)."
        )
    if any(f[kind]["speedup_loop"] < T_SUITE for f in suites.values() for kind in ("recorder", "record_mode")):
        floor = next(iter(suites.values()))["baseline"]["loop"]
        notes.append(
            f"Toolkit suites: a test that sends one request through `TestClient` costs about {_ms(floor)} here (the "
            f"baseline suite). Polling costs nothing more when the tasks are already done at the first check (0 ms "
            f"of task I/O), and otherwise one or more {POLL_INTERVAL * 1000:g} ms sleeps; the recorder's default mode "
            "runs a request's after_route and after_response tasks one after another before the client's call "
            "returns, so it pays the tasks' own time, in sequence. The speed-up is bounded by (floor + waiting) / "
            "(floor + recorder overhead): it grows with the time the tasks take, in record mode (tasks not run)."
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
