"""`app` fixtures as apps write them: wrapped by asgi-lifespan or by middleware around the app (issue 22)."""

from __future__ import annotations

import textwrap

import pytest

from fastapi_tasks_testing._apps import MAX_STEPS, find_fastapi_app

APP = """
from fastapi import FastAPI

from fastapi_tasks import Tasks, add_tasks


def send_email(to: str) -> None:
    pass


app = FastAPI()
add_tasks(app)


@app.post("/signup")
async def signup(tasks: Tasks) -> None:
    tasks.after_response.schedule(send_email, "ada@b.c")


class Timing:
    # Pure ASGI middleware a user wraps the app in, outside FastAPI.
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)
"""

NO_RANDOM_ORDER = ("-p", "no:randomly")


@pytest.mark.parametrize(
    "fixture",
    [
        pytest.param(
            """
            @pytest.fixture
            async def app():
                async with LifespanManager(myapp.app) as manager:
                    yield manager.app  # a function that calls the app with the lifespan's state
            """,
            id="LifespanManager",
        ),
        pytest.param(
            """
            @pytest.fixture
            def app():
                return myapp.Timing(myapp.Timing(myapp.app))
            """,
            id="middleware",
        ),
    ],
)
def test_the_recorder_finds_the_fastapi_app_inside_a_wrapped_app(pytester: pytest.Pytester, fixture: str) -> None:
    pytester.makepyfile(myapp=APP)
    pytester.syspathinsert()
    pytester.makepyfile(
        textwrap.dedent(
            """
            import httpx
            import pytest
            from asgi_lifespan import LifespanManager

            import myapp
            """
        )
        + textwrap.dedent(fixture)
        + textwrap.dedent(
            """
        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        @pytest.mark.anyio
        async def test_signup(app, tasks_recorder):
            assert tasks_recorder.app is myapp.app
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                await client.post("/signup")
            tasks_recorder.assert_succeeded(myapp.send_email, "ada@b.c")
        """
        )
    )

    pytester.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=1)


def test_an_app_without_a_fastapi_app_inside_says_how_to_install(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest


        async def bare_asgi_app(scope, receive, send):
            pass


        @pytest.fixture
        def app():
            return bare_asgi_app


        def test_it(tasks_recorder):
            pass
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(errors=1)
    result.stdout.re_match_lines(
        [
            r"^E +TypeError: The `app` fixture is <function bare_asgi_app at 0x[0-9a-f]+>, not a FastAPI app, and no "
            r"FastAPI app was found inside it \(through its `\.app` attributes and the functions it wraps\); "
            r"tasks_recorder installs itself on a FastAPI app\. Install it in the test with "
            r"tasks_recorder\.install\(app\), given the FastAPI app, or name the app with the ini option "
            r'fastapi_tasks_app = "package\.module:app"\.$'
        ]
    )


def test_the_search_is_bounded() -> None:
    class Wrapper:
        def __init__(self, app: object) -> None:
            self.app = app

        def __call__(self) -> None:
            pass  # pragma: no cover - never called

    from fastapi import FastAPI

    inner = FastAPI()
    near: object = inner
    for _ in range(MAX_STEPS - 1):
        near = Wrapper(near)
    far = Wrapper(near)

    assert find_fastapi_app(near) is inner
    assert find_fastapi_app(far) is None
    looped = Wrapper(None)
    looped.app = looped
    assert find_fastapi_app(looped) is None


def test_a_variable_the_wrapper_closes_over_but_not_yet_set_is_passed_over() -> None:
    from fastapi import FastAPI

    inner = FastAPI()

    def wrapper() -> object:
        return inner, assigned_later  # pragma: no cover - never called

    # Its cell is empty until the line below runs: reading it raises ValueError, which the search skips.
    found = find_fastapi_app(wrapper)
    assigned_later = 1

    assert found is inner
    assert assigned_later == 1
