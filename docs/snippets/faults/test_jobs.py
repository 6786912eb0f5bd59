import pytest
from fastapi_tasks_testing import RecordingScheduler

import jobs


@pytest.fixture
def recorder() -> RecordingScheduler:
    recorder = RecordingScheduler()
    # The jobs dispatch through the recorder, as on a worker through its own.
    jobs.broker.dependency_overrides[jobs.worker_tasks] = lambda: recorder
    jobs.DELIVERED.clear()
    return recorder


# --8<-- [start:dispatch]
def test_a_refused_dispatch_then_a_good_one(
    recorder: RecordingScheduler,
) -> None:
    # A refusal that no retry fixes; an unreachable broker (ConnectionError)
    # would be retried until the dispatch deadline, as in production.
    recorder.fail_dispatch(jobs.pack, ValueError("message too large"), times=1)

    recorder.enqueue(jobs.pack, 1)
    recorder.enqueue(jobs.pack, 2)
    recorder.run_pending_sync()

    assert [d.status for d in recorder.dispatches] == ["failed", "dispatched"]


# --8<-- [end:dispatch]


# --8<-- [start:drain]
def test_drain_the_jobs_and_the_jobs_they_dispatch(
    recorder: RecordingScheduler,
) -> None:
    for order_id in (1, 13, 2):
        recorder.enqueue(jobs.pack, order_id)
    recorder.run_pending_sync()  # sends the three dispatches

    # Runs the three jobs, sends what they dispatch, runs those too; a job
    # that raises does not stop the others.
    ran = recorder.run_dispatched_sync(follow=True, collect_errors=True)

    assert len(ran) == 6
    assert [str(r.job_exception) for r in ran.failed] == [
        "no address for order 13"
    ]
    assert jobs.DELIVERED == [1, 2]
    print(ran.summary())


# --8<-- [end:drain]
