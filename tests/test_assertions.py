"""Queries and assertion helpers: matching, `ANY`, outcomes, and the exact text of every failure."""

from __future__ import annotations

import functools
import re
from typing import Any
from unittest.mock import ANY, call

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
    with pytest.raises(
        TypeError,
        match=r"^assert_scheduled\(\) expects audit\(<ANY>, <ANY>, <ANY>\), which cannot be a call of "
        r"audit\(user, level=1\): too many positional arguments\. Fix the expected arguments\.$",
    ):
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
    # A partial given as the task matches by the function it wraps too, and names it.
    assert recorder.filter(functools.partial(audit, "dave")) == [record]
    with pytest.raises(AssertionError, match=r"^Expected audit to be scheduled "):
        recorder.assert_scheduled(functools.partial(audit, "dave"), times=2)


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
        "    address: expected 'x@y.z', got 'a@b.c'"
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
        "    user: expected 'alice', got 'bob'\n"
        "    level: expected 1, got 2"
    )
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(audit, "alice", phase="immediate")
    assert str(excinfo.value) == expected


def test_arguments_are_matched_through_the_signature() -> None:
    # Expected and recorded arguments are bound to the task's signature, as mock.create_autospec does.
    recorder = RecordingScheduler()
    recorder.schedule(send_email, "a@b.c", subject="Hi")
    recorder.schedule(audit, "bob", 2)
    recorder.schedule(audit, "alice")

    assert recorder.assert_scheduled(send_email, address="a@b.c", subject="Hi").seq == 1
    assert recorder.assert_scheduled(audit, user="bob", level=2).seq == 2
    assert recorder.assert_scheduled(audit, "bob", level=ANY).seq == 2
    # A parameter left to its default matches its default value.
    assert recorder.assert_scheduled(audit, "alice", 1).seq == 3
    assert recorder.assert_scheduled_once(audit, user="alice", level=1).seq == 3
    recorder.assert_not_scheduled(audit, "alice", 2)
    assert recorder.filter(audit, level=1, partial=True) == [recorder.records[2]]


def test_differences_name_the_parameters() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(send_email, "a@b.c", subject="Hello")
    recorder.schedule(audit, "bob")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(send_email, to_address := "a@b.c", subject="Hi")
    assert to_address == "a@b.c"
    assert str(excinfo.value) == (
        "Expected send_email('a@b.c', subject='Hi') to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #1 immediate send_email('a@b.c', subject='Hello')\n"
        "    subject: expected 'Hi', got 'Hello'\n"
        "\n"
        "Recorded tasks:\n"
        "#  phase      task                                  status   request\n"
        "1  immediate  send_email('a@b.c', subject='Hello')  pending  -\n"
        "2  immediate  audit('bob')                          pending  -"
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(audit, user="bob", level=3)
    assert str(excinfo.value).startswith(
        "Expected audit(user='bob', level=3) to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #2 immediate audit('bob')\n"
        "    level: expected 3, got 1 (its default)\n"
        "\n"
    )


def test_expected_arguments_that_fit_no_call_of_the_task_are_an_error() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(send_email, "a@b.c", subject="Hi")

    with pytest.raises(
        TypeError,
        match=r"^assert_scheduled\(\) expects send_email\('a@b\.c', cc='boss@b\.c'\), which cannot be a call of "
        r"send_email\(address, \*, subject='Welcome'\): got an unexpected keyword argument 'cc'\. "
        r"Fix the expected arguments\.$",
    ):
        recorder.assert_scheduled(send_email, "a@b.c", cc="boss@b.c")
    # A negative assertion with impossible arguments would pass whatever happened: refused too.
    with pytest.raises(TypeError, match=r"^assert_not_scheduled\(\) expects send_email\(\), which cannot be a call "):
        recorder.assert_not_scheduled(send_email, call())
    # Nothing to check against when the task was not scheduled at all.
    recorder.assert_not_scheduled(audit, "a", "b", "c", "d")


def take(*items: object, **fields: object) -> None:
    pass


def test_variadic_arguments_are_compared_one_by_one() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(take, 1, 2, colour="red")

    assert recorder.assert_scheduled(take, 1, 2, colour="red").seq == 1
    assert recorder.assert_scheduled(take, 1, partial=True).seq == 1
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(take, 1, 3, size=4)
    assert str(excinfo.value).startswith(
        "Expected take(1, 3, size=4) to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #1 immediate take(1, 2, colour='red')\n"
        "    items[1]: expected 3, got 2\n"
        "    unexpected colour: 'red'\n"
        "    missing size: expected 4\n"
        "\n"
    )


def test_a_task_whose_signature_is_unknown_is_compared_by_position() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(max, 1, 2, key=abs)  # a builtin without a signature: recorded unchecked

    assert recorder.assert_scheduled(max, 1, 2, key=abs).seq == 1
    assert recorder.assert_scheduled(max, 1, partial=True).seq == 1
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled(max, 3, 2, 1, default=0)
    assert str(excinfo.value).startswith(
        "Expected max(3, 2, 1, default=0) to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #1 immediate max(1, 2, key=<built-in function abs>)\n"
        "    argument 1: expected 3, got 1\n"
        "    missing argument 3: expected 1\n"
        "    missing default: expected 0\n"
        "    unexpected key: <built-in function abs>\n"
        "\n"
    )
    with pytest.raises(AssertionError, match=r"^Expected max\(1\) to be scheduled, but no task matches\.\n"):
        recorder.assert_scheduled(max, 1)
    with pytest.raises(AssertionError, match=r"\n    unexpected argument 2: 2\n"):
        recorder.assert_scheduled(max, 1, key=abs)
    with pytest.raises(
        AssertionError, match=r"\n    key: expected <built-in function len>, got <built-in function abs>\n"
    ):
        recorder.assert_scheduled(max, 1, 2, key=len)


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
    assert str(excinfo.value) == failure(
        "Expected audit to be scheduled once, but 2 were:\n"
        "- #2 after_route audit('alice')\n"
        "- #3 immediate audit('bob', 2)"
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled_once(charge, 1)
    assert str(excinfo.value) == failure("Expected charge(1) to be scheduled once, but none was.")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled_once(audit, "carol", phase="after_route")
    assert str(excinfo.value) == failure(
        "Expected audit('carol') in phase after_route to be scheduled once, but none was.\n"
        "Closest recorded tasks:\n"
        "- #2 after_route audit('alice')\n"
        "    user: expected 'carol', got 'alice'\n"
        "- #3 immediate audit('bob', 2)\n"
        "    phase: expected after_route, got immediate\n"
        "    user: expected 'carol', got 'bob'\n"
        "    level: expected 1, got 2"
    )


def test_assert_not_scheduled(recorder: RecordingScheduler) -> None:
    recorder.assert_not_scheduled(charge)
    recorder.assert_not_scheduled(send_email, phase="immediate")
    recorder.assert_not_scheduled("explode")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_not_scheduled(audit, phase="after_route")
    assert str(excinfo.value) == failure(
        "Expected audit in phase after_route not to be scheduled, but it was:\n- #2 after_route audit('alice')"
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_not_scheduled(audit)
    assert str(excinfo.value) == failure(
        "Expected audit not to be scheduled, but it was:\n"
        "- #2 after_route audit('alice')\n"
        "- #3 immediate audit('bob', 2)"
    )


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
    with pytest.raises(ValueError, match=r"^Unknown phase 1; "):
        recorder.filter(phase=1)  # type: ignore[arg-type]


def test_phase_given_as_a_str_subclass(recorder: RecordingScheduler) -> None:
    # Not a plain str: looked up as the Enum looks it up, to the same phase.
    class Name(str):
        pass

    assert recorder.filter(audit, phase=Name("immediate")) == recorder.filter(audit, phase=Phase.IMMEDIATE)


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
        "    user: expected 'carol', got 'alice'\n"
        "- #3 immediate audit('bob', 2)\n"
        "    user: expected 'carol', got 'bob'\n"
        "    level: expected 1, got 2"
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


def test_a_request_view_narrows_queries_and_lists_its_records_apart(recorder: RecordingScheduler) -> None:
    view = recorder.for_request("POST", "/signup")

    assert view.records == []
    assert view.filter(audit) == []
    view.assert_not_scheduled(audit)
    with pytest.raises(AssertionError) as excinfo:
        view.assert_scheduled(audit)
    assert str(excinfo.value) == (
        "Expected audit to be scheduled, but no task matches.\n\n"
        "Recorded tasks (this view: POST /signup):\n(no tasks were scheduled)\n\n"
        f"Other recorded tasks:\n{TIMELINE}"
    )
    with pytest.raises(AssertionError) as excinfo:
        recorder.for_request("signup").assert_succeeded(send_email)
    assert str(excinfo.value) == (
        "Expected send_email to have succeeded, but no task matches.\n\n"
        "Recorded tasks (this view: route 'signup'):\n(no tasks were scheduled)\n\n"
        f"Other recorded tasks:\n{TIMELINE}"
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
    assert str(excinfo.value) == failure(
        "Expected audit to be scheduled once, but 2 were:\n"
        "- #2 after_route audit('alice')\n"
        "- #3 immediate audit('bob', 2)"
    )
    with pytest.raises(AssertionError) as excinfo:
        fastapi_tasks_testing.assert_not_scheduled(recorder, audit, phase="immediate")
    assert str(excinfo.value) == failure(
        "Expected audit in phase immediate not to be scheduled, but it was:\n- #3 immediate audit('bob', 2)"
    )
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


# --- options, calls and their mistakes -----------------------------------------------------------------


def test_times_must_be_a_positive_whole_number(recorder: RecordingScheduler) -> None:
    with pytest.raises(
        ValueError, match=r"^times must be 1 or more, not 0; to expect none, use assert_not_scheduled\(\)\.$"
    ):
        recorder.assert_scheduled(audit, times=0)
    with pytest.raises(TypeError, match=r"^times must be a whole number, not '2'$"):
        recorder.assert_scheduled(audit, times="2")  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match=r"^Expected charge to be scheduled 2 times, but none was\.\n"):
        recorder.assert_scheduled(charge, times=2)
    with pytest.raises(AssertionError, match=r"^Expected audit to be scheduled 3 times, but 2 were:\n- #2 "):
        recorder.assert_scheduled(audit, times=3)
    assert recorder.assert_scheduled(send_email, times=1).seq == 1


def test_options_are_checked(recorder: RecordingScheduler) -> None:
    with pytest.raises(TypeError, match=r"^partial must be True or False, not 'yes'$"):
        recorder.assert_scheduled(audit, "bob", partial="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^where must be a function taking a record, not 'x'$"):
        recorder.filter(audit, where="x")  # type: ignore[arg-type]


def test_the_expected_call_is_one_call_of_the_task(recorder: RecordingScheduler) -> None:
    assert recorder.assert_scheduled(audit, call("bob", 2)).seq == 3
    assert recorder.assert_scheduled(audit, call(user="alice")).seq == 2
    assert recorder.filter(audit, call("bob"), partial=True) == [recorder.records[2]]
    with pytest.raises(
        TypeError,
        match=r"^assert_scheduled\(\) got the expected call call\('bob'\) and the keyword arguments 'level' "
        r"besides it: put every argument of the task inside call\(\.\.\.\)\.$",
    ):
        recorder.assert_scheduled(audit, call("bob"), level=2)
    with pytest.raises(
        TypeError,
        match=r"^assert_scheduled\(\) takes the expected arguments as call\(\.\.\.\), not call\.audit\('bob'\): "
        r"the task is its first argument\.$",
    ):
        recorder.assert_scheduled(audit, call.audit("bob"))
    with pytest.raises(
        TypeError,
        match=r"^assert_scheduled\(\) takes the expected arguments either as one call\(\.\.\.\) or written out, "
        r"not both\.$",
    ):
        recorder.assert_scheduled(audit, call("bob"), 2)


def report(level: int, **fields: object) -> None:
    pass


def test_an_option_a_method_lacks_is_not_taken_for_an_argument() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(report, 1, times=2)
    recorder.run_pending_sync()

    # assert_succeeded() has no times= option: written out, times=2 would silently become a task argument.
    with pytest.raises(
        TypeError,
        match=r"^assert_succeeded\(\) has no times= option, and 'times' is no parameter of the task\. "
        r"To expect a task argument named 'times', pass call\(\.\.\., times=\.\.\.\)\.$",
    ):
        recorder.assert_succeeded(report, 1, times=2)
    assert recorder.assert_succeeded(report, call(1, times=2)).seq == 1


def audit_status(event: str, status: str) -> None:
    pass


def test_a_parameter_named_like_an_option_the_method_lacks_is_an_argument() -> None:
    # assert_succeeded() has no status= option: a parameter of the task named so is a task argument.
    recorder = RecordingScheduler()
    recorder.schedule(audit_status, "x", status="ok")
    recorder.run_pending_sync()

    assert recorder.assert_succeeded(audit_status, "x", status="ok").seq == 1
    with pytest.raises(TypeError, match=r"^filter\(\) got status='ok', which is ambiguous: audit_status has a "):
        recorder.filter(audit_status, "x", status="ok")


def keep(value: object) -> None:
    pass


class Touchy:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("cannot compare")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "Touchy()"


def test_a_value_that_cannot_be_compared_does_not_match() -> None:
    recorder = RecordingScheduler()
    touchy = Touchy()
    recorder.schedule(keep, touchy)

    assert recorder.assert_scheduled(keep, touchy).seq == 1  # the same object
    with pytest.raises(AssertionError, match=r"\n    value: expected Touchy\(\), got Touchy\(\)\n"):
        recorder.assert_scheduled(keep, Touchy())


def test_recorded_arguments_that_do_not_fit_are_compared_by_position() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(audit, "a", "b", "c")  # type: ignore[call-overload]  # it will fail, as in production

    assert recorder.assert_scheduled(audit, "a", "b", "c").seq == 1
    with pytest.raises(AssertionError, match=r"\n    unexpected argument 3: 'c'\n"):
        recorder.assert_scheduled(audit, "a", "b")


def test_a_name_shared_by_two_functions_compares_each_with_its_own_signature() -> None:
    recorder = RecordingScheduler()
    recorder.task(name="job").schedule(audit, "a")
    recorder.task(name="job").schedule(charge, 5)

    assert recorder.assert_scheduled("job", amount=5).seq == 2
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_scheduled("job", amount=6)
    assert str(excinfo.value).startswith(
        "Expected 'job'(amount=6) to be scheduled, but no task matches.\n"
        "Closest recorded tasks:\n"
        "- #1 immediate job('a')\n"
        "    the expected arguments do not fit audit(user, level=1): missing a required argument: 'user'\n"
        "- #2 immediate job(5)\n"
        "    amount: expected 6, got 5\n"
    )


# --- assert_timeline ----------------------------------------------------------------------------------


def test_assert_timeline_failures(recorder: RecordingScheduler) -> None:
    head = "Expected exactly these 3 tasks, in this order:\n1. send_email\n2. audit('alice')\n3. charge\n"
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_timeline(send_email, (audit, call("alice")), charge)
    assert str(excinfo.value) == failure(head + "but task 3 is:\n- #3 immediate audit('bob', 2)\n    it is not charge")

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_timeline(send_email, audit)
    assert str(excinfo.value) == failure(
        "Expected exactly these 2 tasks, in this order:\n1. send_email\n2. audit\n"
        "but 2 more tasks were recorded:\n- #3 immediate audit('bob', 2)\n- #4 after_response kaboom('bad')"
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_timeline(send_email, audit, audit, "kaboom", charge, charge)
    assert str(excinfo.value) == failure(
        "Expected exactly these 6 tasks, in this order:\n"
        "1. send_email\n2. audit\n3. audit\n4. 'kaboom'\n5. charge\n6. charge\n"
        "but only 4 were recorded; missing:\n5. charge\n6. charge"
    )

    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_timeline(audit, (audit, call("carol")), charge, any_order=True)
    assert str(excinfo.value) == failure(
        "Expected exactly these 3 tasks, in any order:\n1. audit\n2. audit('carol')\n3. charge\n"
        "but:\n"
        "- no recorded task is 2. audit('carol')\n"
        "- no recorded task is 3. charge\n"
        "- #1 after_response send_email('a@b.c', subject='Hi') was not expected\n"
        "- #3 immediate audit('bob', 2) was not expected\n"
        "- #4 after_response kaboom('bad') was not expected"
    )


def test_assert_timeline_in_any_order_pairs_each_record_once(recorder: RecordingScheduler) -> None:
    # `audit` alone would take #2, which `audit('alice')` needs: it moves on to #3.
    records = recorder.assert_timeline(audit, (audit, call("alice")), "kaboom", send_email, any_order=True)
    assert [record.seq for record in records] == [3, 2, 4, 1]
    # Two expectations of the one audit('alice'): the second finds no record of its own.
    with pytest.raises(AssertionError, match=r"\nbut:\n- no recorded task is 2\. audit\('alice'\)\n"):
        recorder.assert_timeline(
            (audit, call("alice")), (audit, call("alice")), audit, "kaboom", send_email, any_order=True
        )
    with pytest.raises(TypeError, match=r"^assert_timeline\(\) needs the tasks to expect; to expect none, "):
        recorder.assert_timeline()
    with pytest.raises(
        TypeError, match=r"^assert_timeline\(\) takes tasks and \(task, call\(\.\.\.\)\) pairs, not \(<function "
    ):
        recorder.assert_timeline((audit, call("x"), 1))  # type: ignore[arg-type]


# --- nothing, order, views, the base class --------------------------------------------------------------


def test_assert_nothing_scheduled(recorder: RecordingScheduler) -> None:
    RecordingScheduler().assert_nothing_scheduled()
    recorder.for_request("GET", "/").assert_nothing_scheduled()
    with pytest.raises(AssertionError) as excinfo:
        recorder.assert_nothing_scheduled(phase="after_route")
    assert str(excinfo.value) == failure(
        "Expected no task to be scheduled in phase after_route, but 1 was:\n- #2 after_route audit('alice')"
    )


def test_assert_order_takes_a_task_named_twice_by_its_second_run() -> None:
    recorder = RecordingScheduler()
    for event in ("a", "b"):
        recorder.schedule(audit, event)
        recorder.schedule(charge, 1)
    recorder.run_pending_sync()

    recorder.assert_order(audit, charge, audit, charge)
    with pytest.raises(AssertionError, match=r"^Expected audit to have run 3 times, but it ran 2 times\.\n"):
        recorder.assert_order(audit, audit, audit)


class Listed(fastapi_tasks_testing.RecordQueries):
    """Queries over a plain list, with the base class's defaults."""

    def __init__(self, records: list[TaskRecord], label: str) -> None:
        self._listed = records
        self._label = label

    @property
    def records(self) -> list[TaskRecord]:
        return self._listed

    def _scope_label(self) -> str:
        return self._label


def test_a_view_of_every_record_has_no_other_records(recorder: RecordingScheduler) -> None:
    with pytest.raises(AssertionError) as excinfo:
        Listed(recorder.records, " (this view: all)").assert_scheduled(charge)
    assert str(excinfo.value) == failure("Expected charge to be scheduled, but no task matches.", " (this view: all)")


def test_the_new_free_functions_do_what_the_methods_do(recorder: RecordingScheduler) -> None:
    fastapi_tasks_testing.assert_scheduled(recorder, audit, "bob", partial=True, times=1)
    fastapi_tasks_testing.assert_scheduled_once(recorder, audit, where=lambda record: record.args == ("alice",))
    fastapi_tasks_testing.assert_not_scheduled(recorder, audit, "carol", partial=True)
    fastapi_tasks_testing.assert_nothing_dispatched(recorder)
    fastapi_tasks_testing.assert_nothing_scheduled(RecordingScheduler())
    assert [r.seq for r in fastapi_tasks_testing.assert_timeline(recorder, send_email, audit, audit, "kaboom")] == [
        1,
        2,
        3,
        4,
    ]
    with pytest.raises(AssertionError, match=r"^Expected no task to be scheduled, but 4 were:\n"):
        fastapi_tasks_testing.assert_nothing_scheduled(recorder)
    with pytest.raises(AssertionError, match=r"^Expected charge to be dispatched once, but no dispatch matches\.\n"):
        fastapi_tasks_testing.assert_dispatched_once(recorder, charge)
    fastapi_tasks_testing.assert_not_dispatched(recorder, charge, 1, partial=True)
