"""A real uvicorn server on 127.0.0.1, in a thread of this process (so `gc` sees its objects)."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import anyio.to_thread
import uvicorn
from fastapi import FastAPI

__all__ = ["LiveServer"]

# Bounds for start-up and shutdown only; no test asserts a timing.
_START_DEADLINE = 30.0
_STOP_DEADLINE = 60.0


class LiveServer:
    """Serve `app` with uvicorn (h11, asyncio) on a free port of 127.0.0.1 until `stop()`.

    The listening socket is bound before the server thread starts, so the port is known at once
    and early connections wait in the backlog instead of being refused: no readiness polling.
    `started` is set by the app's lifespan (see `_apps.ServerHooks`), and `start()` waits on it.

    Parameters:
        app: the app to serve; its lifespan must set `hooks.started`.
        started: the event the app's lifespan sets once it is up.
        graceful_timeout: uvicorn's `timeout_graceful_shutdown`: how long shutdown waits for
            requests still in progress before cancelling them (`None`: wait for them).
    """

    def __init__(self, app: FastAPI, started: threading.Event, *, graceful_timeout: int | None = None) -> None:
        self._started = started
        # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
        # sockets whose proto says TCP, and the accepted ones inherit it. With Nagle on, uvicorn's
        # separate writes of a response's head and body waited out the client's delayed ACK: every
        # request after a connection's first took 40 ms more.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(1024)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",
            lifespan="on",
            log_config=None,  # keep pytest's log capture in charge
            access_log=False,
            timeout_graceful_shutdown=graceful_timeout,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, name=f"uvicorn:{self.port}", daemon=True
        )

    def start(self) -> LiveServer:
        """Start serving; return once the app's lifespan has started."""
        self._thread.start()
        if not self._started.wait(_START_DEADLINE):
            self.server.should_exit = True
            raise RuntimeError(f"uvicorn on {self.url} did not start within {_START_DEADLINE:g} s")
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit (as on SIGTERM) and wait until its lifespan has shut down."""
        self.server.should_exit = True
        self._thread.join(_STOP_DEADLINE)
        self._socket.close()
        if self._thread.is_alive():
            raise RuntimeError(f"uvicorn on {self.url} did not stop within {_STOP_DEADLINE:g} s")

    async def astop(self) -> None:
        """`stop()` without blocking the caller's event loop (its clients may still be closing)."""
        await anyio.to_thread.run_sync(self.stop)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread.is_alive():
            self.stop()
        else:
            self._socket.close()
