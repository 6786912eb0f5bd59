from __future__ import annotations

import pytest

# The plugin is disabled as an entry point in addopts (`-p no:fastapi_tasks`) and loaded here
# instead, after pytest-cov has started, so that its module is measured too.
pytest_plugins = ["fastapi_tasks_testing.plugin"]


def pytest_configure(config: pytest.Config) -> None:
    try:
        from starlette.exceptions import StarletteDeprecationWarning  # noqa: F401
    except ImportError:  # Starlette before 1.0: no such warning, and pytest refuses a filter naming its class
        return
    # Starlette 1.x asks TestClient users to move from httpx to httpx2; users have either, and we
    # test on httpx deliberately, so this one warning is expected rather than an error.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Using `httpx` with `starlette.testclient` is deprecated"
        ":starlette.exceptions.StarletteDeprecationWarning",
    )
