"""The wait outside the app: a test client's call returns once the tasks it started have ended.

`RecordingScheduler.install(app)` puts `OutsideWait` around the app's outermost ASGI callable
(`app.middleware_stack`, outside every middleware, `ServerErrorMiddleware` included) and
`uninstall()` takes it away. A client call goes through it: after the whole ASGI call has
returned, it waits, bounded, for every task of the call and every task those schedule, so nothing
inside the app (a timeout middleware, a request timer) sees the wait. Starlette's `TestClient`
returns a fully read response only once the app's ASGI call returns, and httpx's `ASGITransport`
awaits the whole call before it answers: either way the test goes on after the wait.

Without the app's lifespan (a bare `TestClient(app)`, or `ASGITransport` without a lifespan
manager) a call gets a task group and a runtime of its own for its tasks, which end with the call.

A client call that is cancelled (the client gave up) ends at once, as in production, where the
request's tasks go on without it: nothing waits for them then. A WebSocket session that the client
closes is not cancelled at once, as `TestClient` would: the app goes on until it returns, as under
a server, where sending to a client that has gone raises `OSError`; only past the bound is it cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tasks._seam import NEW_RUNTIME_KEY, RUNTIME_KEY, TG_KEY, Runtime, serving

from ._engine import Call

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["OutsideWait", "Waiter", "current_call"]

current_call: ContextVar[Call | None] = ContextVar("fastapi_tasks_testing_call", default=None)
"""The client call being served, as the recorder's `Tasks` dependency sees it; `None` outside `OutsideWait`."""


class Waiter(Protocol):
    """What the wait needs of the recorder that installed it."""

    @property
    def mode(self) -> str:
        """ "run", "record" or "spy"."""
        ...

    @property
    def wait_timeout(self) -> float:
        """Seconds a client call waits for its tasks after the app's ASGI call returned."""
        ...

    def _waited_too_long(self, call: Call, scope: Scope) -> BaseException:
        """The error that fails the client's call whose tasks outlasted the wait; it names them."""
        ...


def _new_runtime_of(scope: Scope) -> Callable[[TaskGroup], Runtime] | None:
    """How the app whose lifespan would serve this call builds its runtime: that of the outermost app with `add_tasks`.

    `None` when there is none: no app on the way has `add_tasks`, or the app the recorder is installed
    on is mounted in one without it, whose lifespan (the only one a server runs) has no tasks.
    """
    holder = serving.get()  # set by the add_tasks middleware of an app this one is mounted in
    if holder is not None:
        return holder.new_runtime
    app = scope.get("app")
    router = scope.get("router")  # the router of an app this one is mounted in, if any
    if router is not None and router is not getattr(app, "router", None):
        return None
    new_runtime: Callable[[TaskGroup], Runtime] | None = getattr(getattr(app, "state", None), NEW_RUNTIME_KEY, None)
    return new_runtime


class OutsideWait:
    """Around the app's outermost ASGI callable: each client call waits for its tasks once the app returned."""

    def __init__(self, app: ASGIApp, waiter: Waiter) -> None:
        self.app = app
        self.waiter = waiter
        # Lifespans running through this app (`with TestClient(app)`, LifespanManager): while one runs,
        # a request without the app's runtime fails as in production instead of getting one of its own.
        self.lifespans = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.lifespans += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.lifespans -= 1
            return
        if self.waiter.mode == "spy" or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        call = Call()
        token = current_call.set(call)
        try:
            new_runtime = None if self.lifespans or RUNTIME_KEY in scope.get("state", {}) else _new_runtime_of(scope)
            if new_runtime is None:
                await self._serve(call, scope, receive, send)
            else:
                await self._serve_with_own_runtime(new_runtime, call, scope, receive, send)
        finally:
            current_call.reset(token)

    async def _serve_with_own_runtime(
        self, new_runtime: Callable[[TaskGroup], Runtime], call: Call, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # The call's task group is owned by a task of its own, in a shielded scope, as the lifespan owns the
        # app's: a client that cancels its call (TestClient leaving a WebSocket session) cancels the app, not
        # the call's tasks, which end, after the call, as the lifespan's shutdown would end them.
        close = anyio.Event()

        async def own_the_tasks(*, task_status: anyio.abc.TaskStatus[Runtime]) -> None:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    # Built as the app's lifespan builds it, and put where the lifespan puts it, for this call.
                    runtime = new_runtime(tg)
                    task_status.started(runtime)
                    await close.wait()
                    with anyio.move_on_after(self.waiter.wait_timeout):
                        # What the call did not wait for (detached tasks) ends with it: no lifespan to outlive.
                        await runtime.shutdown()
                    tg.cancel_scope.cancel()

        # Entered and left by hand, not in `async with`: the app's own exception must reach the client
        # unchanged, not wrapped in the task group's exception group.
        owner = anyio.create_task_group()
        await owner.__aenter__()
        try:
            runtime: Runtime = await owner.start(own_the_tasks)
            state = scope.setdefault("state", {})
            state[TG_KEY] = runtime.tg
            state[RUNTIME_KEY] = runtime
            await self._serve(call, scope, receive, send)
        finally:
            close.set()
            # The owner's body is shielded: leaving waits for it to end the call's tasks, cancelled or not.
            await owner.__aexit__(None, None, None)

    async def _serve(self, call: Call, scope: Scope, receive: Receive, send: Send) -> None:
        cancelled = False
        try:
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        except anyio.get_cancelled_exc_class():
            # The client gave up on its call (or its test cancelled it): the call ends now, as it does in
            # production, where the request's tasks go on without it; nothing waits for them then.
            cancelled = True
            raise
        finally:
            call.mark_returned()
            if not cancelled and call.unfinished:  # (no scope to build when every task has ended already)
                with anyio.move_on_after(self.waiter.wait_timeout, shield=True):
                    await call.wait()
                if call.unfinished:
                    for task in list(call.unfinished):
                        task.cancel()
                    raise self.waiter._waited_too_long(call, scope)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = False

        async def send_while_connected(message: Message) -> None:
            if gone:
                raise OSError("the client has closed the WebSocket")
            await send(message)

        outcome: list[BaseException] = []
        done = anyio.Event()

        async def serve(*, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
            # Shielded: the client closing the session must not cancel the app (a server does not).
            with anyio.CancelScope(shield=True) as scope_of_the_app:
                task_status.started(scope_of_the_app)
                try:
                    await self.app(scope, receive, send_while_connected)
                except BaseException as exc:  # handed to the caller, unwrapped
                    outcome.append(exc)
                finally:
                    done.set()

        closed_by_the_client = False
        try:
            async with anyio.create_task_group() as tg:
                app_scope: anyio.CancelScope = await tg.start(serve)
                try:
                    await done.wait()
                except anyio.get_cancelled_exc_class():
                    # The client closed the session (TestClient cancels it): the app goes on, as under a server,
                    # and the session has ended normally once the app returns; past the bound it is cancelled.
                    gone = True
                    with anyio.move_on_after(self.waiter.wait_timeout, shield=True):
                        await done.wait()
                    if not done.is_set():
                        app_scope.cancel()
                        raise
                    closed_by_the_client = True
        except anyio.get_cancelled_exc_class():
            if not closed_by_the_client:
                raise
        if outcome:
            raise outcome[0]
