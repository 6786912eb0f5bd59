"""Queries and assertion helpers: matching, `ANY`, outcomes, and the exact text of every failure."""

from __future__ import annotations

import functools
import re
from typing import Any
from unittest.mock import ANY

import pytest

import fastapi_tasks_testing
from fastapi_tasks import Phase, Task, TaskStatus
from fastapi_tasks_testing import RecordingScheduler, TaskRecord


def send_email(address: str, *, subject: str = "Welcome") -> str:
    return f"sent to {address}"


def audit(user: str, level: int = 1) -> None:
    pass


def explode(reason: str) -> None:
    raise ValueError(reason)


def charge(amount: int) -> None:
    pass


TIMELINE = """\
#  phase           task                               status                    request
1  after_response  send_email('a@b.c', subject='Hi')  succeeded                 -
2  after_route     audit('alice')                     succeeded                 -
3  immediate       audit('bob', 2)                    pending                   -
4  after_response  kaboom('bad')                      failed (ValueError: bad)  -"""


def failure(message: str, scope: str = "") -> str:
    """The whole text of an assertion failure: the message, then the whole timeline."""
    return f"{message}\n\nRecorded tasks{scope}:\n{TIMELINE}"


@pytest.fixture
def recorder() -> RecordingScheduler:
    """Four tasks: two succeeded, one pending, one failed (and already asserted on)."""
    recorder = RecordingScheduler()
    recorder.after_response.schedule(send_email, "a@b.c", subject="Hi")
    recorder.after_route.schedule(audit, "alice")
    recorder.schedule(audit, "bob", 2)
    recorder.after_response.task(name="kaboom").schedule(explode, "bad")
    recorder.run_pending_sync(phase="after_route")
    recorder.run_pending_sync(phase="after_response")
    return recorder


def test_the_scenario(recorder: RecordingScheduler) -> None:
    assert recorder.timeline() == TIMELINE


# --- assert_scheduled ------------------------------------------------------------------------------


def test_assert_scheduled_returns_the_first_matching_record(recorder: RecordingScheduler) -> None:
    assert recorder.assert_scheduled(audit).seq == 2
    assert recorder.assert_scheduled(audit, "bob", 2).seq == 3
    assert recorder.assert_scheduled(audit, "bob", 2, phase="immediate").seq == 3
    assert recorder.assert_scheduled(audit, phase=Phase.IMMEDIATE).seq == 3
    assert recorder.assert_scheduled(send_email, "a@b.c", subject="Hi", phase="after_response").seq == 1


def test_assert_scheduled_supports_any(recorder: RecordingScheduler) -> None:
    assert recorder.assert_scheduled(send_email, ANY, subject="Hi").seq == 1
    assert recorder.assert_scheduled(send_email, "a@b.c", subject=ANY).seq == 1
    assert recorder.assert_scheduled(audit, "bob", ANY).seq == 3
    assert recorder.assert_scheduled("kaboom", ANY).seq == 4
    with pytest.raises(AssertionError):
        # ANY stands for one argument, not for any number of them.
        recorder.assert_scheduled(audit, ANY, ANY, ANY)


def test_tasks_are_named_by_callable_or_by_task_name(recorder: RecordingScheduler) -> None:
    assert recorder.assert_scheduled("kaboom").func is explode
    assert recorder.assert_scheduled(explode).name == "kaboom"
    assert recorder.assert_scheduled("audit").seq == 2
    # A name is the task's name, which a configured name replaces.
    with pytest.raises(AssertionError, match=r"^Expected 'explode' to be scheduled, but no task matches\.\n"):
        recorder.assert_scheduled("explode")


def test_a_partial_matches_the_function_it_wraps() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(functools.partial(audit, "carol"), 3)

    record = recorder.assert_scheduled(audit, 3)

    assert record.name == "audit"
    assert recorder.filter(audit) == [record]


class Mailer:
    def send(self, address: str) -> None:
        pass


def test_a_bound_method_matches_itself_and_its_class_function() -> None:
    # The app may build its own Mailer per request: the test names the method through the class.
    recorder = RecordingScheduler()
    mailer, other = Mailer(), Mailer()
    recorder.schedule(mailer.send, "a@b.c")

    assert recorder.assert_scheduled(mailer.send, "a@b.c").func == mailer.send
    assert recorder.assert_scheduled(Mailer.send, "a@b.c").name == "Mailer.send"
    assert recorder.filter(Mailer.send) == recorder.records
    # Another instance's method is another task.
    recorder.assert_not_scheduled(other.send)


def test_assert_scheduled_failure_shows_argument_differences(recorder: RecordingScheduler) -> None:
    expected = failure(
        "Expected send_email('x@y.z', subject='Hi') in phase after_response to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #1 after_response send_email('a@b.c', subject='Hi')\n"
        "    argument 1: expected 'x@y.z', got 'a@b.c'"
    )
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(send_email, "x@y.z", subject="Hi", phase="after_response")
    assert str(excinfo.value) == expected


def test_assert_scheduled_failure_ranks_other_phase_and_other_arguments(recorder: RecordingScheduler) -> None:
    # Same arguments in another phase (one difference) ranks above other arguments in this phase (two).
    expected = failure(
        "Expected audit('alice') in phase immediate to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #2 after_route audit('alice')\n"
        "    phase: expected immediate, got after_route\n"
        "- #3 immediate audit('bob', 2)\n"
        "    argument 1: expected 'alice', got 'bob'\n"
        "    unexpected argument 2: 2"
    )
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(audit, "alice", phase="immediate")
    assert str(excinfo.value) == expected


def test_assert_scheduled_failure_explains_missing_and_unexpected_keywords() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(send_email, "a@b.c", subject="Hi")
    recorder.schedule(audit, "bob", 2)

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(send_email, "a@b.c", cc="boss@b.c")
    assert str(excinfo.value) == (
        "Expected send_email('a@b.c', cc='boss@b.c') to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #1 immediate send_email('a@b.c', subject='Hi')\n"
        "    missing keyword argument cc: expected 'boss@b.c'\n"
        "    unexpected keyword argument subject='Hi'\n"
        "\n"
        "Recorded tasks:\n"
        "#  phase      task                               status   request\n"
        "1  immediate  send_email('a@b.c', subject='Hi')  pending  -\n"
        "2  immediate  audit('bob', 2)                    pending  -"
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(audit, "bob", 2, 3, level=4)
    assert str(excinfo.value).startswith(
        "Expected audit('bob', 2, 3, level=4) to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #2 immediate audit('bob', 2)\n"
        "    missing argument 3: expected 3\n"
        "    missing keyword argument level: expected 4\n"
        "\n"
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(send_email, "a@b.c", subject="Bye")
    assert str(excinfo.value).startswith(
        "Expected send_email('a@b.c', subject='Bye') to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #1 immediate send_email('a@b.c', subject='Hi')\n"
        "    keyword argument subject: expected 'Bye', got 'Hi'\n"
        "\n"
    )


def test_closest_records_are_at_most_three() -> None:
    recorder = RecordingScheduler()
    for user in ("a", "b", "c", "d"):
        recorder.schedule(audit, user)

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(audit, "z")
    assert re.findall(r"^- #\d", str(excinfo.value), flags=re.MULTILINE) == ["- #1", "- #2", "- #3"]


def test_assert_scheduled_of_an_unscheduled_task_has_no_closest_section(recorder: RecordingScheduler) -> None:
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(charge)
    assert str(excinfo.value) == failure("Expected charge to be scheduled, but no task matches.")


def test_assertion_on_an_empty_recorder() -> None:
    with pytest.raises(AssertionError) as excinfo:
        RecordingScheduler().assert_scheduled(charge, 5)
    assert str(excinfo.value) == (
        "Expected charge(5) to be scheduled, but no task matches.\n\nRecorded tasks:\n(no tasks were scheduled)"
    )


# --- assert_scheduled_once, assert_not_scheduled -------------------------------------------------


def test_assert_scheduled_once(recorder: RecordingScheduler) -> None:
    assert recorder.assert_scheduled_once(audit, "alice").seq == 2
    assert recorder.assert_scheduled_once(audit, phase="immediate").seq == 3

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled_once(audit)
    assert str(excinfo.value) == failure("Expected audit to be scheduled once, but 2 were: #2, #3.")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled_once(charge, 1)
    assert str(excinfo.value) == failure("Expected charge(1) to be scheduled once, but none was.")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled_once(audit, "carol", phase="after_route")
    assert str(excinfo.value) == failure(
        "Expected audit('carol') in phase after_route to be scheduled once, but none was.\n"
        "Closest recorded tasks:\n"
        "- #2 after_route audit('alice')\n"
        "    argument 1: expected 'carol', got 'alice'\n"
        "- #3 immediate audit('bob', 2)\n"
        "    phase: expected after_route, got immediate\n"
        "    argument 1: expected 'carol', got 'bob'\n"
        "    unexpected argument 2: 2"
    )


def test_assert_not_scheduled(recorder: RecordingScheduler) -> None:
    recorder.assert_not_scheduled(charge)
    recorder.assert_not_scheduled(send_email, phase="immediate")
    recorder.assert_not_scheduled("explode")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_not_scheduled(audit, phase="after_route")
    assert str(excinfo.value) == failure("Expected audit in phase after_route not to be scheduled, but it was: #2.")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_not_scheduled(audit)
    assert str(excinfo.value) == failure("Expected audit not to be scheduled, but it was: #2, #3.")


# --- assert_order -------------------------------------------------------------------------------------


def test_assert_order(recorder: RecordingScheduler) -> None:
    recorder.assert_order(audit, send_email)
    recorder.assert_order(audit, send_email, "kaboom")
    recorder.assert_order("audit", explode)

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_order(send_email, audit)
    assert str(excinfo.value) == failure(
        "Expected the tasks to run in the order send_email -> audit, but they ran in the order audit -> send_email."
    )


def test_assert_order_of_a_task_that_did_not_run(recorder: RecordingScheduler) -> None:
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_order(audit, charge)
    assert str(excinfo.value) == failure("Expected charge to have run, but it did not.")


def test_assert_order_uses_execution_not_scheduling_order() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(charge, 1)
    recorder.schedule(audit, "x")
    recorder.run_pending_sync()

    recorder.assert_order(charge, audit)

    fresh = RecordingScheduler()
    fresh.after_response.schedule(charge, 1)
    fresh.after_route.schedule(audit, "x")
    fresh.run_pending_sync()  # after_route runs before after_response
    fresh.assert_order(audit, charge)


def test_assert_order_needs_two_tasks(recorder: RecordingScheduler) -> None:
    with pytest.raises(TypeError, match=r"^assert_order\(\) needs at least two tasks to compare\.$"):
        recorder.assert_order(audit)


# --- filter -----------------------------------------------------------------------------------------


def test_filter(recorder: RecordingScheduler) -> None:
    records = recorder.records
    assert recorder.filter() == records
    assert recorder.filter(audit) == records[1:3]
    assert recorder.filter("audit") == records[1:3]
    assert recorder.filter(audit, phase="immediate") == [records[2]]
    assert recorder.filter(phase=Phase.AFTER_RESPONSE) == [records[0], records[3]]
    assert recorder.filter(status="succeeded") == records[:2]
    assert recorder.filter(status=TaskStatus.FAILED) == [records[3]]
    assert recorder.filter(audit, phase="after_route", status="pending") == []
    assert recorder.filter(charge) == []


def test_filter_refuses_unknown_phase_and_status(recorder: RecordingScheduler) -> None:
    with pytest.raises(
        ValueError, match=r"^Unknown phase 'later'; use one of 'immediate', 'after_route', 'after_response'\.$"
    ):
        recorder.filter(phase="later")
    statuses = ", ".join(repr(status.value) for status in TaskStatus)
    with pytest.raises(ValueError, match=rf"^Unknown status 'done'; use one of {re.escape(statuses)}\.$"):
        recorder.filter(status="done")
    with pytest.raises(ValueError, match=r"^Unknown phase 'soon'; "):
        recorder.assert_scheduled(audit, phase="soon")


# --- outcomes -----------------------------------------------------------------------------------------


def test_assert_succeeded(recorder: RecordingScheduler) -> None:
    assert recorder.assert_succeeded(send_email).result == "sent to a@b.c"
    assert recorder.assert_succeeded(audit, "alice").seq == 2

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_succeeded(audit, "bob", 2)
    assert str(excinfo.value) == failure("Expected audit('bob', 2) to have succeeded, but: #3 pending.")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_succeeded(charge)
    assert str(excinfo.value) == failure("Expected charge to have succeeded, but no task matches.")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_succeeded(audit, "carol")
    assert str(excinfo.value) == failure(
        "Expected audit('carol') to have succeeded, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #2 after_route audit('alice')\n"
        "    argument 1: expected 'carol', got 'alice'\n"
        "- #3 immediate audit('bob', 2)\n"
        "    argument 1: expected 'carol', got 'bob'\n"
        "    unexpected argument 2: 2"
    )


def test_assert_failed(recorder: RecordingScheduler) -> None:
    record = recorder.records[3]
    assert not record.handled

    assert recorder.assert_failed("kaboom") is record
    assert record.handled
    assert recorder.assert_failed(explode, ValueError) is record
    assert recorder.assert_failed(explode, (KeyError, ValueError), match=r"^ba") is record
    assert recorder.assert_failed(explode, match=re.compile("bad")) is record

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_failed("kaboom", KeyError)
    assert str(excinfo.value) == failure(
        "Expected 'kaboom' with KeyError to have failed, but: #4 failed (ValueError: bad)."
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_failed("kaboom", ValueError, match="^good$")
    assert str(excinfo.value) == failure(
        "Expected 'kaboom' with ValueError matching '^good$' to have failed, but: #4 failed (ValueError: bad)."
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_failed("kaboom", (KeyError, TypeError), match="^good$")
    assert str(excinfo.value) == failure(
        "Expected 'kaboom' with KeyError or TypeError matching '^good$' to have failed, "
        "but: #4 failed (ValueError: bad)."
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_failed(audit)
    assert str(excinfo.value) == failure("Expected audit to have failed, but: #2 succeeded, #3 pending.")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_failed(charge)
    assert str(excinfo.value) == failure("Expected charge to have failed, but it was not scheduled.")


def test_assert_cancelled_and_assert_discarded_failures(recorder: RecordingScheduler) -> None:
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_cancelled(audit)
    assert str(excinfo.value) == failure("Expected audit to have been cancelled, but: #2 succeeded, #3 pending.")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_discarded(audit, "alice")
    assert str(excinfo.value) == failure("Expected audit('alice') to have been discarded, but: #2 succeeded.")


def test_assert_cancelled_and_assert_discarded() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(audit, "x")
    recorder.after_route.schedule(charge, 1)
    recorder.after_route._discard(RuntimeError("the endpoint failed"))
    recorder.shutdown_sync()

    assert recorder.assert_cancelled(audit, "x").seq == 1
    assert recorder.assert_discarded(charge).seq == 2
    assert recorder.filter(status="cancelled") == [recorder.records[0]]


def test_assert_error_handled() -> None:
    received: list[Exception] = []

    def on_error(task: Task[..., Any], exc: Exception) -> None:
        received.append(exc)

    recorder = RecordingScheduler()
    recorder.task(on_error=on_error).schedule(explode, "bad")
    recorder.schedule(explode, "unhandled")
    recorder.run_pending_sync()

    handled_task, exc = recorder.assert_error_handled(explode, ValueError)
    assert handled_task is recorder.records[0]
    assert exc is recorder.records[0].exception
    assert received == [exc]

    timeline = (
        "#  phase      task                  status                          request\n"
        "1  immediate  explode('bad')        failed (ValueError: bad)        -\n"
        "2  immediate  explode('unhandled')  failed (ValueError: unhandled)  -"
    )
    # A handler that was not called with this task and exception is reported as such.
    recorder.records[0].on_error_calls.clear()
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_error_handled(explode)
    assert str(excinfo.value) == (
        "Expected the on_error handler of explode to be called, but it was not.\n\nRecorded tasks:\n" + timeline
    )


def test_assert_error_handled_without_a_handler(recorder: RecordingScheduler) -> None:
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_error_handled("kaboom")
    assert str(excinfo.value) == failure(
        "Expected the on_error handler of 'kaboom' to be called, but it has no on_error."
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_error_handled(audit)
    assert str(excinfo.value) == failure("Expected audit to have failed, but: #2 succeeded, #3 pending.")


# --- narrowed views ---------------------------------------------------------------------------------


def test_a_request_view_narrows_queries_but_shows_the_whole_timeline(recorder: RecordingScheduler) -> None:
    view = recorder.for_request("POST", "/signup")

    assert view.records == []
    assert view.filter(audit) == []
    view.assert_not_scheduled(audit)
    with pytest.raises(AssertionError) as excinfo:
        view.assert_scheduled(audit)
    assert str(excinfo.value) == failure(
        "Expected audit to be scheduled, but no task matches.", scope=" (this view: POST /signup)"
    )
    with pytest.raises(AssertionError) as excinfo:
        recorder.for_request("signup").assert_succeeded(send_email)
    assert str(excinfo.value) == failure(
        "Expected send_email to have succeeded, but no task matches.", scope=" (this view: route 'signup')"
    )


# --- free functions -----------------------------------------------------------------------------------


def test_free_functions_do_what_the_methods_do(recorder: RecordingScheduler) -> None:
    record: TaskRecord = fastapi_tasks_testing.assert_scheduled(recorder, audit, "bob", ANY, phase="immediate")
    assert record.seq == 3
    assert fastapi_tasks_testing.assert_scheduled_once(recorder, send_email, "a@b.c", subject="Hi").seq == 1
    fastapi_tasks_testing.assert_not_scheduled(recorder, charge)
    fastapi_tasks_testing.assert_order(recorder, audit, "kaboom")

    with pytest.raises(AssertionError) as excinfo:
        fastapi_tasks_testing.assert_scheduled(recorder, charge)
    assert str(excinfo.value) == failure("Expected charge to be scheduled, but no task matches.")
    with pytest.raises(AssertionError) as excinfo:
        fastapi_tasks_testing.assert_scheduled_once(recorder, audit)
    assert str(excinfo.value) == failure("Expected audit to be scheduled once, but 2 were: #2, #3.")
    with pytest.raises(AssertionError) as excinfo:
        fastapi_tasks_testing.assert_not_scheduled(recorder, audit, phase="immediate")
    assert str(excinfo.value) == failure("Expected audit in phase immediate not to be scheduled, but it was: #3.")
    with pytest.raises(AssertionError) as excinfo:
        fastapi_tasks_testing.assert_order(recorder, "kaboom", "audit")
    assert str(excinfo.value) == failure(
        "Expected the tasks to run in the order 'kaboom' -> 'audit', but they ran in the order 'audit' -> 'kaboom'."
    )


def test_free_functions_work_on_a_request_view(recorder: RecordingScheduler) -> None:
    view = recorder.for_request("GET", "/")
    fastapi_tasks_testing.assert_not_scheduled(view, audit)
    with pytest.raises(AssertionError, match=r"^Expected audit\('bob'\) to be scheduled, but no task matches\.\n"):
        fastapi_tasks_testing.assert_scheduled(view, audit, "bob")
