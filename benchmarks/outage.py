"""A 30 s broker outage under load: what `enqueue()` accepted, delivered, lost and reported (issue 23).

    python benchmarks/outage.py            # the full run: 4 rows of about 75 s each; needs redis-server
    python benchmarks/outage.py --quick    # every time divided by 4, to try the script

For each row (taskiq, Celery; with the default dispatch deadline of 60 s, then with the spool):
an app served by uvicorn in a subprocess on 127.0.0.1 takes 50 enqueue requests a second for
60 s, spread over the three phases, plus 10 `/health` requests a second. Our own redis-server
(append-only, `appendfsync always`, so a restart keeps what was queued) is stopped by its PID at
15 s and started again on the same port at 45 s. A reader polls the queue's length every 50 ms
and, at the end, reads every job id that reached the queue.

Columns: *accepted* (HTTP 200), *delivered* (accepted jobs found in the queue), *lost* (accepted,
never delivered), *reported* (lost jobs whose id the app logged at ERROR), `/health` p99 during
the outage, the app's CPU time during the outage (user + system, from /proc), and *drain*: from
the restart until the queue held as many jobs as had been accepted before it (the backlog).
Bounded: each row ends 90 s after its load at the latest, and every process is stopped by its
PID. Not part of the test run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import redis
import redis.asyncio
from fastapi import FastAPI

# At the top: FastAPI resolves the endpoints' string annotations (`Tasks`) in the module's globals.
from fastapi_tasks import DispatchTask, Tasks, TaskStatus, add_tasks, register_dispatcher

RATE, HEALTH_RATE = 50, 10  # requests a second
DURATION, STOP_AT, START_AT = 60.0, 15.0, 45.0
DRAIN_LIMIT = 90.0  # seconds after the load during which the row may still deliver
ROWS = (("taskiq", False), ("celery", False), ("taskiq", True), ("celery", True))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """Our redis-server on 127.0.0.1, stopped and started again by its PID on the same port."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("install redis-server (apt-get install redis-server)")
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        process = self.process

        def watch() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if "Ready to accept connections" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        if not ready.wait(10):
            sys.exit("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
            self.process = None


# --- the app, run with `--serve` in its own process


def serve(backend: str, url: str, queue: str, spool: str | None, port: int) -> None:
    import uvicorn

    handles: list[DispatchTask] = []
    if backend == "taskiq":
        from taskiq_redis import ListQueueBroker

        from fastapi_tasks.dispatchers.taskiq import TaskiqDispatcher

        broker = ListQueueBroker(url, queue_name=queue)

        @broker.task(task_name="bench.receipt")
        async def receipt(n: int) -> None: ...

        job: Any = receipt
        if spool:
            register_dispatcher(TaskiqDispatcher(spool=spool))
    else:
        from celery import Celery

        from fastapi_tasks.dispatchers.celery import CeleryDispatcher

        celery = Celery("bench", broker=url, set_as_current=False)
        celery.conf.update(
            task_default_queue=queue,
            task_ignore_result=True,
            broker_transport_options={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
        )

        @celery.task(name="bench.receipt")  # type: ignore[untyped-decorator]
        def celery_receipt(n: int) -> None: ...

        job = celery_receipt
        if spool:
            register_dispatcher(CeleryDispatcher(spool=spool))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if backend == "taskiq":
            await broker.startup()
        yield
        if backend == "taskiq":
            await broker.shutdown()

    app = FastAPI(lifespan=lifespan)
    add_tasks(app)

    @app.post("/enqueue/{n}")
    async def enqueue(n: int, tasks: Tasks) -> dict[str, str]:
        handle = (tasks, tasks.after_route, tasks.after_response)[n % 3].enqueue(job, n)
        handles.append(handle)
        return {"job_id": handle.job_id}

    @app.get("/health")
    async def health() -> str:
        return "ok"

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {
            "pending": sum(not handle.done for handle in handles),
            "failed": sum(handle.status is TaskStatus.FAILED for handle in handles),
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# --- the load and the measurements


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_app(arguments: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, __file__, "--serve", *arguments], stdout=log, stderr=subprocess.STDOUT)


@dataclass
class Row:
    name: str
    accepted: list[str] = field(default_factory=list)
    health: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds; inf: no answer)
    lengths: list[tuple[float, int]] = field(default_factory=list)
    cpu_outage: float = 0.0
    delivered: int = 0
    lost: int = 0
    reported: int = 0
    drain: float | None = None
    backlog: int = 0  # jobs accepted before the restart


async def run_row(server: RedisServer, backend: str, spool: bool, scale: float, logs: Path) -> Row:
    row = Row(f"fastapi-tasks, {'taskiq' if backend == 'taskiq' else 'Celery'}{', spool' if spool else ''}")
    queue, port = f"outage-{backend}-{'spool' if spool else 'memory'}-{time.time_ns()}", free_port()
    spool_dir = tempfile.mkdtemp(prefix="fastapi-tasks-spool-") if spool else ""
    log_path = logs / f"{queue}.log"
    app = await anyio.to_thread.run_sync(start_app, [backend, server.url, queue, spool_dir, str(port)], log_path)
    key = queue  # taskiq's list and Celery's default queue are both this Redis list
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            with anyio.fail_after(30):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    await anyio.sleep(0.1)  # waiting for uvicorn to listen
            start = anyio.current_time()
            stop_at, start_at, duration = STOP_AT * scale, START_AT * scale, DURATION * scale
            restarted = 0.0

            async def enqueue(n: int) -> None:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.post(f"/enqueue/{n}")
                    if response.status_code == 200:
                        row.accepted.append(response.json()["job_id"])

            async def health() -> None:
                sent = anyio.current_time() - start
                before = time.perf_counter()
                try:
                    await client.get("/health")
                    row.health.append((sent, time.perf_counter() - before))
                except httpx.HTTPError:
                    row.health.append((sent, float("inf")))

            async def outage() -> None:
                nonlocal restarted
                await anyio.sleep_until(start + stop_at)
                cpu = cpu_seconds(app.pid)
                await anyio.to_thread.run_sync(server.stop)
                await anyio.sleep_until(start + start_at)
                row.cpu_outage = cpu_seconds(app.pid) - cpu
                await anyio.to_thread.run_sync(server.start)
                restarted = anyio.current_time()
                row.backlog = len(row.accepted)

            async def reader(until: anyio.Event) -> None:
                client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
                try:
                    while not until.is_set():
                        with contextlib.suppress(redis.RedisError, OSError):
                            row.lengths.append((anyio.current_time(), int(await client.llen(key))))  # type: ignore[misc]
                        await anyio.sleep(0.05)
                finally:
                    await client.aclose()

            done = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader, done)
                async with anyio.create_task_group() as load:
                    load.start_soon(outage)
                    for n in range(int(RATE * duration)):
                        await anyio.sleep_until(start + n / RATE)
                        load.start_soon(enqueue, n)
                        if n % (RATE // HEALTH_RATE) == 0:
                            load.start_soon(health)
                with anyio.move_on_after(DRAIN_LIMIT):
                    # Another process's state, over HTTP: polled.
                    while (await client.get("/stats")).json()["pending"]:  # noqa: ASYNC110
                        await anyio.sleep(0.2)  # polling the app for its last dispatches
                await anyio.sleep(0.5)  # the reader's last polls
                done.set()
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        if spool_dir:
            shutil.rmtree(spool_dir, ignore_errors=True)
    queued = b"\n".join(redis.Redis.from_url(server.url).lrange(key, 0, -1))  # type: ignore[arg-type]
    lost = [job_id for job_id in row.accepted if job_id.encode() not in queued]
    logged = log_path.read_text()
    row.delivered = len(row.accepted) - len(lost)
    row.lost = len(lost)
    row.reported = sum(bool(re.search(rf"ERROR.*job id '{re.escape(job_id)}'", logged)) for job_id in lost)
    first_full = next((at for at, length in row.lengths if at >= restarted and length >= row.backlog), None)
    row.drain = None if first_full is None or not restarted else max(0.0, first_full - restarted)
    row.health = [(at, seconds) for at, seconds in row.health if stop_at <= at < start_at]
    return row


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def table(rows: list[Row], scale: float) -> str:
    lines = [
        f"{RATE} enqueue req/s and {HEALTH_RATE} /health req/s for {DURATION * scale:g} s; redis-server stopped by "
        f"its PID at {STOP_AT * scale:g} s and started again at {START_AT * scale:g} s; default dispatch_deadline "
        "(60 s).",
        "",
        "| mode | accepted (HTTP 200) | delivered | lost | reported (of the lost) | `/health` p99 during the outage "
        "| app CPU during the outage | backlog sent after the restart |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        latencies = [seconds for _, seconds in row.health]
        unanswered = sum(seconds == float("inf") for seconds in latencies)
        health = f"{p99(latencies) * 1e3:.0f} ms" if latencies and not unanswered else f"{unanswered} unanswered"
        drain = "-" if row.drain is None else f"{row.drain:.1f} s"
        lines.append(
            f"| {row.name} | {len(row.accepted):,} | {row.delivered:,} | {row.lost:,} | {row.reported:,} "
            f"| {health} | {row.cpu_outage:.1f} s | {drain} |"
        )
    return "\n".join(lines)


async def main(scale: float) -> None:
    with tempfile.TemporaryDirectory(prefix="fastapi-tasks-outage-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        rows = []
        try:
            for backend, spool in ROWS:
                rows.append(await run_row(server, backend, spool, scale, Path(directory)))
                print(table(rows[-1:], scale).splitlines()[-1], flush=True)
        finally:
            server.stop()
    print()
    print(table(rows, scale))
    print(f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs; one run per row.")


def run(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        backend, url, queue, spool, port = argv[1:6]
        serve(backend, url, queue, spool or None, int(port))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every time divided by 4")
    args = parser.parse_args(argv)
    anyio.run(main, 0.25 if args.quick else 1.0)


if __name__ == "__main__":
    run()
