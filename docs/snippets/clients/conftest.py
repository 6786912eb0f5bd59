import pytest
from fastapi import FastAPI

import main


@pytest.fixture
def app() -> FastAPI:
    return main.app


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Every @pytest.mark.anyio test runs twice: on asyncio and on trio.
    backend: str = request.param
    return backend
