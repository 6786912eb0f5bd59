"""The testing toolkit figure: generated pytest suites, run in subprocesses.

Three suites of the same tests, each sending one request whose endpoint schedules three tasks (one
per phase):

- "recorder": asserts the tasks with the `tasks_recorder` fixture;
- "polling": the real scheduler, waiting for the tasks' side effects by polling (check, then
  sleep 10 ms, up to 5 s): how such tests are written without a toolkit;
- "baseline": the same request and status assertion, nothing about the tasks (the floor for the
  recorder's own overhead).

Polling lives only in these generated files, never in the project's tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

__all__ = ["KINDS", "run_suite", "write_suites"]

KINDS = ("baseline", "recorder", "record_mode", "polling")
POLL_INTERVAL = 0.01
TESTS_PER_FILE = 50

_APP = """
import anyio
from fastapi import FastAPI

from fastapi_tasks import Tasks, add_tasks

DONE: set[tuple[str, int]] = set()
TASK_IO = @TASK_IO@  # seconds of simulated I/O (a mail API, a database write) in each task


async def audit(user_id: int) -> None:
    await anyio.sleep(TASK_IO)
    DONE.add(("audit", user_id))


async def index(user_id: int) -> None:
    await anyio.sleep(TASK_IO)
    DONE.add(("index", user_id))


async def welcome(user_id: int) -> None:
    await anyio.sleep(TASK_IO)
    DONE.add(("welcome", user_id))


app = FastAPI()
add_tasks(app)


@app.post("/signup/{user_id}")
async def signup(user_id: int, tasks: Tasks) -> dict[str, int]:
    tasks.schedule(audit, user_id)
    tasks.after_route.schedule(index, user_id)
    tasks.after_response.schedule(welcome, user_id)
    return {"id": user_id}
"""

_CONFTEST = """
import json
import os
import time
import warnings

import anyio.lowlevel
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from bench_app import app as the_app


@pytest.fixture(scope="session")
def client():
    with TestClient(the_app) as client:
        yield client


@pytest.fixture
def app():
    return the_app


def wait_for(condition, timeout=5.0, interval={interval}):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the background tasks")
        time.sleep(interval)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    start = time.perf_counter()
    cpu = time.process_time()
    try:
        return (yield)
    finally:
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        with open(os.path.join(os.path.dirname(__file__), "timing.json"), "w") as out:
            json.dump({{"loop": elapsed, "cpu": cpu, "tests": session.testscollected}}, out)
"""

_TESTS = {
    "baseline": """
def test_signup_{i}(client):
    response = client.post("/signup/{i}")
    assert response.json() == {{"id": {i}}}
""",
    "recorder": """
def test_signup_{i}(client, tasks_recorder):
    response = client.post("/signup/{i}")
    assert response.json() == {{"id": {i}}}
    tasks_recorder.assert_scheduled_once(audit, {i}, phase="immediate")
    tasks_recorder.assert_scheduled_once(index, {i}, phase="after_route")
    tasks_recorder.assert_scheduled_once(welcome, {i}, phase="after_response")
""",
    "polling": """
def test_signup_{i}(client):
    response = client.post("/signup/{i}")
    assert response.json() == {{"id": {i}}}
    wait_for(lambda: {{("audit", {i}), ("index", {i}), ("welcome", {i})}} <= DONE)
""",
}

_TESTS["record_mode"] = _TESTS["recorder"]

_HEADER = {
    "baseline": "",
    "recorder": "from bench_app import audit, index, welcome\n",
    "record_mode": (
        "import pytest\n\nfrom bench_app import audit, index, welcome\n\n"
        'pytestmark = pytest.mark.tasks_recorder(mode="record")\n'
    ),
    "polling": "from bench_app import DONE\nfrom conftest import wait_for\n",
}


def write_suites(root: str, tests: int, task_io: float) -> dict[str, str]:
    """Write the suites of `tests` tests under `root`, with `task_io` seconds of work per task; return their dirs."""
    dirs = {}
    for kind in KINDS:
        directory = os.path.join(root, kind)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "pytest.ini"), "w") as out:
            out.write("[pytest]\n")
        with open(os.path.join(directory, "bench_app.py"), "w") as out:
            out.write(textwrap.dedent(_APP).lstrip().replace("@TASK_IO@", repr(task_io)))
        with open(os.path.join(directory, "conftest.py"), "w") as out:
            out.write(textwrap.dedent(_CONFTEST).lstrip().format(interval=POLL_INTERVAL))
        for first in range(0, tests, TESTS_PER_FILE):
            body = [_HEADER[kind]]
            body += [_TESTS[kind].format(i=i) for i in range(first, min(first + TESTS_PER_FILE, tests))]
            with open(os.path.join(directory, f"test_suite_{first // TESTS_PER_FILE:03d}.py"), "w") as out:
                out.write("\n".join(body))
        dirs[kind] = directory
    return dirs


def run_suite(directory: str, tests: int) -> dict[str, float]:
    """Run one suite with pytest in a subprocess; return wall time, test-loop time and its CPU time, per test.

    The CPU time (every thread of the process, the app's event loop in `TestClient`'s thread included) does
    not count the time other processes of a loaded machine take, which the wall-clock figures do.
    """
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-W",
        "ignore::DeprecationWarning",
        directory,
    ]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"The generated suite in {directory} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    with open(os.path.join(directory, "timing.json")) as timing_file:
        timing = json.load(timing_file)
    if timing["tests"] != tests:
        raise RuntimeError(f"{directory}: collected {timing['tests']} tests, expected {tests}")
    return {"wall": wall / tests, "loop": timing["loop"] / tests, "cpu": timing["cpu"] / tests, "wall_total": wall}
