"""The plugin's teardown reports for what production logs and contains, and for a lost override (pytester)."""

from __future__ import annotations

import pytest

APP = """
from fastapi import FastAPI
from fastapi_tasks import TaskConfig, Tasks, add_tasks


def page_oncall(task, exc):
    raise KeyError("no such alert channel")


def charge_card(amount: int) -> None:
    raise ValueError("card declined")


def audit(action: str) -> None:
    pass


app = FastAPI()
add_tasks(app, config=TaskConfig(on_error=page_oncall))


@app.post("/pay")
async def pay(tasks: Tasks) -> None:
    tasks.after_response.schedule(charge_card, 42)


@app.post("/audit")
async def audit_endpoint(tasks: Tasks) -> None:
    tasks.schedule(audit, "viewed")
"""

CONFTEST = """
import pytest
from fastapi.testclient import TestClient

import myapp


@pytest.fixture
def app():
    return myapp.app
"""

NO_RANDOM_ORDER = ("-p", "no:randomly")


@pytest.fixture
def app_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=APP)
    pytester.makeconftest(CONFTEST)
    pytester.syspathinsert()


@pytest.mark.usefixtures("app_module")
def test_a_raising_on_error_handler_is_reported_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_pay(app, tasks_recorder):
            with TestClient(app) as client:
                client.post("/pay")
            tasks_recorder.assert_failed(myapp.charge_card, ValueError)
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_pay*",
            "1 on_error handler raised during the test (production logs and contains it):",
            "- #1 after_response charge_card(42) (POST /pay): page_oncall raised KeyError: 'no such alert channel'",
            "Assert on them with tasks_recorder.assert_handler_failed(...), or, if failures are expected, "
            "mark the test with @pytest.mark.tasks_recorder(expect_failures=True).",
        ],
        consecutive=True,
    )


@pytest.mark.usefixtures("app_module")
def test_asserting_on_the_handler_failure_passes_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_pay(app, tasks_recorder):
            with TestClient(app) as client:
                client.post("/pay")
            tasks_recorder.assert_failed(myapp.charge_card, ValueError)
            tasks_recorder.assert_handler_failed(myapp.charge_card, KeyError)
        """
    )

    pytester.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=1)


@pytest.mark.usefixtures("app_module")
def test_overrides_replaced_by_a_client_fixture_fail_the_request_and_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from fastapi.testclient import TestClient

        import myapp


        @pytest.fixture
        def client(app, tasks_recorder):
            app.dependency_overrides = {}  # as FastAPI's docs show it; it drops the recorder's override
            with TestClient(app) as client:
                yield client


        def test_audit(client, tasks_recorder):
            client.post("/audit")
            tasks_recorder.assert_scheduled(myapp.audit, "viewed")
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1, errors=1)
    gone = (
        "tasks_recorder's override of the Tasks dependency is gone from <fastapi.applications.FastAPI object at "
        "0x*>.dependency_overrides: something replaced or cleared the dict after the recorder was installed (like "
        "`app.dependency_overrides = {...}` in a fixture), so the app's tasks run unrecorded on its real "
        "scheduler. Add overrides to the dict instead of replacing it (`app.dependency_overrides[dep] = fake`), "
        "or request the fixture that resets it before tasks_recorder."
    )
    gone = gone.replace("[", "[[]")  # fnmatch reads "[dep]" as a character class
    # The request itself fails with the explanation...
    result.stdout.fnmatch_lines([f"E * fastapi_tasks.errors.FastAPITasksError: {gone}"])
    # ...and teardown says it again, for a test that caught the request's error.
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_audit*", gone])


@pytest.mark.usefixtures("app_module")
def test_overrides_replaced_without_a_request_are_reported_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_nothing_requested(app, tasks_recorder):
            app.dependency_overrides = {}
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_nothing_requested*",
            "tasks_recorder's override of the Tasks dependency is gone from *",
        ]
    )


@pytest.mark.usefixtures("app_module")
def test_a_test_that_overrides_tasks_itself_is_told_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from fastapi_tasks import get_tasks_scheduler


        def fake_scheduler():
            return None


        def test_own_override(app, tasks_recorder):
            app.dependency_overrides[get_tasks_scheduler] = fake_scheduler
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.re_match_lines(
        [
            r"^_+ ERROR at teardown of test_own_override _+$",
            r"^tasks_recorder's override of the Tasks dependency of <fastapi\.applications\.FastAPI object at "
            r"0x[0-9a-f]+> was replaced by fake_scheduler: the test \(or a fixture\) overrode Tasks itself after "
            r"the recorder was installed, so the app's tasks go to that override, unrecorded\. Let tasks_recorder "
            r"stand in for Tasks \(record mode runs no task; replace\(\) stands in for one\), or do not use "
            r"tasks_recorder in a test that brings its own Tasks\.$",
        ],
        consecutive=True,
    )
