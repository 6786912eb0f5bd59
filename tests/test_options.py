"""Options checked where they are given, and what the adapters and their helpers say about themselves."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from taskiq import InMemoryBroker

from fastapi_tasks import add_tasks
from fastapi_tasks.dispatchers._retry import Gate
from fastapi_tasks.dispatchers.celery import CeleryDispatcher
from fastapi_tasks.dispatchers.taskiq import TaskiqDispatcher
from fastapi_tasks_testing import RecordingScheduler

broker = InMemoryBroker()


@broker.task(task_name="options.ship")
async def ship(order: int) -> None:
    pass  # pragma: no cover - never run


def pack(order: int) -> None:
    pass  # pragma: no cover - never run


# What find_job reads of a Celery task: its app's registry. A real Celery app would be finalized by the
# lookup, which registers every shared task of the process, the other tests' too (and warns of duplicates).
pack.app = SimpleNamespace(tasks={"options.pack": pack})  # type: ignore[attr-defined]


def test_log_exception_messages_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match=r"^log_exception_messages must be True or False, not 'no'$"):
        add_tasks(FastAPI(), log_exception_messages="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, "30", None])
def test_the_recorders_wait_timeout_must_be_a_number(bad: object) -> None:
    with pytest.raises(TypeError, match=rf"^wait_timeout must be a number of seconds, not {bad!r}$"):
        RecordingScheduler(wait_timeout=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1.5, float("inf"), float("nan")])
def test_the_recorders_wait_timeout_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"^wait_timeout must be a positive, finite number of seconds, not {bad!r}$"):
        RecordingScheduler(wait_timeout=bad)


def test_a_gate_says_whether_its_broker_is_down_and_who_waits() -> None:
    gate = Gate()
    assert repr(gate) == "<Gate up waiting=0 probing=False>"
    gate.down, gate.waiting, gate.probing = True, 3, True
    assert repr(gate) == "<Gate down waiting=3 probing=True>"


def test_the_taskiq_adapter_finds_a_job_by_name_on_its_broker() -> None:
    dispatcher = TaskiqDispatcher()
    assert dispatcher.find_job("options.ship", ship) is ship
    assert dispatcher.find_job("options.gone", ship) is None


def test_the_celery_adapter_finds_a_job_by_name_in_its_app() -> None:
    dispatcher = CeleryDispatcher()
    assert dispatcher.find_job("options.pack", pack) is pack
    assert dispatcher.find_job("options.gone", pack) is None
