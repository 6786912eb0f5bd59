from __future__ import annotations

from typing import Literal

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Literal["asyncio", "trio"]:
    """Run every async test (and every TestClient test that asks for it) on asyncio and on trio."""
    backend: Literal["asyncio", "trio"] = request.param
    return backend
