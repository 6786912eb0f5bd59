"""The cost of `enqueue()` against calling taskiq's `kiq` / Celery's `apply_async` in the endpoint, and of the spool.

    python benchmarks/dispatch.py            # needs redis-server on PATH, or FASTAPI_TASKS_REDIS_URL
    python benchmarks/dispatch.py --quick    # a short run, to try the script

Per request, measured in one process and one run against a loopback Redis, over httpx's ASGI
transport, as two figures:
- *latency*: until the response arrived (an `after_response` enqueue dispatches after it);
- *total*: until the response arrived and the job was in Redis (for `enqueue`, its handle ended).
The variants are interleaved in chunks of 50 requests, each round in a rotated order; the ratio
reported is the median of the per-round ratios against the direct call, since on a shared
machine absolute times drift by tens of percent from run to run while these ratios hold. The
`enqueue-spool` variant sends through an adapter with a durable spool (`spool=`, issue 23) to a
healthy broker, and its ratio against `enqueue` without a spool, measured in the same rounds, is
the spool's cost per dispatch.
Not part of the test run; no test asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import httpx
from _common import rotated
from asgi_lifespan import LifespanManager
from celery import Celery
from fastapi import FastAPI
from taskiq_redis import ListQueueBroker

from fastapi_tasks import DispatchTask, Tasks, add_tasks, register_dispatcher
from fastapi_tasks.dispatchers.celery import CeleryDispatcher
from fastapi_tasks.dispatchers.taskiq import TaskiqDispatcher

CHUNK = 50


@contextmanager
def redis_url() -> Iterator[str]:
    url = os.environ.get("FASTAPI_TASKS_REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("Set FASTAPI_TASKS_REDIS_URL or install redis-server.")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()

    def watch() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if "Ready to accept connections" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(10):
            sys.exit("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


class SpooledTaskiq(TaskiqDispatcher):
    """The taskiq adapter with a spool, for the jobs of one broker only: the others keep the built-in adapter."""

    def __init__(self, broker: ListQueueBroker, spool: str) -> None:
        super().__init__(spool=spool)
        self.only = broker

    def accepts(self, job: object) -> bool:
        return super().accepts(job) and getattr(job, "broker", None) is self.only


class SpooledCelery(CeleryDispatcher):
    """The Celery adapter with a spool, for the tasks of one Celery app only."""

    def __init__(self, app: Celery, spool: str) -> None:
        super().__init__(spool=spool)
        self.only = app

    def accepts(self, job: object) -> bool:
        return super().accepts(job) and getattr(job, "app", None) is self.only


def build_app(
    url: str, queue: str, spool: str
) -> tuple[FastAPI, list[DispatchTask], list[ListQueueBroker], list[Celery]]:
    broker, spooled_broker = (ListQueueBroker(url, queue_name=f"{queue}-taskiq{suffix}") for suffix in ("", "-spool"))
    celery, spooled_celery = (Celery("bench", broker=url, set_as_current=False) for _ in range(2))
    celery.conf.update(task_default_queue=f"{queue}-celery", task_ignore_result=True)
    spooled_celery.conf.update(task_default_queue=f"{queue}-celery-spool", task_ignore_result=True)
    register_dispatcher(SpooledTaskiq(spooled_broker, spool))
    register_dispatcher(SpooledCelery(spooled_celery, spool))
    handles: list[DispatchTask] = []

    @broker.task(task_name="bench.receipt")
    async def receipt(order_id: int) -> None: ...

    @spooled_broker.task(task_name="bench.receipt")
    async def spooled_receipt(order_id: int) -> None: ...

    @celery.task(name="bench.receipt")  # type: ignore[untyped-decorator]
    def celery_receipt(order_id: int) -> None: ...

    @spooled_celery.task(name="bench.receipt")  # type: ignore[untyped-decorator]
    def spooled_celery_receipt(order_id: int) -> None: ...

    app = FastAPI()
    add_tasks(app)

    @app.post("/taskiq/direct")
    async def taskiq_direct() -> None:
        await receipt.kiq(42)

    @app.post("/taskiq/enqueue")
    async def taskiq_enqueue(tasks: Tasks) -> None:
        handles.append(tasks.after_response.enqueue(receipt, 42))

    @app.post("/celery/direct")
    def celery_direct() -> None:
        celery_receipt.apply_async((42,))

    @app.post("/taskiq/enqueue-spool")
    async def taskiq_enqueue_spool(tasks: Tasks) -> None:
        handles.append(tasks.after_response.enqueue(spooled_receipt, 42))

    @app.post("/celery/enqueue")
    def celery_enqueue(tasks: Tasks) -> None:
        handles.append(tasks.after_response.enqueue(celery_receipt, 42))

    @app.post("/celery/enqueue-spool")
    def celery_enqueue_spool(tasks: Tasks) -> None:
        handles.append(tasks.after_response.enqueue(spooled_celery_receipt, 42))

    return app, handles, [broker, spooled_broker], [celery, spooled_celery]


async def chunk(client: httpx.AsyncClient, path: str, handles: list[DispatchTask]) -> tuple[float, float]:
    """Seconds per request of `CHUNK` requests: until each response, and until every job was in Redis."""
    latency = 0.0
    start = time.perf_counter()
    for _ in range(CHUNK):
        before = time.perf_counter()
        response = await client.post(path)
        latency += time.perf_counter() - before
        response.raise_for_status()
    for handle in handles:
        await handle.wait()
        if handle.exception is not None:
            raise handle.exception
    handles.clear()
    return latency / CHUNK, (time.perf_counter() - start) / CHUNK


async def main(url: str, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fastapi-tasks-spool-") as spool:
        app, handles, brokers, celeries = build_app(url, f"bench-{uuid.uuid4().hex}", spool)
        for broker in brokers:
            await broker.startup()
        try:
            async with LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                    for backend in ("taskiq", "celery"):
                        await report(backend, client, handles, rounds)
        finally:
            for broker in brokers:
                await broker.shutdown()
            for celery in celeries:
                celery.close()


async def report(backend: str, client: httpx.AsyncClient, handles: list[DispatchTask], rounds: int) -> None:
    variants = [f"/{backend}/direct", f"/{backend}/enqueue", f"/{backend}/enqueue-spool"]
    for path in variants:  # warm-up: connections, imports, caches
        await chunk(client, path, handles)
    samples: dict[str, list[tuple[float, float]]] = {path: [] for path in variants}
    ratios: dict[str, list[float]] = {"latency": [], "total": [], "spool latency": [], "spool total": []}
    for number in range(rounds):
        order = rotated(variants, number)
        measured = {path: await chunk(client, path, handles) for path in order}
        for path, sample in measured.items():
            samples[path].append(sample)
        direct, enqueue, spooled = (measured[path] for path in variants)
        ratios["latency"].append(enqueue[0] / direct[0])
        ratios["total"].append(enqueue[1] / direct[1])
        ratios["spool latency"].append(spooled[0] / enqueue[0])
        ratios["spool total"].append(spooled[1] / enqueue[1])
    print(f"\n{backend}: {rounds} rounds of {CHUNK} requests per variant, interleaved")
    print(f"{'variant':<22}{'latency (median)':>18}{'total (median)':>18}")
    for path in variants:
        latency = statistics.median(sample[0] for sample in samples[path]) * 1e3
        total = statistics.median(sample[1] for sample in samples[path]) * 1e3
        print(f"{path:<22}{latency:>15.3f} ms{total:>15.3f} ms")
    print(
        f"enqueue / direct, median of per-round ratios: latency {statistics.median(ratios['latency']):.2f}x, "
        f"total {statistics.median(ratios['total']):.2f}x"
    )
    print(
        "enqueue with a spool / without, healthy broker, median of per-round ratios: "
        f"latency {statistics.median(ratios['spool latency']):.2f}x, "
        f"total {statistics.median(ratios['spool total']):.2f}x"
    )


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 30")
    args = parser.parse_args(argv)
    with redis_url() as url:
        anyio.run(main, url, 5 if args.quick else 30)


if __name__ == "__main__":
    run()
