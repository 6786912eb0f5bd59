"""No assertion passes without evidence (issue 22): the fixture's recorder must see the app (pytester)."""

from __future__ import annotations

import re

import pytest

APP = """
from fastapi import BackgroundTasks, FastAPI

from fastapi_tasks import Tasks, add_tasks

sent = []


def send_email(to: str) -> None:
    sent.append(to)


app = FastAPI()
add_tasks(app)
other_app = FastAPI()
add_tasks(other_app)


@app.post("/signup")
async def signup(tasks: Tasks) -> None:
    tasks.after_response.schedule(send_email, "ada@b.c")


@app.post("/legacy")
async def legacy(background_tasks: BackgroundTasks) -> None:
    background_tasks.add_task(send_email, "grace@b.c")


@other_app.post("/signup")
async def other_signup(tasks: Tasks) -> None:
    tasks.after_response.schedule(send_email, "linus@b.c")
"""

NO_RANDOM_ORDER = ("-p", "no:randomly")
ADDRESS = "<fastapi.applications.FastAPI object at <ADDRESS>>"
HOW_TO_INSTALL = [
    "Install it in one of three ways:",
    "- a fixture named `app` that returns the FastAPI app (a fixture named otherwise is not looked at);",
    '- the ini option fastapi_tasks_app = "package.module:app";',
    "- tasks_recorder.install(app) in the test, before the requests.",
]


def pinned(*lines: str, prefix: str = "") -> list[str]:
    """Anchored regexes for whole lines of pytest's output, `<ADDRESS>` standing for an object's address."""
    return ["^" + re.escape(prefix + line).replace(re.escape("<ADDRESS>"), "0x[0-9a-f]+") + "$" for line in lines]


@pytest.fixture
def app_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=APP)
    pytester.syspathinsert()


@pytest.mark.usefixtures("app_module")
@pytest.mark.parametrize(
    ("path", "what"), [("/signup", "reached the Tasks dependency"), ("/legacy", "created its BackgroundTasks")]
)
def test_a_request_while_the_recorder_is_installed_on_no_app_fails_and_says_how_to_install_it(
    pytester: pytest.Pytester, path: str, what: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest
        from fastapi.testclient import TestClient

        import myapp


        @pytest.fixture
        def web_app():  # a fixture named otherwise than `app`: the recorder does not find it
            return myapp.app


        def test_signup(web_app, tasks_recorder):
            with TestClient(web_app) as client:
                client.post("{path}")
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1, errors=1)
    problem = (
        f"A request (POST {path}) to {ADDRESS} {what} while the tasks_recorder fixture is installed on no app: "
        f"its tasks would run unrecorded, so the request fails. {HOW_TO_INSTALL[0]}"
    )
    # The request fails, before its endpoint runs...
    result.stdout.re_match_lines(
        pinned(problem, prefix="E       fastapi_tasks.errors.FastAPITasksError: ")
        + pinned(*HOW_TO_INSTALL[1:], prefix="E       "),
        consecutive=True,
    )
    # ...and teardown says it again, for a test whose client swallowed the error.
    result.stdout.re_match_lines(
        [r"^_+ ERROR at teardown of test_signup _+$", *pinned(problem, *HOW_TO_INSTALL[1:])], consecutive=True
    )


NEGATIVE_ASSERTIONS = {
    "assert_not_scheduled": "tasks_recorder.assert_not_scheduled(myapp.send_email)",
    "assert_nothing_scheduled": "tasks_recorder.assert_nothing_scheduled()",
    "assert_not_dispatched": "tasks_recorder.assert_not_dispatched('ship')",
    "assert_nothing_dispatched": "tasks_recorder.assert_nothing_dispatched()",
}


@pytest.mark.usefixtures("app_module")
@pytest.mark.parametrize("view", ["recorder", "request", "capture"])
@pytest.mark.parametrize("method", sorted(NEGATIVE_ASSERTIONS))
def test_a_negative_assertion_never_passes_on_a_recorder_that_saw_no_app(
    pytester: pytest.Pytester, method: str, view: str
) -> None:
    assertion = NEGATIVE_ASSERTIONS[method]
    if view == "request":
        assertion = assertion.replace("tasks_recorder.", "tasks_recorder.for_request('POST', '/signup').")
    elif view == "capture":
        assertion = assertion.replace("tasks_recorder.", "new.")
    pytester.makepyfile(
        f"""
        import myapp


        def test_nothing_happened(tasks_recorder):
            with tasks_recorder.capture() as new:
                pass
            {assertion}
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        pinned(
            f"fastapi_tasks.errors.FastAPITasksError: tasks_recorder.{method}() has nothing to go on: the "
            "tasks_recorder fixture is installed on no app, so it saw no request, and an assertion on it would "
            f"pass or fail whatever the app did. {HOW_TO_INSTALL[0]}",
            *HOW_TO_INSTALL[1:],
            "(To hand a scheduler to the code under test, without an app, use a RecordingScheduler() of your own.)",
            prefix="E       ",
        ),
        consecutive=True,
    )


@pytest.mark.usefixtures("app_module")
def test_record_mode_never_lets_a_task_run_unrecorded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from fastapi.testclient import TestClient

        import myapp


        @pytest.mark.tasks_recorder(mode="record")
        def test_not_installed(tasks_recorder):
            with TestClient(myapp.app, raise_server_exceptions=False) as client:
                assert client.post("/signup").status_code == 500
                assert client.post("/legacy").status_code == 500
            assert myapp.sent == []


        @pytest.mark.tasks_recorder(mode="record")
        def test_installed_on_another_app(tasks_recorder):
            tasks_recorder.install(myapp.app)
            with TestClient(myapp.other_app, raise_server_exceptions=False) as client:
                assert client.post("/signup").status_code == 500
            assert myapp.sent == []
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=2, errors=2)
    result.stdout.re_match_lines(
        [
            r"^_+ ERROR at teardown of test_not_installed _+$",
            # The first request's problem; the second is told by the request itself.
            *pinned(
                f"A request (POST /signup) to {ADDRESS} reached the Tasks dependency while the tasks_recorder fixture "
                f"is installed on no app: its tasks would run unrecorded, so the request fails. {HOW_TO_INSTALL[0]}"
            ),
        ],
        consecutive=True,
    )
    result.stdout.re_match_lines(
        [
            r"^_+ ERROR at teardown of test_installed_on_another_app _+$",
            *pinned(
                f"A request (POST /signup) to {ADDRESS} reached the Tasks dependency in record mode, but "
                f"tasks_recorder is installed on another app, {ADDRESS}: its tasks would run for real, unrecorded, "
                "so the request fails. Install tasks_recorder on the app the test calls."
            ),
        ],
        consecutive=True,
    )


@pytest.mark.usefixtures("app_module")
def test_a_recorder_with_evidence_answers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_used_on_its_own(tasks_recorder):
            # Handed to code as a scheduler: its records are the evidence.
            tasks_recorder.schedule(myapp.send_email, "ada@b.c")
            tasks_recorder.assert_not_scheduled(myapp.send_email, "grace@b.c")


        def test_installed_then_uninstalled(tasks_recorder):
            tasks_recorder.install(myapp.app)
            tasks_recorder.uninstall()
            tasks_recorder.assert_nothing_scheduled()


        def test_run_mode_on_another_app(tasks_recorder):
            tasks_recorder.install(myapp.other_app)
            with TestClient(myapp.app) as client:
                client.post("/signup")  # not the app it is installed on: run mode lets it run, as it would
            tasks_recorder.assert_nothing_scheduled()
        """
    )

    pytester.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=3)
