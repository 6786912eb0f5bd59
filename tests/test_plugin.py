"""The pytest plugin, tested as users meet it: through `pytester` runs of small test suites."""

from __future__ import annotations

import pytest

APP = """
from fastapi import FastAPI
from fastapi_tasks import Tasks, add_tasks


def send_email(address: str) -> None:
    pass


def audit(action: str) -> None:
    pass


def explode(reason: str) -> None:
    raise ValueError(reason)


app = FastAPI()
add_tasks(app)


@app.post("/signup")
async def signup(email: str, tasks: Tasks) -> dict[str, str]:
    tasks.after_route.schedule(audit, "signup " + email)
    tasks.after_response.schedule(send_email, email)
    return {"email": email}


@app.post("/explode")
async def explode_endpoint(tasks: Tasks) -> None:
    tasks.schedule(audit, "explode")
    tasks.after_response.schedule(explode, "bad")


class Holder:
    app = app


not_an_app = 42
"""

APP_FIXTURE = """
import pytest

import myapp


@pytest.fixture
def app():
    return myapp.app
"""

NO_RANDOM_ORDER = ("-p", "no:randomly")


@pytest.fixture
def app_module(pytester: pytest.Pytester) -> None:
    """`myapp.py`, importable by the inner test run."""
    pytester.makepyfile(myapp=APP)
    pytester.syspathinsert()


# --- app discovery -------------------------------------------------------------------------------


@pytest.mark.usefixtures("app_module")
def test_app_found_through_the_app_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_signup(app, tasks_recorder):
            assert tasks_recorder.app is app
            TestClient(app).post("/signup", params={"email": "a@b.c"})
            tasks_recorder.assert_scheduled(myapp.send_email, "a@b.c", phase="after_response")
            tasks_recorder.assert_scheduled(myapp.audit, "signup a@b.c", phase="after_route")
            tasks_recorder.assert_succeeded(myapp.audit)
            tasks_recorder.assert_succeeded(myapp.send_email)
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=1)


@pytest.mark.usefixtures("app_module")
@pytest.mark.parametrize("spec", ["myapp:app", "myapp:Holder.app", " myapp:app "])
def test_app_found_through_the_ini_option(pytester: pytest.Pytester, spec: str) -> None:
    pytester.makeini(f"[pytest]\nfastapi_tasks_app = {spec}\n")
    pytester.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_signup(tasks_recorder):
            assert tasks_recorder.app is myapp.app
            TestClient(myapp.app).post("/signup", params={"email": "a@b.c"})
            tasks_recorder.assert_scheduled_once(myapp.send_email, "a@b.c")
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=1)


@pytest.mark.usefixtures("app_module")
def test_app_fixture_wins_over_the_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfastapi_tasks_app = myapp:not_an_app\n")
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(
        """
        def test_it(app, tasks_recorder):
            assert tasks_recorder.app is app
        """
    )

    pytester.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=1)


@pytest.mark.usefixtures("app_module")
def test_app_installed_explicitly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        import myapp
        from fastapi_tasks import get_tasks_scheduler


        def test_signup(tasks_recorder):
            assert tasks_recorder.app is None
            assert myapp.app.dependency_overrides == {}
            tasks_recorder.install(myapp.app)
            TestClient(myapp.app).post("/signup", params={"email": "a@b.c"})
            tasks_recorder.assert_scheduled(myapp.send_email, "a@b.c")


        def test_uninstalled_after_the_test():
            assert myapp.app.dependency_overrides == {}
        """
    )

    pytester.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=2)


@pytest.mark.usefixtures("app_module")
@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("myapp", "fastapi_tasks_app must be 'module:attribute', like 'myapp.main:app', not 'myapp'."),
        (":app", "fastapi_tasks_app must be 'module:attribute', like 'myapp.main:app', not ':app'."),
        ("nosuchmodule:app", "fastapi_tasks_app = 'nosuchmodule:app': cannot import 'nosuchmodule': *"),
        ("myapp:missing", "fastapi_tasks_app = 'myapp:missing': 'myapp' has no attribute 'missing'."),
        ("myapp:Holder.nope", "fastapi_tasks_app = 'myapp:Holder.nope': 'myapp' has no attribute 'Holder.nope'."),
    ],
)
def test_bad_ini_option(pytester: pytest.Pytester, spec: str, error: str) -> None:
    pytester.makeini(f"[pytest]\nfastapi_tasks_app = {spec}\n")
    pytester.makepyfile(
        """
        def test_it(tasks_recorder):
            pass
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"E *UsageError: {error}"])


@pytest.mark.usefixtures("app_module")
def test_ini_option_naming_something_else_than_an_app(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfastapi_tasks_app = myapp:not_an_app\n")
    pytester.makepyfile(
        """
        def test_it(tasks_recorder):
            pass
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "E *TypeError: fastapi_tasks_app = 'myapp:not_an_app' is 42, not a FastAPI app, and no FastAPI app was "
            "found inside it (through its `.app` attributes and the functions it wraps); tasks_recorder installs "
            "itself on a FastAPI app. Install it in the test with tasks_recorder.install(app), given the FastAPI "
            'app, or name the app with the ini option fastapi_tasks_app = "package.module:app".'
        ]
    )


def test_app_fixture_that_is_not_an_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest


        @pytest.fixture
        def app():
            return "not an app"


        def test_it(tasks_recorder):
            pass
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["E *TypeError: The `app` fixture is 'not an app', not a FastAPI app, and no FastAPI app was found inside*"]
    )


def test_app_fixture_that_cannot_be_set_up_is_not_skipped_silently(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from fastapi import FastAPI


        @pytest.fixture
        def app(settings):
            return FastAPI()


        def test_it(tasks_recorder):
            pass
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    # The app fixture's own error, not a recorder quietly installed nowhere.
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["E       fixture 'settings' not found"])


# --- modes and marker options --------------------------------------------------------------------


@pytest.mark.usefixtures("app_module")
def test_modes_from_the_marker_and_from_pytestmark(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(
        test_default="""
        from fastapi.testclient import TestClient


        def test_run_is_the_default(app, tasks_recorder):
            assert tasks_recorder.mode == "run"
            TestClient(app).post("/signup", params={"email": "a@b.c"})
            assert [r.status.value for r in tasks_recorder.records] == ["succeeded", "succeeded"]
        """,
        test_module_mark="""
        import pytest
        from fastapi.testclient import TestClient

        pytestmark = pytest.mark.tasks_recorder(mode="record")


        def test_record_from_pytestmark(app, tasks_recorder):
            assert tasks_recorder.mode == "record"
            TestClient(app).post("/signup", params={"email": "a@b.c"})
            assert [r.status.value for r in tasks_recorder.records] == ["pending", "pending"]
            tasks_recorder.run_pending_sync()
            assert [r.status.value for r in tasks_recorder.records] == ["succeeded", "succeeded"]


        @pytest.mark.tasks_recorder(mode="run")
        def test_own_marker_overrides_pytestmark(app, tasks_recorder):
            assert tasks_recorder.mode == "run"


        @pytest.mark.tasks_recorder(expect_failures=True)
        def test_options_add_up(app, tasks_recorder):
            assert (tasks_recorder.mode, tasks_recorder.expect_failures) == ("record", True)
        """,
        test_spy="""
        import pytest
        from fastapi.testclient import TestClient


        @pytest.mark.tasks_recorder(mode="spy")
        def test_spy(app, tasks_recorder):
            assert tasks_recorder.mode == "spy"
            with TestClient(app) as client:
                client.post("/signup", params={"email": "a@b.c"})
                client.portal.call(tasks_recorder.drain)
            assert [r.status.value for r in tasks_recorder.records] == ["succeeded", "succeeded"]
        """,
    )

    result = pytester.runpytest("-v", "--strict-markers", *NO_RANDOM_ORDER)

    result.assert_outcomes(passed=5)


def test_config_marker_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from fastapi_tasks import TaskConfig


        @pytest.mark.tasks_recorder(config=TaskConfig(shield=True))
        def test_it(tasks_recorder):
            assert tasks_recorder.config == TaskConfig(shield=True)
            assert tasks_recorder.schedule(print).shield is True
        """
    )

    pytester.runpytest(*NO_RANDOM_ORDER).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("marker", "error"),
    [
        (
            "tasks_recorder(mode='replay')",
            "E *ValueError: Unknown tasks_recorder mode 'replay'; use one of 'run', 'record', 'spy'.",
        ),
        (
            "tasks_recorder(speed='fast', mood=1)",
            "E *TypeError: @pytest.mark.tasks_recorder got unknown options 'mood', 'speed'; "
            "its options are mode, expect_failures, config, strict, wait_timeout.",
        ),
        (
            # Any truthy value would silently hide every failed task.
            "tasks_recorder(expect_failures='no')",
            "E *TypeError: expect_failures must be True or False, not 'no'",
        ),
        (
            "tasks_recorder('record')",
            "E *TypeError: @pytest.mark.tasks_recorder takes keyword options only, not ('record',): "
            "write @pytest.mark.tasks_recorder(mode='record').",
        ),
    ],
)
def test_bad_marker(pytester: pytest.Pytester, marker: str, error: str) -> None:
    pytester.makepyfile(
        f"""
        import pytest


        @pytest.mark.{marker}
        def test_it(tasks_recorder):
            pass
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([error])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")

    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.tasks_recorder(*, mode='run', expect_failures=False, config=None, strict=False, "
            "wait_timeout=None): options of the tasks_recorder fixture; mode is one of run, record, spy."
        ]
    )


def test_ini_option_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")

    result.stdout.fnmatch_lines(["  fastapi_tasks_app (string):*"])


# --- overrides restored -------------------------------------------------------------------------


@pytest.mark.usefixtures("app_module")
def test_previous_overrides_are_restored_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        import myapp
        from fastapi_tasks import get_tasks_scheduler


        async def previous_scheduler():
            raise AssertionError("the previous override")


        def other_dependency():
            return "other"


        @pytest.fixture(scope="session")
        def app():
            myapp.app.dependency_overrides[get_tasks_scheduler] = previous_scheduler
            myapp.app.dependency_overrides[other_dependency] = other_dependency
            return myapp.app
        """
    )
    pytester.makepyfile(
        """
        from conftest import other_dependency, previous_scheduler
        from fastapi_tasks import get_tasks_scheduler


        def test_overridden(app, tasks_recorder):
            assert app.dependency_overrides[get_tasks_scheduler] is not previous_scheduler
            assert app.dependency_overrides[other_dependency] is other_dependency


        def test_overridden_even_when_the_test_fails(app, tasks_recorder):
            assert app.dependency_overrides[get_tasks_scheduler] is previous_scheduler


        def test_restored(app):
            assert app.dependency_overrides == {
                get_tasks_scheduler: previous_scheduler,
                other_dependency: other_dependency,
            }
        """
    )

    result = pytester.runpytest("-v", *NO_RANDOM_ORDER)

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*::test_overridden PASSED*",
            "*::test_overridden_even_when_the_test_fails FAILED*",
            "*::test_restored PASSED*",
        ]
    )


# --- teardown report of failed tasks ---------------------------------------------------------


FAILING_TEST = """
import pytest
from fastapi.testclient import TestClient

import myapp


{marker}
def test_explode(app, tasks_recorder):
    {inject}
    for _ in range({requests}):
        TestClient(app).post("/explode")
    {check}
"""


@pytest.mark.usefixtures("app_module")
def test_failed_tasks_are_reported_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(FAILING_TEST.format(marker="", inject="pass", check="pass", requests=2))

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_explode _*",
            "2 background tasks failed during the test:",
            "- #2 after_response explode('bad') (POST /explode): failed (ValueError: bad)",
            "- #4 after_response explode('bad') (POST /explode): failed (ValueError: bad)",
            "Assert on them with tasks_recorder.assert_failed(...), or, if failures are expected, "
            "mark the test with @pytest.mark.tasks_recorder(expect_failures=True).",
            "*- Captured log call -*",
        ],
        consecutive=True,
    )
    # The report is the message alone: no traceback of the plugin's own code.
    assert "plugin.py" not in result.stdout.str()


@pytest.mark.usefixtures("app_module")
@pytest.mark.parametrize(
    ("marker", "inject", "check"),
    [
        ("@pytest.mark.tasks_recorder(expect_failures=True)", "pass", "pass"),
        ("", "pass", "assert len(tasks_recorder.filter('explode', status='failed')) == 1"),
        ("", "pass", "tasks_recorder.assert_failed(myapp.explode, ValueError, match='^bad$')"),
        ("", "tasks_recorder.fail(myapp.audit, OSError('disk full'))", "tasks_recorder.assert_failed('explode')"),
        ("", "tasks_recorder.fail(myapp.explode, OSError('disk full'))", "pass"),
    ],
    ids=["expect_failures", "not asserted", "assert_failed", "fail() and assert_failed", "fail()"],
)
def test_teardown_report_opt_outs(pytester: pytest.Pytester, marker: str, inject: str, check: str) -> None:
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(FAILING_TEST.format(marker=marker, inject=inject, check=check, requests=1))

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    if check.startswith("assert len"):
        # Looking at failures is not asserting on them: assert_failed() is.
        result.assert_outcomes(passed=1, errors=1)
    else:
        result.assert_outcomes(passed=1)


@pytest.mark.usefixtures("app_module")
@pytest.mark.parametrize(
    ("check", "outcome"),
    [
        ("assert response.status_code == 201", {"failed": 1}),
        ("pytest.skip('not today')", {"skipped": 1}),
        ("pytest.xfail('known bug')", {"xfailed": 1}),
    ],
    ids=["failed", "skipped", "xfailed"],
)
def test_no_teardown_report_for_a_test_that_did_not_pass(
    pytester: pytest.Pytester, check: str, outcome: dict[str, int]
) -> None:
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(
        f"""
        import pytest
        from fastapi.testclient import TestClient


        def test_explode(app, tasks_recorder):
            response = TestClient(app).post("/explode")
            {check}
        """
    )

    result = pytester.runpytest("-rA", *NO_RANDOM_ORDER)

    # One outcome per test: the test's own. The task's failure is still in the captured log.
    result.assert_outcomes(**outcome)
    assert "failed during the test" not in result.stdout.str()
    if "failed" in outcome:
        result.stdout.fnmatch_lines(["ERROR    fastapi_tasks:*Background task 'explode' failed: ValueError: bad"])


@pytest.mark.usefixtures("app_module")
def test_assert_failed_acknowledges_only_the_failure_it_matched(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(
        FAILING_TEST.format(marker="", inject="pass", check="tasks_recorder.assert_failed(myapp.explode)", requests=2)
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "1 background task failed during the test:",
            "- #4 after_response explode('bad') (POST /explode): failed (ValueError: bad)",
        ]
    )


# --- failure messages as pytest shows them -------------------------------------------------------


@pytest.mark.usefixtures("app_module")
def test_assertion_failure_shows_the_closest_records_and_the_timeline(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(
        """
        from fastapi.testclient import TestClient

        import myapp


        def test_signup(app, tasks_recorder):
            TestClient(app).post("/signup", params={"email": "a@b.c"})
            tasks_recorder.assert_scheduled(myapp.send_email, "x@y.z", phase="after_route")
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '>       tasks_recorder.assert_scheduled(myapp.send_email, "x@y.z", phase="after_route")',
            "E       AssertionError: Expected send_email('x@y.z') in phase after_route to be scheduled, "
            "but no task matches.",
            "E       Closest recorded tasks:",
            "E       - #2 after_response send_email('a@b.c')",
            "E           phase: expected after_route, got after_response",
            "E           address: expected 'x@y.z', got 'a@b.c'",
            "E       ",
            "E       Recorded tasks:",
            "E       #  phase           task                   status     request",
            "E       1  after_route     audit('signup a@b.c')  succeeded  POST /signup",
            "E       2  after_response  send_email('a@b.c')    succeeded  POST /signup",
        ],
        consecutive=True,
    )
    # The helpers' own frames are hidden from the traceback.
    assert "_assertions.py" not in result.stdout.str()


@pytest.mark.usefixtures("app_module")
def test_drain_timeout_as_pytest_shows_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import anyio
        import httpx
        import pytest
        from asgi_lifespan import LifespanManager
        from fastapi import FastAPI

        from fastapi_tasks import Tasks, add_tasks


        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        release = None


        async def wait_for_release():
            await release.wait()


        app = FastAPI()
        add_tasks(app)


        @app.get("/")
        async def index(tasks: Tasks) -> None:
            tasks.after_response.schedule(wait_for_release)


        @pytest.mark.anyio
        @pytest.mark.tasks_recorder(mode="spy")
        async def test_drain(tasks_recorder):
            global release
            release = anyio.Event()
            tasks_recorder.install(app)
            async with LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    await client.get("/")
                try:
                    await tasks_recorder.drain(timeout=0.05)
                finally:
                    release.set()
                    await tasks_recorder.drain()
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            ">       *await tasks_recorder.drain(timeout=0.05)",
            "E *AssertionError: drain() timed out after 0.05 s; still running:",
            "E *- #1 after_response wait_for_release",
            "E *",
            "E *Recorded tasks:",
            "E *#  phase           task                status   request",
            "E *1  after_response  wait_for_release()  running  GET /",
            "",
        ],
        consecutive=True,
    )


# --- pytest-xdist ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("app_module")
def test_no_shared_state_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP_FIXTURE)
    pytester.makepyfile(
        """
        import os

        import pytest
        from fastapi.testclient import TestClient

        import myapp


        @pytest.mark.parametrize("n", range(12))
        def test_each_test_sees_only_its_own_tasks(app, tasks_recorder, n):
            client = TestClient(app)
            for _ in range(n % 3 + 1):
                client.post("/signup", params={"email": f"{n}@b.c"})
            assert len(tasks_recorder.records) == 2 * (n % 3 + 1)
            assert {r.args for r in tasks_recorder.filter(myapp.send_email)} == {(f"{n}@b.c",)}
            assert [r.seq for r in tasks_recorder.records] == list(range(1, 2 * (n % 3 + 1) + 1))
            print("worker", os.environ["PYTEST_XDIST_WORKER"])


        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.tasks_recorder(mode="record")
        def test_modes_do_not_leak(app, tasks_recorder, n):
            TestClient(app).post("/signup", params={"email": f"{n}@b.c"})
            assert tasks_recorder.mode == "record"
            assert [r.status.value for r in tasks_recorder.records] == ["pending", "pending"]
        """
    )

    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "-p", "no:randomly", "-rA")

    result.assert_outcomes(passed=16)
    output = result.stdout.str()
    assert "worker gw0" in output
    assert "worker gw1" in output
