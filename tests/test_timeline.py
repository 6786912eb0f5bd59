"""The text timeline: one line per task, stable enough for snapshot tests."""

from __future__ import annotations

import datetime as dt

from fastapi import FastAPI
from fastapi.testclient import TestClient
from freezegun import freeze_time

from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks_testing import RecordingScheduler, render_timeline


def send_email(address: str, *, subject: str = "Welcome") -> None:
    pass


def audit(user: str) -> None:
    pass


def lookup() -> None:
    raise KeyError


def take(*args: object, **kwargs: object) -> None:
    pass


def make_app() -> FastAPI:
    app = FastAPI()
    add_tasks(app)

    @app.post("/signup")
    async def signup(email: str, tasks: Tasks) -> None:
        tasks.schedule(audit, email)
        tasks.after_route.task(name="welcome").schedule(send_email, email, subject="Hi")
        tasks.after_response.schedule(lookup)

    @app.delete("/users/{user_id}")
    async def delete_user(user_id: int, tasks: Tasks) -> None:
        tasks.after_response.schedule(audit, f"deleted {user_id}")
        raise ValueError("cannot delete")

    return app


SIGNUP_TIMELINE = """\
#  phase           task                            status             request
1  immediate       audit('a@b.c')                  succeeded          POST /signup
2  after_route     welcome('a@b.c', subject='Hi')  succeeded          POST /signup
3  after_response  lookup()                        failed (KeyError)  POST /signup
4  after_response  audit('deleted 7')              discarded          DELETE /users/7
5  immediate       audit('x@y.z')                  succeeded          -
6  after_route     welcome('x@y.z', subject='Hi')  cancelled          -"""


def record_everything(recorder: RecordingScheduler) -> None:
    app = make_app()
    recorder.install(app)
    client = TestClient(app, raise_server_exceptions=False)
    client.post("/signup", params={"email": "a@b.c"})
    client.delete("/users/7")
    recorder.uninstall()
    # Outside a request: no request column.
    recorder.task(shield=True).schedule(audit, "x@y.z")
    recorder.after_route.task(name="welcome").schedule(send_email, "x@y.z", subject="Hi")
    recorder.shutdown_sync()


def test_timeline_text() -> None:
    recorder = RecordingScheduler(expect_failures=True)
    record_everything(recorder)

    assert recorder.timeline() == SIGNUP_TIMELINE
    assert render_timeline(recorder.records) == SIGNUP_TIMELINE
    assert [(str(request), request.route) for request in recorder.requests] == [
        ("POST /signup", "signup"),
        ("DELETE /users/7", "delete_user"),
    ]


def test_timeline_is_stable_across_runs_and_clocks() -> None:
    first, second = RecordingScheduler(), RecordingScheduler()
    record_everything(first)
    with freeze_time(dt.datetime(2001, 2, 3, tzinfo=dt.timezone.utc)):
        record_everything(second)

    assert first.timeline() == second.timeline() == SIGNUP_TIMELINE


def test_timeline_of_a_request_view() -> None:
    recorder = RecordingScheduler()
    record_everything(recorder)

    assert recorder.for_request("DELETE", "/users/7").timeline() == (
        "#  phase           task                status     request\n"
        "4  after_response  audit('deleted 7')  discarded  DELETE /users/7"
    )
    assert recorder.for_request("signup").timeline() == (
        "#  phase           task                            status             request\n"
        "1  immediate       audit('a@b.c')                  succeeded          POST /signup\n"
        "2  after_route     welcome('a@b.c', subject='Hi')  succeeded          POST /signup\n"
        "3  after_response  lookup()                        failed (KeyError)  POST /signup"
    )


def test_timeline_without_tasks() -> None:
    recorder = RecordingScheduler()

    assert recorder.timeline() == "(no tasks were scheduled)"
    assert render_timeline([]) == "(no tasks were scheduled)"
    assert recorder.for_request("GET", "/").timeline() == "(no tasks were scheduled)"


def test_long_values_are_shortened() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(take, "x" * 60, list(range(10)), {"a": 1}, token="s" * 50)

    call = f"take('{'x' * 37}...', [0, 1, 2, 3, 4, 5, ...], {{'a': 1}}, token='{'s' * 37}...')"
    assert recorder.timeline() == (
        f"#  phase      {'task'.ljust(len(call))}  status   request\n1  immediate  {call}  pending  -"
    )


class Opaque:
    def __repr__(self) -> str:
        return "Opaque(colour='red', size='large', weight='heavy', price='high')"


def test_long_values_are_cut_between_words() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(take, "the quick brown fox jumps over the lazy dog, twice", Opaque())

    assert recorder.timeline().splitlines()[1] == (
        "1  immediate  take('the quick brown fox jumps over the...', Opaque(colour='red', size='large...)  pending  -"
    )


def test_reprs_show_no_address() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(take, audit, object())

    # An address would make the text change from run to run.
    assert recorder.timeline().splitlines()[1] == ("1  immediate  take(<function audit>, <object object>)  pending  -")


def test_the_request_scheduler_shows_as_the_public_class() -> None:
    app = FastAPI()
    add_tasks(app)

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.after_response.schedule(take, tasks)

    recorder = RecordingScheduler(mode="record")
    recorder.install(app)
    TestClient(app).post("/")

    # The recorder's own helper class stays out of sight: the endpoint got a TasksScheduler.
    assert "take(<TasksScheduler after_route=0...)" in recorder.timeline()


class Page:
    def __repr__(self) -> str:
        return "<Page\n  title='Home'\n>"


def fail_at_length() -> None:
    raise ValueError("1 validation error for Order\nquantity\n  Input should be > 0 " + "x" * 200)


def test_every_record_stays_on_one_line_of_the_table() -> None:
    recorder = RecordingScheduler(expect_failures=True)
    recorder.schedule(take, Page(), "two\nlines", sep="\t\x00")
    recorder.schedule(fail_at_length)
    recorder.run_pending_sync()

    call = r"take(<Page\n  title='Home'\n>, 'two\nlines', sep='\t\x00')"
    status = r"failed (ValueError: 1 validation error for Order\nquantity\n  Input should be > 0...)"
    assert recorder.timeline() == (
        f"#  phase      {'task'.ljust(len(call))}  {'status'.ljust(len(status))}  request\n"
        f"1  immediate  {call}  {'succeeded'.ljust(len(status))}  -\n"
        f"2  immediate  {'fail_at_length()'.ljust(len(call))}  {status}  -"
    )


def test_a_subset_of_records_keeps_their_numbers() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(audit, "a")
    recorder.after_route.schedule(audit, "b")

    assert render_timeline(recorder.records[1:]) == (
        "#  phase        task        status   request\n2  after_route  audit('b')  pending  -"
    )


def hinted_failure() -> None:
    raise RuntimeError(
        "The payment provider refused the charge of order 7 because the card on file has expired. "
        "Ask the customer for another card."
    )


def test_an_exception_is_shortened_before_its_fix_hint() -> None:
    recorder = RecordingScheduler(expect_failures=True)
    recorder.schedule(hinted_failure)
    recorder.run_pending_sync()

    # The hint that says what to do stays whole; the diagnosis before it is cut between two words.
    assert recorder.timeline().splitlines()[1] == (
        "1  immediate  hinted_failure()  failed (RuntimeError: The payment provider... "
        "Ask the customer for another card.)  -"
    )


class Broken:
    def __repr__(self) -> str:
        raise ValueError("no repr")


class _Hidden:
    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} at 0x7f00deadbeef>"


class Shown(_Hidden):
    pass


_Hidden.__module__ = "fastapi_tasks_testing._helpers"  # as if it were one of the toolkit's own


def test_reprs_that_fail_or_name_a_private_class_of_the_toolkit() -> None:
    recorder = RecordingScheduler()
    recorder.schedule(take, Broken(), _Hidden(), Shown())

    assert recorder.timeline().splitlines()[1] == ("1  immediate  take(<Broken object>, <object>, <Shown>)  pending  -")


def test_a_long_table_without_focus_shows_both_ends() -> None:
    recorder = RecordingScheduler()
    for user in "abcdefgh":
        recorder.schedule(audit, user)

    assert render_timeline(recorder.records, max_rows=4) == (
        "#  phase      task        status   request\n"
        "1  immediate  audit('a')  pending  -\n"
        "2  immediate  audit('b')  pending  -\n"
        "...\n"
        "7  immediate  audit('g')  pending  -\n"
        "8  immediate  audit('h')  pending  -\n"
        "(4 of 8 tasks not shown; timeline() shows them all)"
    )
    assert render_timeline(recorder.records, focus=[recorder.records[4]], max_rows=3).splitlines()[1:5] == [
        "...",
        "4  immediate  audit('d')  pending  -",
        "5  immediate  audit('e')  pending  -",
        "6  immediate  audit('f')  pending  -",
    ]
