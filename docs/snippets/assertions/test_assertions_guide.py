from unittest.mock import ANY, call

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_tasks_testing import RecordingScheduler, assert_scheduled

import main


@pytest.fixture
def app() -> FastAPI:
    return main.app


# --8<-- [start:scheduled]
def test_publishing_notifies_each_follower(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    post_id = TestClient(app).post("/posts/ada").json()["id"]

    # By function or by task name. Arguments compare with ==, so
    # unittest.mock.ANY matches anything.
    tasks_recorder.assert_scheduled_once("index", post_id, phase="after_route")
    tasks_recorder.assert_scheduled(
        main.send_push, "grace", text="ada posted", trace_id=ANY
    )
    tasks_recorder.assert_scheduled(
        main.send_push, "linus", text=ANY, trace_id=ANY, phase="after_response"
    )
    tasks_recorder.assert_not_scheduled(main.send_push, phase="immediate")
    tasks_recorder.assert_order("index", main.send_push)


# --8<-- [end:scheduled]


# --8<-- [start:records]
def test_the_records(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    client = TestClient(app)
    client.post("/posts/ada")
    client.post("/posts/grace")

    pushes = tasks_recorder.filter(
        main.send_push, phase="after_response", status="succeeded"
    )
    assert [push.args for push in pushes] == [("grace",), ("linus",)]
    assert pushes[0].kwargs["trace_id"] == pushes[1].kwargs["trace_id"]
    assert pushes[0].request is not None
    assert str(pushes[0].request) == "POST /posts/ada"
    assert pushes[0].started_at is not None

    # One request's tasks only: the same queries and assertions, narrowed.
    grace = tasks_recorder.for_request("POST", "/posts/grace")
    grace.assert_scheduled_once("index")
    grace.assert_not_scheduled(main.send_push)


# --8<-- [end:records]


# --8<-- [start:standalone]
def test_notify_followers_without_an_app() -> None:
    scheduler = RecordingScheduler()

    main.notify_followers(scheduler, "ada")

    record = assert_scheduled(
        scheduler, main.send_push, "grace", text="ada posted", trace_id=ANY
    )
    # Outside a request, tasks wait for run_pending().
    assert record.status == "pending"
    scheduler.run_pending_sync()
    assert record.status == "succeeded"


# --8<-- [end:standalone]


# --8<-- [start:signature]
def test_arguments_are_bound_to_the_signature(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/posts/ada")

    # Scheduled as send_push("grace", text=..., trace_id=...): the same call,
    # written with keywords, matches.
    tasks_recorder.assert_scheduled(
        main.send_push, user="grace", text="ada posted", trace_id=ANY
    )
    # Only the arguments given must match; or any predicate over the record.
    tasks_recorder.assert_scheduled(main.send_push, "linus", partial=True)
    tasks_recorder.assert_not_scheduled(main.send_push, "alan", partial=True)
    tasks_recorder.assert_scheduled(
        main.send_push, where=lambda record: record.args == ("grace",)
    )
    pushes = tasks_recorder.filter(
        main.send_push, text="ada posted", partial=True
    )
    assert len(pushes) == 2


# --8<-- [end:signature]


# --8<-- [start:call]
def test_a_parameter_named_like_an_option(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/posts/ada")

    # track() has its own `phase` parameter: pass its arguments as one call,
    # and the assertion's options beside it.
    tasks_recorder.assert_scheduled(
        main.track, call("post published", phase="beta"), phase="after_route"
    )
    # Written out, phase= would be ambiguous: it is refused.
    with pytest.raises(TypeError, match="ambiguous"):
        tasks_recorder.assert_scheduled(
            main.track, "post published", phase="beta"
        )


# --8<-- [end:call]


# --8<-- [start:counts]
def test_counts(app: FastAPI, tasks_recorder: RecordingScheduler) -> None:
    client = TestClient(app)
    client.post("/posts/ada")
    client.post("/posts/grace")

    tasks_recorder.assert_scheduled("index", times=2)
    tasks_recorder.assert_scheduled(main.send_push, times=2)
    tasks_recorder.assert_scheduled_once(main.send_push, "linus", partial=True)


# --8<-- [end:counts]


# --8<-- [start:nothing]
def test_nothing_happens_for_a_wrong_method(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    assert TestClient(app).get("/posts/ada").status_code == 405

    tasks_recorder.assert_nothing_scheduled()
    tasks_recorder.assert_nothing_dispatched()


@pytest.mark.tasks_recorder(strict=True)
def test_every_task_is_accounted_for(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    TestClient(app).post("/posts/ada")

    # Strict mode: a task no assertion matched fails the test at teardown.
    tasks_recorder.ignore(main.track)  # noise this test does not care about
    tasks_recorder.assert_scheduled_once("index")
    tasks_recorder.assert_scheduled(main.send_push, times=2)


# --8<-- [end:nothing]


# --8<-- [start:capture]
def test_only_what_the_second_request_did(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    client = TestClient(app)
    client.post("/posts/ada")

    with tasks_recorder.capture() as new:
        client.post("/posts/grace")

    # Every query and assertion, on the records added inside the block.
    new.assert_scheduled_once("index")
    new.assert_not_scheduled(main.send_push)
    assert len(new.records) == 2


# --8<-- [end:capture]


# --8<-- [start:sequence]
def test_the_whole_workflow(
    app: FastAPI, tasks_recorder: RecordingScheduler
) -> None:
    post_id = TestClient(app).post("/posts/ada").json()["id"]

    # Exactly these tasks, in scheduling order, and no other.
    tasks_recorder.assert_timeline(
        ("index", call(post_id)),
        main.track,
        (main.send_push, call("grace", text="ada posted", trace_id=ANY)),
        (main.send_push, call("linus", text="ada posted", trace_id=ANY)),
    )
    # Or in any order.
    tasks_recorder.assert_timeline(
        main.send_push, main.send_push, main.track, "index", any_order=True
    )


# --8<-- [end:sequence]
