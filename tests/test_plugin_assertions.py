"""The assertions and controls of issue 13 as users meet them: pytester runs, every failure message pinned.

Each assertion has a test that passes and one that fails; the failing ones' whole messages, as
pytest prints them, are pinned line by line.
"""

from __future__ import annotations

import pytest

# Imported before the inner runs: pytester puts sys.modules back after each run, and a queue library
# imported afresh by a later run would not be the one the dispatcher adapter (cached) knows.
import taskiq  # noqa: F401

APP = """
from fastapi import FastAPI
from taskiq import InMemoryBroker

from fastapi_tasks import Tasks, add_tasks

broker = InMemoryBroker()


@broker.task
async def ship(order_id: int, express: bool = False) -> None:
    pass


def send_push(user: str, *, text: str, trace_id: str = "t-1") -> None:
    pass


def audit(event: str) -> None:
    pass


def notify(user: str, phase: str) -> None:
    pass


class Mailer:
    def send(self, to: str, subject: str) -> None:
        pass


mailer = Mailer()

app = FastAPI()
add_tasks(app)


@app.post("/posts/{author}")
async def publish(author: str, tasks: Tasks) -> None:
    tasks.after_route.schedule(audit, "publish")
    for follower in ("grace", "linus"):
        tasks.after_response.schedule(send_push, follower, text=f"{author} posted")


@app.post("/notify/{user}")
async def notify_user(user: str, tasks: Tasks) -> None:
    tasks.schedule(notify, user, phase="beta")
    tasks.schedule(Mailer().send, f"{user}@b.c", "Hi")


@app.post("/welcome/{user}")
async def welcome(user: str, tasks: Tasks) -> None:
    def greet(name: str) -> None:
        pass

    tasks.schedule(greet, user)


@app.post("/orders/{order_id}")
async def order(order_id: int, tasks: Tasks) -> None:
    tasks.after_response.enqueue(ship, order_id, express=True)
"""

APP_FIXTURE = """
import pytest

import myapp


@pytest.fixture
def app():
    return myapp.app
"""

TESTS = """
from unittest.mock import ANY, call

import pytest
from fastapi.testclient import TestClient

import myapp


@pytest.fixture
def client(app):
    return TestClient(app)


def test_signature_passes(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_scheduled(myapp.send_push, user="grace", text="ada posted", trace_id="t-1")


def test_signature_fails(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_scheduled(myapp.send_push, "grace", text="ada wrote")


def test_partial_passes(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_not_scheduled(myapp.send_push, "alan", partial=True)
    tasks_recorder.assert_scheduled(myapp.send_push, text="ada posted", partial=True, times=2)


def test_partial_fails(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_not_scheduled(myapp.send_push, "grace", partial=True)


def test_where_passes(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_scheduled(myapp.send_push, where=lambda record: record.args == ("linus",))


def test_where_on_arguments_passes(client, tasks_recorder):
    client.post("/posts/ada")
    # `user` was passed positionally, `trace_id` took its default: the record binds both to their names.
    to_grace = lambda record: record.arguments["user"] == "grace" and record.arguments["trace_id"] == "t-1"
    tasks_recorder.assert_scheduled_once(myapp.send_push, where=to_grace)


def test_where_fails(client, tasks_recorder):
    client.post("/posts/ada")

    def to_alan(record):
        return record.args == ("alan",)

    tasks_recorder.assert_scheduled(myapp.send_push, where=to_alan, phase="after_response")


def test_call_form_passes(client, tasks_recorder):
    client.post("/notify/ada")
    tasks_recorder.assert_scheduled(myapp.notify, call("ada", phase="beta"), phase="immediate")


def test_call_form_ambiguous(client, tasks_recorder):
    client.post("/notify/ada")
    tasks_recorder.assert_scheduled(myapp.notify, "ada", phase="beta")


def test_times_passes(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_scheduled(myapp.send_push, times=2)


def test_times_fails(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_scheduled(myapp.send_push, text=ANY, partial=True, times=3)


def test_nothing_scheduled_passes(client, tasks_recorder):
    tasks_recorder.assert_nothing_scheduled()
    tasks_recorder.assert_nothing_dispatched()


def test_nothing_scheduled_fails(client, tasks_recorder):
    client.post("/notify/ada")
    tasks_recorder.assert_nothing_scheduled()


def test_nothing_dispatched_fails(client, tasks_recorder):
    client.post("/orders/7")
    tasks_recorder.assert_nothing_dispatched()


def test_dispatched_once_passes(client, tasks_recorder):
    client.post("/orders/7")
    tasks_recorder.assert_dispatched_once(myapp.ship, 7, express=True)
    tasks_recorder.assert_dispatched(myapp.ship, order_id=7, partial=True, times=1)


def test_dispatched_once_fails(client, tasks_recorder):
    client.post("/orders/7")
    client.post("/orders/8")
    tasks_recorder.assert_dispatched_once(myapp.ship, express=True, partial=True)


def test_timeline_passes(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_timeline(
        myapp.audit,
        (myapp.send_push, call("linus", text=ANY)),
        (myapp.send_push, call("grace", text="ada posted")),
        any_order=True,
    )


def test_timeline_fails(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_timeline(
        myapp.audit,
        (myapp.send_push, call("linus", text=ANY)),
        (myapp.send_push, call("grace", text=ANY)),
    )


def test_other_instance(client, tasks_recorder):
    client.post("/notify/ada")
    tasks_recorder.assert_scheduled(myapp.mailer.send, "ada@b.c", "Hi")


def test_view_lists_its_records_apart(client, tasks_recorder):
    client.post("/posts/ada")
    client.post("/notify/ada")
    tasks_recorder.for_request("POST", "/notify/ada").assert_scheduled(myapp.audit)


def test_did_you_mean(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_scheduled("send_psuh")


def test_did_you_mean_a_nested_function(client, tasks_recorder):
    client.post("/welcome/ada")
    tasks_recorder.assert_scheduled("greet")


def test_wait_for_passes(client, tasks_recorder):
    client.post("/posts/ada")
    assert tasks_recorder.wait_for_sync(myapp.audit, status="succeeded").args == ("publish",)
    tasks_recorder.drain_sync()


def test_wait_for_times_out(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.wait_for_sync(myapp.audit, status="failed", timeout=0.01)


@pytest.mark.tasks_recorder(strict=True)
def test_strict_passes(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.ignore(myapp.audit)
    tasks_recorder.assert_scheduled(myapp.send_push, times=2)


@pytest.mark.tasks_recorder(strict=True)
def test_strict_fails(client, tasks_recorder):
    client.post("/posts/ada")
    tasks_recorder.assert_scheduled(myapp.send_push, "grace", text=ANY)


def test_unused_fault(client, tasks_recorder):
    tasks_recorder.fail("send_psuh", RuntimeError("push service down"), times=1)
    tasks_recorder.replace(myapp.audit, print, where=lambda record: False)
    client.post("/posts/ada")


def test_unused_hold(client, tasks_recorder):
    tasks_recorder.hold("send_psuh", myapp.notify)
    client.post("/posts/ada")
"""

NO_RANDOM_ORDER = ("-p", "no:randomly")
TIMELINE = [
    "E       Recorded tasks:",
    "E       #  phase           task                                   status     request",
    "E       1  after_route     audit('publish')                       succeeded  POST /posts/ada",
    "E       2  after_response  send_push('grace', text='ada posted')  succeeded  POST /posts/ada",
    "E       3  after_response  send_push('linus', text='ada posted')  succeeded  POST /posts/ada",
]
NOTIFY_TIMELINE = [
    "E       Recorded tasks:",
    "E       #  phase      task                          status     request",
    "E       1  immediate  notify('ada', phase='beta')   succeeded  POST /notify/ada",
    "E       2  immediate  Mailer.send('ada@b.c', 'Hi')  succeeded  POST /notify/ada",
]

# What each failing test prints, from its `>` line on.
FAILURES = {
    "test_signature_fails": [
        '>       tasks_recorder.assert_scheduled(myapp.send_push, "grace", text="ada wrote")',
        "E       AssertionError: Expected send_push('grace', text='ada wrote') to be scheduled, but no task matches.",
        "E       Closest recorded tasks:",
        "E       - #2 after_response send_push('grace', text='ada posted')",
        "E           text: expected 'ada wrote', got 'ada posted'",
        "E       - #3 after_response send_push('linus', text='ada posted')",
        "E           user: expected 'grace', got 'linus'",
        "E           text: expected 'ada wrote', got 'ada posted'",
        "E       ",
        *TIMELINE,
    ],
    "test_partial_fails": [
        '>       tasks_recorder.assert_not_scheduled(myapp.send_push, "grace", partial=True)',
        "E       AssertionError: Expected send_push('grace', ...) not to be scheduled, but it was:",
        "E       - #2 after_response send_push('grace', text='ada posted')",
        "E       ",
        *TIMELINE,
    ],
    "test_where_fails": [
        '>       tasks_recorder.assert_scheduled(myapp.send_push, where=to_alan, phase="after_response")',
        "E       AssertionError: Expected send_push in phase after_response where to_alan to be scheduled, "
        "but no task matches.",
        "E       Closest recorded tasks:",
        "E       - #2 after_response send_push('grace', text='ada posted')",
        "E           where: to_alan is false for it",
        "E       - #3 after_response send_push('linus', text='ada posted')",
        "E           where: to_alan is false for it",
        "E       ",
        *TIMELINE,
    ],
    "test_call_form_ambiguous": [
        '>       tasks_recorder.assert_scheduled(myapp.notify, "ada", phase="beta")',
        "E       TypeError: assert_scheduled() got phase='beta', which is ambiguous: notify has a parameter named "
        "'phase' too. To expect that argument, pass the arguments as one call: "
        "assert_scheduled(notify, call('ada', phase='beta')); the options go beside the call.",
    ],
    "test_times_fails": [
        ">       tasks_recorder.assert_scheduled(myapp.send_push, text=ANY, partial=True, times=3)",
        "E       AssertionError: Expected send_push(text=<ANY>, ...) to be scheduled 3 times, but 2 were:",
        "E       - #2 after_response send_push('grace', text='ada posted')",
        "E       - #3 after_response send_push('linus', text='ada posted')",
        "E       ",
        *TIMELINE,
    ],
    "test_nothing_scheduled_fails": [
        ">       tasks_recorder.assert_nothing_scheduled()",
        "E       AssertionError: Expected no task to be scheduled, but 2 were:",
        "E       - #1 immediate notify('ada', phase='beta')",
        "E       - #2 immediate Mailer.send('ada@b.c', 'Hi')",
        "E       ",
        *NOTIFY_TIMELINE,
    ],
    "test_nothing_dispatched_fails": [
        ">       tasks_recorder.assert_nothing_dispatched()",
        "E       AssertionError: Expected nothing to be dispatched, but 1 was:",
        "E       - #1 after_response myapp:ship(7, express=True)",
        "E       ",
        "E       Recorded tasks:",
        "E       #  phase           task                                    status      request",
        "E       1  after_response  [dispatch] myapp:ship(7, express=True)  dispatched  POST /orders/7",
    ],
    "test_dispatched_once_fails": [
        ">       tasks_recorder.assert_dispatched_once(myapp.ship, express=True, partial=True)",
        "E       AssertionError: Expected myapp:ship(express=True, ...) to be dispatched once, but 2 were:",
        "E       - #1 after_response myapp:ship(7, express=True)",
        "E       - #2 after_response myapp:ship(8, express=True)",
        "E       ",
        "E       Recorded tasks:",
        "E       #  phase           task                                    status      request",
        "E       1  after_response  [dispatch] myapp:ship(7, express=True)  dispatched  POST /orders/7",
        "E       2  after_response  [dispatch] myapp:ship(8, express=True)  dispatched  POST /orders/8",
    ],
    "test_timeline_fails": [
        "E       AssertionError: Expected exactly these 3 tasks, in this order:",
        "E       1. audit",
        "E       2. send_push('linus', text=<ANY>)",
        "E       3. send_push('grace', text=<ANY>)",
        "E       but task 2 is:",
        "E       - #2 after_response send_push('grace', text='ada posted')",
        "E           user: expected 'linus', got 'grace'",
        "E       ",
        *TIMELINE,
    ],
    "test_other_instance": [
        '>       tasks_recorder.assert_scheduled(myapp.mailer.send, "ada@b.c", "Hi")',
        "E       AssertionError: Expected Mailer.send('ada@b.c', 'Hi') to be scheduled, but no task matches.",
        "E       Its function was scheduled on another Mailer object than the one given:",
        "E       - #2 immediate Mailer.send('ada@b.c', 'Hi')",
        "E       To match Mailer.send on any Mailer object, assert on the function of the class: Mailer.send.",
        "E       ",
        *NOTIFY_TIMELINE,
    ],
    "test_view_lists_its_records_apart": [
        '>       tasks_recorder.for_request("POST", "/notify/ada").assert_scheduled(myapp.audit)',
        "E       AssertionError: Expected audit to be scheduled, but no task matches.",
        "E       ",
        "E       Recorded tasks (this view: POST /notify/ada):",
        "E       #  phase      task                          status     request",
        "E       4  immediate  notify('ada', phase='beta')   succeeded  POST /notify/ada",
        "E       5  immediate  Mailer.send('ada@b.c', 'Hi')  succeeded  POST /notify/ada",
        "E       ",
        "E       Other recorded tasks:",
        "E       #  phase           task                                   status     request",
        "E       1  after_route     audit('publish')                       succeeded  POST /posts/ada",
        "E       2  after_response  send_push('grace', text='ada posted')  succeeded  POST /posts/ada",
        "E       3  after_response  send_push('linus', text='ada posted')  succeeded  POST /posts/ada",
    ],
    "test_did_you_mean": [
        '>       tasks_recorder.assert_scheduled("send_psuh")',
        "E       AssertionError: Expected 'send_psuh' to be scheduled, but no task matches. Did you mean 'send_push'?",
        "E       ",
        *TIMELINE,
    ],
    "test_did_you_mean_a_nested_function": [
        '>       tasks_recorder.assert_scheduled("greet")',
        "E       AssertionError: Expected 'greet' to be scheduled, but no task matches. "
        "Did you mean 'welcome.<locals>.greet'?",
        "E       ",
        "E       Recorded tasks:",
        "E       #  phase      task                           status     request",
        "E       1  immediate  welcome.<locals>.greet('ada')  succeeded  POST /welcome/ada",
    ],
    "test_wait_for_times_out": [
        '>       tasks_recorder.wait_for_sync(myapp.audit, status="failed", timeout=0.01)',
        "E       AssertionError: wait_for() timed out after 0.01 s: no audit has failed.",
        "E       ",
        *TIMELINE,
    ],
}

TEARDOWN_REPORTS = {
    "test_strict_fails": [
        "2 recorded tasks were matched by no assertion (strict mode):",
        "#  phase           task                                   status     request",
        "1  after_route     audit('publish')                       succeeded  POST /posts/ada",
        "3  after_response  send_push('linus', text='ada posted')  succeeded  POST /posts/ada",
        "Assert on each of them (tasks_recorder.assert_scheduled(...), assert_dispatched(...), ...), "
        "or exempt the ones that do not matter with tasks_recorder.ignore(task).",
    ],
    "test_unused_fault": [
        "2 faults injected by the test applied to no task:",
        "- tasks_recorder.fail('send_psuh', RuntimeError('push service down'), times=1) matched no run. "
        "Did you mean 'send_push'?",
        "- tasks_recorder.replace(audit, <built-in function print>, where=<lambda>) matched no run.",
        "Check the task's name or function and the where= condition; a fault that may apply to nothing "
        "takes optional=True.",
    ],
    "test_unused_hold": [
        "2 tasks given to hold() matched no recorded task:",
        "- tasks_recorder.hold('send_psuh') held nothing. Did you mean 'send_push'?",
        "- tasks_recorder.hold(notify) held nothing.",
        "Check the task's name or function: a hold() that matches no task keeps nothing pending.",
    ],
}


_RUNS: dict[str, pytest.RunResult] = {}


@pytest.fixture
def result(pytester: pytest.Pytester) -> pytest.RunResult:
    """One run of every passing and failing test of TESTS against APP, shared by the tests of this module."""
    if "tests" not in _RUNS:
        pytester.makepyfile(myapp=APP, test_it=TESTS)
        pytester.makeconftest(APP_FIXTURE)
        pytester.syspathinsert()
        _RUNS["tests"] = pytester.runpytest(*NO_RANDOM_ORDER, "-rA")
    return _RUNS["tests"]


def test_the_passing_tests_pass_and_the_failing_ones_fail(result: pytest.RunResult) -> None:
    result.assert_outcomes(passed=14, failed=len(FAILURES), errors=len(TEARDOWN_REPORTS))
    passing = [
        "test_signature_passes",
        "test_partial_passes",
        "test_where_passes",
        "test_where_on_arguments_passes",
        "test_call_form_passes",
        "test_times_passes",
        "test_nothing_scheduled_passes",
        "test_dispatched_once_passes",
        "test_timeline_passes",
        "test_wait_for_passes",
        "test_strict_passes",
    ]
    result.stdout.fnmatch_lines_random([f"PASSED test_it.py::{name}" for name in passing])
    result.stdout.fnmatch_lines_random([f"FAILED test_it.py::{name} - *" for name in FAILURES])


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_failure_message(result: pytest.RunResult, name: str) -> None:
    section = result.stdout.str().split(f"_ {name} _", 1)[1].split("\n_", 1)[0]
    lines = section.splitlines()
    expected = FAILURES[name]
    start = lines.index(expected[0])
    assert lines[start : start + len(expected)] == expected
    # The recorder's own frames are hidden from the traceback.
    assert "fastapi_tasks_testing" not in section


@pytest.mark.parametrize("name", sorted(TEARDOWN_REPORTS))
def test_teardown_report(result: pytest.RunResult, name: str) -> None:
    result.stdout.fnmatch_lines([f"*_ ERROR at teardown of {name} _*", *TEARDOWN_REPORTS[name]], consecutive=True)


def test_a_long_timeline_shows_the_rows_that_matter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=APP)
    pytester.makeconftest(APP_FIXTURE)
    pytester.syspathinsert()
    pytester.makepyfile(
        """
        from unittest.mock import call

        from fastapi.testclient import TestClient

        import myapp


        def test_many(app, tasks_recorder):
            client = TestClient(app)
            for _ in range(20):
                client.post("/posts/ada")
            client.post("/notify/ada")
            for _ in range(20):
                client.post("/posts/ada")
            tasks_recorder.assert_scheduled(myapp.notify, call("grace", phase="beta"))
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: Expected notify('grace', phase='beta') to be scheduled, but no task matches.",
            "E       Closest recorded tasks:",
            "E       - #61 immediate notify('ada', phase='beta')",
            "E           user: expected 'grace', got 'ada'",
            "E       ",
            "E       Recorded tasks:",
            "E       #   phase           task                                   status     request",
            "E       ...",
            "E       46  after_route     audit('publish')                       succeeded  POST /posts/ada",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        [
            "E       61  immediate       notify('ada', phase='beta')            succeeded  POST /notify/ada",
            "E       62  immediate       Mailer.send('ada@b.c', 'Hi')           succeeded  POST /notify/ada",
            "E       63  after_route     audit('publish')                       succeeded  POST /posts/ada",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        [
            "E       75  after_route     audit('publish')                       succeeded  POST /posts/ada",
            "E       ...",
            "E       (92 of 122 tasks not shown; timeline() shows them all)",
        ],
        consecutive=True,
    )


@pytest.mark.parametrize(
    ("setup", "installed_by"),
    [
        ("fixture", "the tasks_recorder fixture, on the app of the `app` fixture"),
        ("ini", "the tasks_recorder fixture, on the app of the ini option fastapi_tasks_app = 'myapp:app'"),
        ("call", "tasks_recorder.install(app) at test_install.py:7"),
    ],
)
def test_already_installed_names_what_installed_it(pytester: pytest.Pytester, setup: str, installed_by: str) -> None:
    pytester.makepyfile(myapp=APP)
    pytester.syspathinsert()
    if setup == "fixture":
        pytester.makeconftest(APP_FIXTURE)
    elif setup == "ini":
        pytester.makeini("[pytest]\nfastapi_tasks_app = myapp:app\n")
    pytester.makepyfile(
        test_install="""
        import myapp


        def test_install_again(tasks_recorder):
            if tasks_recorder.app is None:
                # installed by hand, once
                tasks_recorder.install(myapp.app)
            tasks_recorder.install(myapp.app)
        """
    )

    result = pytester.runpytest(*NO_RANDOM_ORDER)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"E *fastapi_tasks.errors.FastAPITasksError: The recorder is already installed, by {installed_by}; "
            "call tasks_recorder.uninstall() before installing it on another app."
        ]
    )
