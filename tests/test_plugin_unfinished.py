"""Run mode's promise at the plugin's level: every task of a request ends during its request, or the test says so.

- a client's call waits for its tasks, bounded by `wait_timeout` (marker, ini option): past it the call
  fails naming each unfinished task and how to let it go;
- `detach()` lets a task outlive its request;
- at teardown, a task that ended cancelled or stayed pending fails the test, unless held, detached or
  asserted on.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

NO_RANDOM_ORDER = ("-p", "no:randomly")

APP = """
import anyio
from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks

app = FastAPI()
add_tasks(app)


async def poll() -> None:
    await anyio.sleep_forever()


async def audit(event: str) -> str:
    return event


@app.post("/poll")
async def start_polling(tasks: Tasks) -> dict[str, str]:
    tasks.schedule(poll)
    return {"polling": "yes"}


@app.post("/cancel")
async def cancel_it(tasks: Tasks) -> dict[str, str]:
    task = tasks.after_response.schedule(audit, "never")
    task.cancel()
    return {"cancelled": "yes"}
"""

CONFTEST = """
import pytest

import myapp


@pytest.fixture
def app():
    return myapp.app
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(myapp=APP)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_a_task_that_outlasts_the_wait_fails_the_call_naming_it(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest
        from fastapi.testclient import TestClient


        @pytest.mark.tasks_recorder(wait_timeout=0.05)
        def test_poll(app, tasks_recorder):
            TestClient(app).post("/poll")
        """
    )

    result = project.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: tasks_recorder waited 0.05 s after POST /poll returned for the tasks it started, "
            "and 1 of them had not ended; they were cancelled:",
            "E * - #1 immediate 'poll' (running, from POST /poll)",
            "E * A task meant to outlive its request (a poller, say) can be let go: tasks_recorder.detach(task) "
            "(the call no longer waits for it), or kept from running: tasks_recorder.hold(task). To wait longer: "
            "@pytest.mark.tasks_recorder(wait_timeout=...) or the ini option fastapi_tasks_wait_timeout.",
        ]
    )


def test_the_ini_option_sets_the_wait(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nfastapi_tasks_wait_timeout = 0.05\n")
    project.makepyfile(
        """
        from fastapi.testclient import TestClient


        def test_poll(app, tasks_recorder):
            assert tasks_recorder.wait_timeout == 0.05
            TestClient(app).post("/poll")
        """
    )

    result = project.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E * AssertionError: tasks_recorder waited 0.05 s after POST /poll returned*"])


def test_a_bad_ini_wait_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nfastapi_tasks_wait_timeout = soon\n")
    project.makepyfile("def test_it(tasks_recorder):\n    pass\n")

    result = project.runpytest(*NO_RANDOM_ORDER)

    result.stderr.fnmatch_lines(["ERROR: fastapi_tasks_wait_timeout must be a number of seconds, like 30, not 'soon'."])


def test_a_detached_task_outlives_its_request(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_poll(app, tasks_recorder):
            tasks_recorder.detach(myapp.poll)
            with TestClient(app) as client:
                assert client.post("/poll").json() == {"polling": "yes"}
                [record] = tasks_recorder.records
                assert not record.done  # the call returned; the poller runs on, as in production
            # The app's shutdown cancelled it: a detached task is not reported for that.
            assert record.status.value == "cancelled"
        """
    )

    project.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=1)


def test_a_task_that_ended_cancelled_is_reported_at_teardown(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        from fastapi.testclient import TestClient


        def test_cancel(app, tasks_recorder):
            assert TestClient(app).post("/cancel").status_code == 200
        """
    )

    result = project.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "1 background task did not run to its end during the test (run mode):",
            "- #1 after_response audit('never') (POST /cancel): cancelled",
            "Assert on them if that is expected (tasks_recorder.assert_cancelled(...)), keep a task from "
            "running with tasks_recorder.hold(task), or let one outlive its request with tasks_recorder.detach(task).",
        ]
    )


def test_an_asserted_cancellation_is_not_reported(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_cancel(app, tasks_recorder):
            TestClient(app).post("/cancel")
            tasks_recorder.assert_cancelled(myapp.audit, "never")
        """
    )

    project.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=1)


def test_a_held_task_is_not_reported(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_hold(app, tasks_recorder):
            tasks_recorder.hold(myapp.poll)
            TestClient(app).post("/poll")
            assert [r.status.value for r in tasks_recorder.records] == ["pending"]
        """
    )

    project.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=1)
