"""Fixtures of the help desk's test suite: a fresh desk and app per test, and a client for it."""

from __future__ import annotations

from typing import Literal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from examples.helpdesk.app import HelpDesk, create_app


@pytest.fixture
def desk() -> HelpDesk:
    """The help desk's state: tickets, sent emails, channel messages, search index, audit log."""
    return HelpDesk()


@pytest.fixture
def app(desk: HelpDesk) -> FastAPI:
    """The app under test; the `tasks_recorder` fixture finds it by this name."""
    return create_app(desk)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    """A client for sync tests."""
    return TestClient(app)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Literal["asyncio", "trio"]:
    """Run the async tests on asyncio and on trio."""
    backend: Literal["asyncio", "trio"] = request.param
    return backend
