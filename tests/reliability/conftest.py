"""Fixtures of the reliability suite."""

from __future__ import annotations

from typing import Literal

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Literal["asyncio", "trio"]:
    """In-process scenarios run on both backends; tests against uvicorn (asyncio only) override this."""
    backend: Literal["asyncio", "trio"] = request.param
    return backend
