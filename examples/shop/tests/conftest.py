"""Fixtures of the shop's test suite: a fresh shop and app per test, and a client for it."""

from __future__ import annotations

from typing import Literal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from examples.shop.app import Shop, create_app


@pytest.fixture
def shop() -> Shop:
    """The shop's state: users, orders, sent emails, audit entries, captured payments."""
    return Shop()


@pytest.fixture
def app(shop: Shop) -> FastAPI:
    """The app under test; the `tasks_recorder` fixture finds it by this name."""
    return create_app(shop)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    """A client for sync tests. The recorder needs no lifespan, so there is no `with` block."""
    return TestClient(app)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Literal["asyncio", "trio"]:
    """Run the async tests on asyncio and on trio."""
    backend: Literal["asyncio", "trio"] = request.param
    return backend
