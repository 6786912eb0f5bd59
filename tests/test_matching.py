"""The signatures the assertions bind arguments to: computed once per function, kept no longer than it."""

from __future__ import annotations

import gc
import inspect
import weakref
from collections.abc import Callable
from typing import Any, cast

import pytest

from fastapi_tasks_testing import RecordingScheduler
from fastapi_tasks_testing._matching import did_you_mean
from fastapi_tasks_testing._signatures import callable_signature


def count_signatures(monkeypatch: pytest.MonkeyPatch, func: Callable[..., Any]) -> list[object]:
    """Patch `inspect.signature` to note every call about `func` (a bound method: about its function)."""
    calls: list[object] = []
    real = inspect.signature

    def counting(obj: Any, *args: Any, **kwargs: Any) -> inspect.Signature:
        if obj == func or getattr(obj, "__func__", None) is func:
            calls.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting)
    return calls


def test_a_signature_is_computed_once_for_every_assertion_on_its_function(monkeypatch: pytest.MonkeyPatch) -> None:
    def send(to: str, subject: str = "Hi") -> None:
        pass  # pragma: no cover - never run

    calls = count_signatures(monkeypatch, send)
    recorder = RecordingScheduler()
    recorder.schedule(send, "a@b.c")
    recorder.after_route.schedule(send, to="d@e.f")

    recorder.assert_scheduled_once(send, to="a@b.c", subject="Hi", phase="immediate")
    recorder.assert_scheduled_once(send, "d@e.f", phase="after_route")
    recorder.assert_not_scheduled(send, "x@y.z")

    assert calls == [send]


def test_the_methods_of_one_object_share_their_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    class Mailer:
        def send(self, to: str) -> None:
            pass  # pragma: no cover - never run

    mailer = Mailer()
    calls = count_signatures(monkeypatch, Mailer.send)
    recorder = RecordingScheduler()
    recorder.schedule(mailer.send, "a@b.c")  # a bound method is a new object at every lookup
    recorder.schedule(mailer.send, "d@e.f")

    recorder.assert_scheduled_once(mailer.send, to="a@b.c")
    recorder.assert_scheduled_once(mailer.send, to="d@e.f")

    assert len(calls) == 1


def test_the_cache_keeps_no_function_nor_object_alive() -> None:
    def send(to: str) -> None:
        pass  # pragma: no cover - never run

    class Mailer:
        def send(self, to: str) -> None:
            pass  # pragma: no cover - never run

    mailer = Mailer()
    recorder = RecordingScheduler()
    recorder.schedule(send, "a@b.c")
    recorder.schedule(mailer.send, "d@e.f")
    recorder.assert_scheduled_once(send, "a@b.c")
    recorder.assert_scheduled_once(mailer.send, "d@e.f")
    gone: list[weakref.ref[Any]] = [weakref.ref(send), weakref.ref(mailer), weakref.ref(Mailer)]

    del recorder, send, mailer, Mailer
    gc.collect()

    assert [ref() for ref in gone] == [None, None, None]


def test_a_function_changed_in_place_is_looked_at_again() -> None:
    def send(to: str, subject: str = "Hi") -> None:
        pass  # pragma: no cover - never run

    recorder = RecordingScheduler()
    recorder.schedule(send, "a@b.c")
    recorder.assert_scheduled_once(send, "a@b.c", "Hi")

    send.__defaults__ = ("Hello",)

    recorder.assert_scheduled_once(send, "a@b.c", "Hello")
    with pytest.raises(AssertionError, match=r"subject: expected 'Hi', got 'Hello' \(its default\)"):
        recorder.assert_scheduled_once(send, "a@b.c", "Hi")


class Unhashable:
    """A callable that can be neither hashed nor weakly referenced: its signature is not cached."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __call__(self, to: str) -> None:
        pass  # pragma: no cover - never run


def test_callables_that_cannot_be_cached_still_have_their_signature() -> None:
    assert str(callable_signature(Unhashable())) == "(to: 'str') -> 'None'"
    assert callable_signature(len) is not None
    assert callable_signature(dict.fromkeys) is not None
    assert callable_signature(type("NoSignature", (), {"__signature__": "not a signature"})) is None

    recorder = RecordingScheduler()
    task = Unhashable()
    recorder.schedule(task, "a@b.c")
    recorder.assert_scheduled_once(task, to="a@b.c")


def test_a_record_offers_its_arguments_bound_to_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    def send(to: str, subject: str = "Hi", *attachments: str, **headers: str) -> None:
        pass  # pragma: no cover - never run

    calls = count_signatures(monkeypatch, send)
    recorder = RecordingScheduler()
    recorder.schedule(send, "a@b.c", "Yo", "cv.pdf", cc="d@e.f")
    recorder.schedule(send, to="g@h.i")
    positional, by_name = recorder.records

    assert positional.arguments == {
        "to": "a@b.c",
        "subject": "Yo",
        "attachments": ("cv.pdf",),
        "headers": {"cc": "d@e.f"},
    }
    assert by_name.arguments == {"to": "g@h.i", "subject": "Hi", "attachments": (), "headers": {}}
    recorder.assert_scheduled(send, where=lambda record: record.arguments["to"] == "a@b.c", times=1)
    assert calls == [send]  # the assertions' cached signature serves the records too


def test_arguments_without_a_signature_hold_the_keyword_arguments_only() -> None:
    def send(to: str) -> None:
        pass  # pragma: no cover - never run

    class NoSignature:
        __signature__ = "not a signature"

        def __call__(self, *args: Any, **kwargs: Any) -> None:
            pass  # pragma: no cover - never run

    recorder = RecordingScheduler()
    recorder.schedule(NoSignature(), 1, key="value")
    # Arguments that do not fit the function: the task will fail with a TypeError when it runs.
    recorder.schedule(cast("Any", send), "a@b.c", extra=1)
    assert [record.arguments for record in recorder.records] == [{"key": "value"}, {"extra": 1}]


@pytest.mark.parametrize(
    ("asked", "known", "hint"),
    [
        ("send", ["signup.<locals>.send", "sender"], " Did you mean 'signup.<locals>.send'?"),
        ("send_emial", ["Mailer.send_email"], " Did you mean 'Mailer.send_email'?"),
        ("sned_push", ["send_push", "outer.<locals>.send_push"], " Did you mean 'send_push'?"),
        ("audit", ["charge"], ""),
    ],
)
def test_did_you_mean_knows_the_short_names_of_nested_functions_and_methods(
    asked: str, known: list[str], hint: str
) -> None:
    assert did_you_mean(asked, known) == hint


def test_an_assertion_by_short_name_suggests_the_nested_function() -> None:
    def signup() -> Callable[[str], None]:
        def send(to: str) -> None:
            pass  # pragma: no cover - never run

        return send

    recorder = RecordingScheduler()
    recorder.schedule(signup(), "a@b.c")
    with pytest.raises(
        AssertionError,
        match=r"^Expected 'send' to be scheduled, but no task matches\. Did you mean 'test_an_assertion_by_short_name_"
        r"suggests_the_nested_function\.<locals>\.signup\.<locals>\.send'\?\n\nRecorded tasks:\n",
    ):
        recorder.assert_scheduled("send")
