"""A real Redis for the integration tests, and brokers that fail in the two ways brokers fail.

Redis comes from `FASTAPI_TASKS_REDIS_URL` when it is set (CI starts one); otherwise a
`redis-server` on this machine is started for the session on a free port, without persistence,
and stopped at the end. Without either the tests are skipped, except under `CI=true`, where a
missing Redis fails them: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn

import anyio
import pytest
from anyio.abc import SocketStream

REDIS_ENV = "FASTAPI_TASKS_REDIS_URL"
STARTUP_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"The Redis-backed integration tests must run in CI, but {reason}", pytrace=False)
    pytest.skip(reason)


def _check_reachable(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=STARTUP_TIMEOUT, socket_timeout=STARTUP_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"the Redis at {REDIS_ENV}={url} does not answer: {exc}")
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis database on 127.0.0.1 that the tests may use."""
    url = os.environ.get(REDIS_ENV)
    if url:
        _check_reachable(url)
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable(f"{REDIS_ENV} is not set and there is no redis-server to start (apt-get install redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    output: list[str] = []

    def watch() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "Ready to accept connections" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(STARTUP_TIMEOUT):
            pytest.fail(f"redis-server did not start on port {port}:\n{''.join(output)}", pytrace=False)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(STARTUP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def queue_name() -> str:
    """A queue of the test's own, so that tests never see each other's jobs."""
    return f"fastapi-tasks-test-{uuid.uuid4().hex}"


@pytest.fixture
def refusing_url() -> str:
    """A Redis URL on a port where nothing listens: every connection is refused."""
    return f"redis://127.0.0.1:{_free_port()}/0"


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A Redis URL whose server accepts connections and then never answers."""
    held: list[SocketStream] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def hold(stream: SocketStream) -> None:
        held.append(stream)  # kept open, never read from or written to, until the test ends

    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, hold)
            yield f"redis://127.0.0.1:{port}/0"
            tg.cancel_scope.cancel()
    finally:
        for stream in held:
            await stream.aclose()
        await listener.aclose()
