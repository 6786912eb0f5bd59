"""The durable spool against a real redis-server: a process killed during an outage loses no job.

An app process (`_spool_child.py`) with a spool enqueues jobs while our redis-server is stopped;
once every job is in the spool it says so, and the test kills it with SIGKILL. Redis starts again,
a new app process on the same spool directory enqueues one job, and that dispatch sends what the
dead process's spool kept: every job reaches the queue, under its own job id.

It starts four Python processes, so CI runs it once, with the outage test
(`FASTAPI_TASKS_OUTAGE_TEST=skip` leaves it out of the repeated runs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_outage import RedisServer

pytestmark = pytest.mark.skipif(
    os.environ.get("FASTAPI_TASKS_OUTAGE_TEST") == "skip", reason="FASTAPI_TASKS_OUTAGE_TEST=skip: run once in CI"
)

CHILD = Path(__file__).with_name("_spool_child.py")
JOBS = 30
TIMEOUT = 60.0


@pytest.fixture
def stopped_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Our redis-server, not running yet: the test starts it by its PID."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    try:
        yield server
    finally:
        server.stop()


def child(mode: str, backend: str, server: RedisServer, queue: str, spool: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, backend, server.url, queue, str(spool), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def said(process: subprocess.Popen[str], word: str) -> object:
    """What the process printed after `word` on its first line (it blocks until that line comes, or the end)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(f"{word} "):
        process.kill()
        _, errors = process.communicate(timeout=TIMEOUT)
        pytest.fail(f"the app process said {line!r}, not {word}:\n{errors}", pytrace=False)
    return json.loads(line.removeprefix(f"{word} "))


@pytest.mark.parametrize("backend", ["taskiq", "celery"])
def test_a_process_killed_during_an_outage_loses_no_job(
    backend: str, stopped_redis: RedisServer, tmp_path: Path
) -> None:
    spool, queue = tmp_path / "spool", f"spool-{backend}"
    spool.mkdir()

    first = child("outage", backend, stopped_redis, queue, spool, JOBS)
    try:
        spooled = said(first, "SPOOLED")  # every job is in the spool, none could be sent
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=TIMEOUT)
    assert isinstance(spooled, list)
    assert len(set(spooled)) == JOBS

    stopped_redis.start()
    second = child("drain", backend, stopped_redis, queue, spool, 1)
    trigger = said(second, "DRAINED")
    _, errors = second.communicate(timeout=TIMEOUT)
    assert second.returncode == 0, errors

    queued = stopped_redis.queued(queue)
    assert [job_id for job_id in [*spooled, trigger] if str(job_id).encode() not in queued] == []
    assert f"adopted {JOBS} jobs left by a process that ended" in errors
    assert sorted(path.suffix for path in spool.iterdir()) == [".lock", ".sqlite3"]  # the dead one's file is gone
