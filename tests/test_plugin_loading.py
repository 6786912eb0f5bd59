"""How the plugin is loaded, as docs/testing/index.md says (issue 22): each way, on the installed pytest (pytester)."""

from __future__ import annotations

import pytest

TEST = """
def test_it(tasks_recorder):
    tasks_recorder.schedule(print, "hi")
    tasks_recorder.assert_scheduled(print)
"""

NO_RANDOM_ORDER = ("-p", "no:randomly")


@pytest.fixture
def autoload_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_the_plugin_is_registered_as_fastapi_tasks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TEST)
    result = pytester.runpytest(*NO_RANDOM_ORDER, "--trace-config")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"^    fastapi_tasks\s+: .*fastapi_tasks_testing/_entry_point\.py$"])


def test_no_fastapi_tasks_turns_it_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TEST)
    result = pytester.runpytest(*NO_RANDOM_ORDER, "-p", "no:fastapi_tasks")
    result.assert_outcomes(errors=1)
    result.stdout.re_match_lines([r"^E\s+fixture 'tasks_recorder' not found$"])


@pytest.mark.usefixtures("autoload_off")
def test_with_autoload_off_p_fastapi_tasks_loads_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TEST)
    pytester.runpytest(*NO_RANDOM_ORDER).assert_outcomes(errors=1)  # not loaded
    pytester.runpytest(*NO_RANDOM_ORDER, "-p", "fastapi_tasks").assert_outcomes(passed=1)


@pytest.mark.parametrize("autoload", ["on", "off"])
def test_the_plugin_module_can_be_named_with_p(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, autoload: str
) -> None:
    if autoload == "off":
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(TEST)
    pytester.runpytest(*NO_RANDOM_ORDER, "-p", "fastapi_tasks_testing.plugin").assert_outcomes(passed=1)


@pytest.mark.parametrize("autoload", ["on", "off"])
def test_the_plugin_module_can_be_named_in_pytest_plugins(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, autoload: str
) -> None:
    if autoload == "off":
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest('pytest_plugins = ["fastapi_tasks_testing.plugin"]')
    pytester.makepyfile(TEST)
    pytester.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=1)
