"""A real hypercorn server in a subprocess, on 127.0.0.1, that stops waiting for the app's shutdown.

hypercorn gives the app's lifespan shutdown `shutdown_timeout` seconds, then cancels it. Past that point
the tasks still running must be named, and cancelled, shielded ones included: on trio a shielded task of
the app's task group kept the lifespan, and the server process, waiting for ever.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("hypercorn")

_APP = """
import logging, sys
import anyio
from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
app = FastAPI()
add_tasks(app, shutdown_timeout=120)  # far longer than the server's own limit, and than the test's bound


async def plain() -> None:
    await anyio.sleep_forever()


async def guarded() -> None:
    await anyio.sleep_forever()


@app.post("/")
async def endpoint(tasks: Tasks) -> None:
    tasks.task(name="plain").schedule(plain)
    tasks.task(name="guarded", shield=True).schedule(guarded)
    print("scheduled", flush=True)
"""

_CONFIG = """
shutdown_timeout = 1.0  # how long hypercorn waits for the app's shutdown
graceful_timeout = 1.0  # and for the requests in progress
"""

_BOUND = 30.0  # seconds any step may take before the test gives up; each takes about one


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=_BOUND) as connection:
        connection.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return connection.recv(4096)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _read_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:  # hypercorn and the app write to the same pipe, line by line
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"the server ended before it printed {marker!r}:\n{''.join(lines)}")


@pytest.mark.parametrize("worker", ["trio", "asyncio"])
def test_a_server_that_stops_waiting_gets_every_task_cancelled_and_exits(tmp_path: Path, worker: str) -> None:
    (tmp_path / "served.py").write_text(textwrap.dedent(_APP))
    (tmp_path / "server_config.py").write_text(textwrap.dedent(_CONFIG))
    port = _free_port()
    command = [sys.executable, "-m", "hypercorn", "-c", "file:server_config.py", "-k", worker]
    command += ["-b", f"127.0.0.1:{port}", "--error-logfile", "-", "served:app"]
    # A session of its own: hypercorn serves from a worker process, which a kill of the parent alone would leave.
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    try:
        output = _read_until(process, "Running on")
        assert _post(port).startswith(b"HTTP/1.1 200"), output
        output += _read_until(process, "scheduled")
        process.send_signal(signal.SIGINT)
        # The process exits after hypercorn's own limits (a second each), long before the app's grace period
        # would end: nothing keeps it waiting, the shielded task included.
        rest, _ = process.communicate(timeout=_BOUND)
    finally:
        if process.poll() is None or _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)  # the server and its worker, by their own process group
            process.communicate()
    log = "".join(output) + rest
    lines = [line for line in log.splitlines() if line.startswith("WARNING fastapi_tasks")]
    assert lines[0].startswith(
        "WARNING fastapi_tasks The server stopped waiting for the app's shutdown (grace period: "
        "shutdown_timeout=120 s) with 2 background task(s) unfinished: 'guarded' (shielded), 'plain'. Cancelling "
        "them: the unshielded ones now, the shielded ones as the server exits."
    ), log
    # Each ended cancelled, not failed: by the runtime, or (the shielded one on asyncio) by the event loop's
    # teardown, which the line calls a cancel from outside the app.
    ended = sorted(line.partition(" was cancelled ")[0] for line in lines[1:])
    assert ended == [
        "WARNING fastapi_tasks Background task 'guarded'",
        "WARNING fastapi_tasks Background task 'plain'",
    ], log
    # (hypercorn-asyncio logs its own timeout as a lifespan failure, from asyncio.run()'s teardown: not ours.)
    assert not [line for line in log.splitlines() if line.startswith("ERROR fastapi_tasks")], log
    assert process.returncode is not None
