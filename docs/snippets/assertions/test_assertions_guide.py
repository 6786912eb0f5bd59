from unittest.mock import ANY

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
